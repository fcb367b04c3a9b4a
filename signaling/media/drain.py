"""A media node leaving a cluster hands its sessions over before it exits (SIGTERM).

1. Front doors stop sending it anything (its control topic closes, its record says draining): to them
   it is gone, so the claims of the streams it originates may pass to another node.
2. Its viewers' sessions end: their players reconnect through a front door and are placed on other
   nodes, which may relay the streams from this one meanwhile (it still serves other nodes' relays).
3. After `pause`, its publishers' connections close, their streams left in place: each broadcaster
   reconnects and goes live on another node (a node relaying the stream, whose viewers stay, when
   there is one), the relays elsewhere follow the stream there, and the stream here ends as taken over.
4. It waits until no stream is published here any more, `timeout` at most, and then shuts down.
"""

from __future__ import annotations

import asyncio
import logging

from sfu.node import SfuNode

log = logging.getLogger(__name__)

PAUSE = 2.0  # seconds between moving the viewers and moving the publishers
TIMEOUT = 6.0  # seconds the whole hand-over takes at most (inside the units' stop timeouts)


async def hand_over(node: SfuNode, pause: float = PAUSE, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    viewers = node.drain()
    if not viewers and not node.originated() and not node.relays_out():
        return
    log.info("handing over: %d viewers sent to other nodes", viewers)
    if node.originated():
        await asyncio.sleep(pause)
        log.info("handing over: %d publishers sent to other nodes", node.release_publishers())
    while node.originated() and loop.time() < deadline:
        await asyncio.sleep(0.1)
    left = node.originated()
    if left:
        log.warning("%d streams were not taken over by another node within %g s", left, timeout)
    else:
        log.info("handed over")
