"""Publish/subscribe and request/reply between Tallylight processes.

`open_bus(url)` picks the implementation by URL scheme: `memory://` (one process) or `redis://`.
Every implementation carries the same encoded bytes, so the in-memory bus catches wire bugs too.
"""

from bus.bus import Bus, BusError, BusTimeout, NoResponder, Subscription
from bus.factory import is_shared, open_bus
from bus.message import Message

__all__ = ["Bus", "BusError", "BusTimeout", "Message", "NoResponder", "Subscription", "is_shared", "open_bus"]
