"""RTMP encoders into this process's node: the stream key names the channel, the cluster's origin
claim makes this node the channel's origin (one publisher per channel in the whole cluster, as for
WHIP), and every refusal reaches the encoder in words its log shows.

OBS and FFmpeg publish to `rtmp://HOST/live` with the stream key as the stream name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from sfu.errors import SfuError
from sfu.node import SfuNode
from sfu.rtmp.ingest import RtmpPublisher, refusal
from sfu.rtmp.session import Refused
from signaling.accounts.service import AccountService
from signaling.auth.rate_limit import RateLimiter
from signaling.channels.service import ChannelService
from signaling.errors import AppError
from signaling.media.claiming import ClaimingPlane
from signaling.streams.publishing import stream_key_owner

log = logging.getLogger(__name__)

APP = "live"


class RtmpGate:
    def __init__(self, node: SfuNode, plane: ClaimingPlane, channels: ChannelService, accounts: AccountService,
                 limiter: RateLimiter, per_minute: int) -> None:
        self._node = node
        self._plane = plane
        self._channels = channels
        self._accounts = accounts
        self._limiter = limiter
        self._per_minute = per_minute
        self._settling: set[asyncio.Task[None]] = set()

    async def authorize(self, app: str, key: str, address: str) -> RtmpPublisher:
        """The publisher for the encoder's stream, or Refused with why. Publishing attempts from one
        address are limited as WHIP's are (a stream key cannot be guessed faster here)."""
        wait = await self._limiter.hit(f"rtmp:ip:{address}", self._per_minute, 60)
        if wait:
            raise Refused(f"too many attempts to publish from this address; try again in {wait} s")
        if app.strip("/").split("?", 1)[0] != APP:
            raise Refused(f"publish to rtmp://HOST/{APP} (not /{app[:40]}) with the stream key as the stream name")
        try:
            channel, owner = await stream_key_owner(self._channels, self._accounts, key.split("?", 1)[0])
        except AppError as exc:
            raise Refused(f"{exc.detail}: copy the stream key again from the studio" if exc.status == 401
                          else exc.detail) from None
        try:
            await self._plane.begin(channel.name)
        except SfuError as exc:
            raise Refused(refusal(exc)) from None
        try:
            publisher = self._node.rtmp_publisher(channel.name, owner.username)
        except SfuError as exc:
            await self._plane.settle(channel.name)
            raise Refused(refusal(exc)) from None
        publisher.on_settled = lambda: self._spawn(self._plane.settle(channel.name))
        log.info("rtmp: %s publishes to %s from %s", owner.username, channel.name, address)
        return publisher

    def _spawn(self, settling: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(settling)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def close(self) -> None:
        """Wait for the claims being let go (they run out by themselves if this is cut short)."""
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=2.0)
