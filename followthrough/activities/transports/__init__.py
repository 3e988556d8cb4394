"""Transports: how a draft's channel is delivered. The send activity picks one by ``draft.channel``.

Every module in this package that defines ``TRANSPORT`` (an object with a
``channel`` name and an async ``deliver(draft, ctx)``) is registered, but for one whose optional part
(followthrough/infra/extras.py) is not installed: that one is not imported, and its channel is unserved.
"""

import importlib
import pkgutil

from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError, TargetRefused, Transport
from followthrough.infra import extras  # The transports that need an optional part, by module (and channel) name.
NEEDS_PART = {"browser": "browser"}


def unserved_channels() -> dict[str, str]:
    """The channels this installation cannot deliver, each with why (the extra to install)."""
    return {channel: reason for channel, part in NEEDS_PART.items() if (reason := extras.missing(part))}


def build_transports() -> dict[str, Transport]:
    transports: dict[str, Transport] = {}
    unserved = unserved_channels()
    for module_info in pkgutil.iter_modules(__path__):
        if module_info.name in unserved:
            continue
        transport = getattr(importlib.import_module(f"{__name__}.{module_info.name}"), "TRANSPORT", None)
        if transport is not None:
            transports[transport.channel] = transport
    return transports


__all__ = ["DeliveryContext", "PermanentDeliveryError", "TargetRefused", "Transport", "build_transports",
           "unserved_channels"]
