"""Transports: how a draft's channel is delivered. The send activity picks one by ``draft.channel``.

Every module in this package that defines ``TRANSPORT`` (an object with a
``channel`` name and an async ``deliver(draft, ctx)``) is registered.
"""

import importlib
import pkgutil

from activities.transports.base import DeliveryContext, PermanentDeliveryError, TargetRefused, Transport


def build_transports() -> dict[str, Transport]:
    transports: dict[str, Transport] = {}
    for module_info in pkgutil.iter_modules(__path__):
        transport = getattr(importlib.import_module(f"{__name__}.{module_info.name}"), "TRANSPORT", None)
        if transport is not None:
            transports[transport.channel] = transport
    return transports


__all__ = ["DeliveryContext", "PermanentDeliveryError", "TargetRefused", "Transport", "build_transports"]
