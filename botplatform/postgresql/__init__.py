"""The PostgreSQL database backend: Django's, with its health check spaced out (``base``)."""
