"""This process's node as a member of a cluster: it takes a channel's publisher only as the channel's
origin (cluster.origins), whether the offer came over the node's own HTTP or from a front door."""

from __future__ import annotations

import logging
from collections import Counter

from cluster import OriginLocks, RegistryError
from sfu.errors import AlreadyPublishing, NodeFull
from sfu.node import SfuNode
from signaling.media.local import LocalPlane
from signaling.media.plane import Ticket

log = logging.getLogger(__name__)


class ClaimingPlane(LocalPlane):
    def __init__(self, node: SfuNode, locks: OriginLocks, node_id: str) -> None:
        super().__init__(node)
        self._locks = locks
        self._node_id = node_id
        self._negotiating: Counter[str] = Counter()  # publishes in flight, by channel

    def held_here(self) -> set[str]:
        """The channels this node originates or is taking a publisher for right now."""
        return {name for name in self.node.rooms if self.node.originates(name)} | set(self._negotiating)

    async def publish(self, channel: str, offer: str, owner: str, client: str,
                      steal_from: str | None = None) -> Ticket:
        """`steal_from`: a node known to be dead (checked by the caller) whose claim may pass here."""
        await self.begin(channel, steal_from)
        try:
            return await super().publish(channel, offer, owner, client)
        finally:
            await self.settle(channel)

    async def begin(self, channel: str, steal_from: str | None = None) -> None:
        """Claim `channel` for a publisher about to be taken here (AlreadyPublishing when another node
        holds it); `settle` once that publisher is in its room, or gone."""
        try:
            origin = await self._locks.claim(channel, self._node_id, steal_from)
        except RegistryError:
            raise NodeFull("the cluster's origin claims cannot be reached; try again") from None
        if origin != self._node_id:
            raise AlreadyPublishing(f"{channel} is published on node {origin}")
        self._negotiating[channel] += 1

    async def settle(self, channel: str) -> None:
        self._negotiating[channel] -= 1
        if not self._negotiating[channel]:
            del self._negotiating[channel]
        if channel not in self.held_here():  # it failed, and nothing else of the channel is here
            await self.release(channel)

    async def release(self, channel: str) -> None:
        try:
            await self._locks.release(channel, self._node_id)
        except RegistryError as exc:  # it runs out by itself after ORIGIN_TTL
            log.warning("could not let go of channel %s: %s", channel, exc)
