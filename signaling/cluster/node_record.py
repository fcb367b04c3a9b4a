"""What the embedded media node says about itself in the registry, read from the node and its ladders."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from cluster import Announcer, NodeLoad, NodeRecord, StreamLoad
from cluster.load import RateMeter, cpu_meter, thread_cpu_meter, usable_cores
from sfu.node import SfuNode


class NodeDescriber:
    """Builds this node's `NodeRecord`; each call measures the rates since the call before."""

    def __init__(self, node_id: str, http_url: str, media_addresses: tuple[str, ...], node: SfuNode,
                 ladders: Callable[[], int], hls_channels: Callable[[], tuple[str, ...]], version: str) -> None:
        self._node = node
        self._ladders = ladders
        self._hls_channels = hls_channels
        self._identity = NodeRecord(id=node_id, instance=secrets.token_hex(8), http_url=http_url, media_addresses=media_addresses,
                                    max_viewers=node.settings.max_viewers, started_at=time.time(), version=version)
        self._cpu = cpu_meter()
        self._loop = thread_cpu_meter()  # read on the loop's thread, where the announcer runs
        self._cores = usable_cores()
        self._packets_out = RateMeter(lambda: node.stats()["packets_out"])

    def __call__(self) -> NodeRecord:
        node = self._node
        streams = tuple(
            StreamLoad(channel=room.name, stream=room.stream, viewers=room.viewers, relay_from=room.relay_from or "")
            for room in node.rooms.values() if room.live
        )
        load = NodeLoad(
            cpu=round(self._cpu.read(), 3),
            loop=round(self._loop.read(), 3),
            cores=self._cores,
            viewers=node.viewers(),
            pending=node.pending,
            pending_viewers=node.pending_viewers,
            publishers=sum(1 for s in streams if not s.relay_from),
            packets_out_per_s=round(self._packets_out.read(), 1),
            relays=node.relays_in(),
            ladders=self._ladders(),
        )
        return self._identity.model_copy(update={"load": load, "streams": streams, "hls": self._hls_channels()})


class AnnounceOnChange:
    """A stream watcher: a stream that starts or ends is in the registry at once, not at the next beat."""

    def __init__(self, announcer: Announcer) -> None:
        self._announcer = announcer

    async def stream_started(self, room: str, stream: str) -> None:
        self._announcer.poke()

    async def stream_ended(self, room: str, stream: str) -> None:
        self._announcer.poke()
