"""Old name of :mod:`botplatform.queueing`, kept only for botplatform/telegram/tasks.py
(being restructured in parallel); switch its import and delete this module."""

from botplatform.queueing import BrokerSafeTask as OutboxTask
from botplatform.queueing import InlineFallbackTask

__all__ = ["InlineFallbackTask", "OutboxTask"]
