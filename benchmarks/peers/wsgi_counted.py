"""The product's WSGI application with every SQL statement counted (``counted.py``):
what gunicorn serves in the peer benchmark's webhook phase."""

import counted

counted.install()

from botplatform.wsgi import application  # noqa: E402

__all__ = ["application"]
