"""Outgoing connections of the ``http_request`` step, pinned to the vetted address.

The SSRF guard resolves the host and refuses loopback and private addresses. If the
connection then resolved the name again, a DNS server answering differently the
second time (DNS rebinding) could still send the request to an internal address. So
the host is resolved once, here; the connection goes to exactly the addresses that
were checked, while the URL's host name stays in the Host header, in TLS SNI and in
the certificate check. Proxies from the environment are not used: the proxy would
resolve the name itself.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable, Sequence

from workflows.engine.steps.http_deadline import Deadline

# Link-local and cloud metadata addresses: refused even when the project allows private
# addresses. That switch is for services on the operator's own network; these hand out
# the host's cloud credentials (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6:
# fd00:ec2::254; Alibaba: 100.100.100.200; Oracle: 192.0.0.192).
ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.0.0/16",  # IPv4 link-local, incl. the metadata address of most clouds
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::/32",  # AWS's IPv6 service addresses (metadata at ::254, DNS, NTP)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud metadata (classic)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_always_blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A metadata or link-local address, also when wrapped in an IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and address_always_blocked(embedded):
            return True
    return any(
        address in network for network in ALWAYS_BLOCKED if network.version == address.version
    )


class BlockedAddress(Exception):
    """The host cannot be used: it does not resolve, or resolves to a private address."""


class UnresolvableHost(BlockedAddress):
    """DNS gave no answer (may be temporary: the caller may try again)."""


def addresses_resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The host's IP addresses, each checked unless the project allows private ones.

    One non-public address refuses the whole host: a name that also points inside
    the network is not one to call. Link-local and metadata addresses are refused
    whatever the project allows (:data:`ALWAYS_BLOCKED`).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"cannot resolve {host}: {exc}") from None
    addresses: list[str] = []
    for info in infos:
        ip = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 scope id for the check
        address = ipaddress.ip_address(ip)
        if address_always_blocked(address):
            raise BlockedAddress(
                f"{host} resolves to {address}, a link-local or cloud metadata address; "
                "HTTP requests there are never allowed"
            )
        if not allow_private and (not address.is_global or address.is_multicast):
            raise BlockedAddress(
                f"{host} resolves to {address}, a private or loopback address; the "
                "project does not allow HTTP requests to private addresses"
            )
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    if not addresses:
        raise UnresolvableHost(f"cannot resolve {host}: no address")
    return addresses


def _pinned_connect(
    addresses: Sequence[str], deadline: Deadline | None
) -> Callable[..., socket.socket]:
    """Stands in for ``socket.create_connection``: the host name is never resolved again.

    With a ``deadline``, connecting gets the time left and the connection is watched.
    """

    def connect(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        port = address[1]
        error: OSError | None = None
        for ip in addresses:
            try:
                if deadline is not None:
                    timeout = deadline.remaining()
                sock = socket.create_connection((ip, port), timeout, source_address)
            except OSError as exc:
                error = exc
                continue
            if deadline is not None:
                deadline.watch(sock)
            return sock
        raise error or OSError("no address to connect to")

    return connect


def _pinned(
    connection_class: type, addresses: Sequence[str], deadline: Deadline | None
) -> Callable[..., object]:
    def factory(host: str, **kwargs) -> http.client.HTTPConnection:
        # ``host`` stays the URL's name: Host header, SNI and certificate use it.
        connection = connection_class(host, **kwargs)
        connection._create_connection = _pinned_connect(addresses, deadline)
        return connection

    return factory


class PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, addresses: Sequence[str], deadline: Deadline | None = None) -> None:
        super().__init__()
        self.addresses = list(addresses)
        self.deadline = deadline

    def http_open(self, req):
        factory = _pinned(http.client.HTTPConnection, self.addresses, self.deadline)
        return self.do_open(factory, req)


class PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(
        self,
        addresses: Sequence[str],
        context: ssl.SSLContext | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        super().__init__(context=context)
        self.addresses = list(addresses)
        self.deadline = deadline

    def https_open(self, req):
        factory = _pinned(http.client.HTTPSConnection, self.addresses, self.deadline)
        return self.do_open(factory, req, context=self._context)


def pinned_opener(
    addresses: Sequence[str],
    *handlers: urllib.request.BaseHandler,
    ssl_context: ssl.SSLContext | None = None,
    deadline: Deadline | None = None,
) -> urllib.request.OpenerDirector:
    """A urllib opener whose every connection goes to ``addresses`` (no proxies),
    cut at ``deadline`` when one is given."""
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        PinnedHTTPHandler(addresses, deadline),
        PinnedHTTPSHandler(addresses, ssl_context, deadline),
        *handlers,
    )
