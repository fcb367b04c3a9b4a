"""Following topics for as long as a process runs: a subscription that comes back by itself.

A Redis restart (or a lost connection) ends a subscription; whoever follows stream or chat events
must subscribe again, with backoff, and go on. One handler call per message; a handler that raises
costs that message only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bus.bus import Bus, BusError, Subscription
from bus.message import Message
from lifecycle.tasks import cancelling

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5  # seconds before the first attempt to subscribe again
MAX_BACKOFF = 10.0


async def follow(bus: Bus, topics: tuple[str, ...], handle: Callable[[Message], None], what: str,
                 subscription: Subscription | None = None) -> None:
    """Hand every message on `topics` to `handle`, forever (cancel the task to stop). `subscription`:
    one taken already (so a caller can fail at start when the bus is down); `what` names the follower
    in the logs."""
    backoff = FIRST_BACKOFF
    while not cancelling():  # (a client that turned the cancellation into an error ends here too)
        if subscription is None:
            try:
                subscription = await bus.subscribe(*topics)
            except BusError as exc:
                log.warning("%s cannot subscribe (retrying in %.1f s): %s", what, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
        try:
            async with subscription:
                async for message in subscription:
                    try:
                        handle(message)
                    except Exception:  # one bad message must not cost the ones after it
                        log.exception("%s could not handle a %s message", what, message.topic)
                    backoff = FIRST_BACKOFF
        except Exception as exc:  # the bus went away, or sent something undecodable
            log.warning("%s lost the bus: %s", what, exc)
        subscription = None
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF)
