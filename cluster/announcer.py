"""A node's heartbeat: its record into the registry every interval, withdrawn when it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cluster.registry import ANNOUNCE_INTERVAL, NODE_TTL, NodeIdTaken, NodeRecord, NodeRegistry
from lifecycle.tasks import stop

log = logging.getLogger(__name__)


class Announcer:
    """Owns the task that announces `describe()` every `interval` seconds.

    A registry that cannot be reached is logged once per outage, and announcing goes on: the node is
    back in the cluster with the registry's first answer. Nothing that goes wrong here stops the beat
    or the process's shutdown.
    """

    def __init__(self, registry: NodeRegistry, describe: Callable[[], NodeRecord],
                 interval: float = ANNOUNCE_INTERVAL) -> None:
        self._registry = registry
        self._describe = describe
        self._interval = interval
        self._timeout = max(interval, 1.0)  # one announcement's round trip at most
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one announcement at a time: a drain is never overtaken by an older beat
        self._last: NodeRecord | None = None
        self._draining = False
        self._failing = False
        self._poked = asyncio.Event()
        self._closed = False
        self.announced = asyncio.Event()  # set at the first announcement the registry took

    async def claim(self) -> None:
        """Make sure no other live process announces this node's id (waiting out the record of an earlier
        run of this node, which lives on for NODE_TTL after it died); NodeIdTaken if one does."""
        me = self._describe()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NODE_TTL + 0.5
        while True:
            try:
                async with asyncio.timeout(self._timeout):
                    live = await self._registry.live()
            except Exception as exc:  # noqa: BLE001 - no registry yet: the beat will announce when it is back
                log.warning("could not check the registry for node id %s: %s", me.id, exc)
                return
            if not any(n.record.id == me.id and n.record.instance != me.instance for n in live):
                return
            if loop.time() > deadline:
                raise NodeIdTaken(f"another live process announces itself as node {me.id!r}: give each node its "
                                  "own NODE_ID")
            await asyncio.sleep(0.25)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cluster-announce")

    def poke(self) -> None:
        """Announce now rather than at the next beat (a stream started or ended: placement wants to know)."""
        self._poked.set()

    async def announce_now(self) -> None:
        """Announce before returning: a session just placed here must be found here by the next request."""
        if self._closed:
            return
        try:
            record = self._describe()
        except Exception:
            log.exception("could not describe this node for the registry")
            return
        if self._draining:
            record = record.model_copy(update={"draining": True})
        async with self._lock:
            await self._send(record)

    async def drain(self) -> None:
        """Tell the cluster now that this node takes no new sessions."""
        self._draining = True
        if self._last is not None and not self._closed:
            async with self._lock:
                await self._send(self._last.model_copy(update={"draining": True}))

    async def close(self) -> None:
        """Stop announcing and take the node out of the registry."""
        self._closed = True
        # Bounded: a store client that swallows the cancellation (seen once in a rolling restart:
        # the shutdown waited in this step until SIGKILL) must not hold the process. The beat also
        # ends by itself at its next turn once closed.
        await stop([self._task], "the registry announcements", self._timeout + self._interval)
        self._task = None
        if self._last is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._registry.withdraw(self._last.id)
            except Exception as exc:  # noqa: BLE001 - it expires by itself within NODE_TTL
                log.warning("could not withdraw node %s from the registry: %s", self._last.id, exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._closed:
            try:
                record = self._describe()
            except Exception:  # a bug in describing the node must not silence it for good: log, beat on
                log.exception("could not describe this node for the registry")
            else:
                if self._draining:
                    record = record.model_copy(update={"draining": True})
                async with self._lock:
                    await self._send(record)
            next_at += self._interval
            now = loop.time()
            if next_at < now:  # a stalled loop: announce now, then keep the cadence from here
                next_at = now
            try:
                async with asyncio.timeout(next_at - now):
                    await self._poked.wait()
            except TimeoutError:
                pass
            self._poked.clear()

    async def _send(self, record: NodeRecord) -> None:
        self._last = record
        try:
            async with asyncio.timeout(self._timeout):
                await self._registry.announce(record)
        except Exception as exc:  # noqa: BLE001 - any failure of the store; the next beat tries again
            if not self._failing:
                log.warning("could not announce node %s to the registry: %s", record.id, exc or type(exc).__name__)
            self._failing = True
        else:
            if self._failing:
                log.info("node %s is announced to the registry again", record.id)
            self._failing = False
            self.announced.set()
