"""The POS/CRM REST API at /api/v1/ (Django REST framework + drf-spectacular).

A thin layer: authentication, scopes and rate limits (``auth``), idempotency
(``idempotency``), errors (``errors``), serializers and views. The business rules are
in the loyalty core's service modules (``users/purchases.py``, ``users/holds.py``,
``users/customers.py``, ...). See docs/api.md.
"""
