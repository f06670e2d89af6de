"""A total time limit for one try of an ``http_request`` step.

A socket timeout bounds each single read, not the request: a server that drips a
byte a second keeps a 2 s request alive until Celery kills the worker, and the
status line, the headers and the TLS handshake are read the same way. So at the
deadline a timer thread shuts the connection down. It shuts down a duplicate of the
socket's file descriptor, which reaches the very same connection (also once TLS
has wrapped it), so whatever call is blocked on it (connect aside: that one gets the
remaining time as its timeout) returns at once; the caller then sees ``expired``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DeadlineExceeded(TimeoutError):
    """The try used up its time before it could connect."""


class Deadline:
    """Shut down every watched connection ``seconds`` after creation (until closed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left (a timeout for connecting); raises once the time is up."""
        left = self.ends - time.monotonic()
        if self.expired or left <= 0:
            raise DeadlineExceeded(f"no connection within {self.seconds:g} s")
        return left

    def watch(self, sock: socket.socket) -> None:
        """Have ``sock``'s connection shut down at the deadline (at once if it has passed)."""
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
