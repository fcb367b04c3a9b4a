"""The channel directory, one channel, channel settings, and follows."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from signaling.analytics.hls_requests import HlsRequestViewers
from signaling.analytics.viewing import Figures, ViewingBook
from signaling.api.client_address import client_address
from signaling.api.endpoint import ANYONE, SIGNED_IN, Access, Call, Endpoint, int_query, json_response, name_param
from signaling.api.presenters import channel_out
from signaling.api.schemas import (
    ChannelIn, ChannelListOut, ChannelOut, FollowIn, FollowOut, StreamListOut, StreamOut, WatchingIn, WatchingOut,
)
from signaling.auth.rate_limit import RateLimiter
from signaling.auth.roles import Role
from signaling.channels.service import ChannelService, ChannelView
from signaling.errors import Invalid, NotFound, RateLimited
from signaling.settings import Settings
from signaling.streams.service import StreamService

log = logging.getLogger(__name__)

# "Still watching" per minute: a player says it every 10 s (12 leaves room for retries); one address
# (a carrier's NAT) may hold 100 players, and so at most ~250 made-up viewers.
WATCHING_PER_SESSION_PER_MINUTE = 12
WATCHING_PER_MINUTE = 600


FOLLOWS_PER_HOUR = 120


class ChannelsApi:
    def __init__(self, channels: ChannelService, streams: StreamService, limiter: RateLimiter, settings: Settings,
                 viewing: ViewingBook, hls_requests: HlsRequestViewers | None = None) -> None:
        self._viewing = viewing
        self._hls_requests = hls_requests
        self._channels = channels
        self._streams = streams
        self._hls = streams.hls_audience
        self._limiter = limiter
        self._settings = settings
        self._base = settings.resolved_public_url
        self._playback = settings.playback_order

    async def _out(self, views: list[ChannelView]) -> list[ChannelOut]:
        live = [v.channel.name for v in views if v.channel.is_live]
        hls: dict[str, int] = {}
        if live:
            try:
                async with asyncio.timeout(2):
                    hls = await self._hls.counts(live)
            except Exception as exc:  # noqa: BLE001 - a courtesy count: the channels show without it
                log.warning("could not count HLS viewers: %s", exc)
        return [channel_out(v, self._base, hls.get(v.channel.name, 0), self._playback) for v in views]

    async def streams(self, call: Call[None]) -> web.StreamResponse:
        view = await self._channels.get(name_param(call.request, "name"))
        limit = int_query(call.request, "limit", 10, 1, 50)
        now = datetime.now(UTC)
        items = [
            StreamOut(id=row.id, started_at=row.started_at, ended_at=row.ended_at,
                      duration=max(0.0, ((row.ended_at or now) - row.started_at).total_seconds()),
                      peak_viewers=row.peak_viewers, video_codec=row.video_codec, audio_codec=row.audio_codec)
            for row in await self._streams.history(view.channel.id, limit)
        ]
        return json_response(StreamListOut(items=items))

    async def watching(self, call: Call[WatchingIn]) -> web.StreamResponse:
        address = client_address(call.request, self._settings.trust_forwarded_for)
        # One player beats every 10 s; one address (a carrier's NAT) may have many players.
        # WebRTC players' beacons count apart: they must not use up the HLS viewers' "still watching".
        kind = "watching" if call.body.transport == "hls" else "beacon"
        for key, limit in ((f"{kind}:ip:{address}:{call.body.session}", WATCHING_PER_SESSION_PER_MINUTE),
                           (f"{kind}:ip:{address}", WATCHING_PER_MINUTE)):
            wait = await self._limiter.hit(key, limit, 60)
            if wait:
                raise RateLimited(f"too many requests; try again in {wait} s", retry_after=wait)
        body = call.body
        name = name_param(call.request, "name")
        found = await self._viewing.stream_of(name)
        if found is None:
            raise NotFound(f"there is no channel {name!r}")
        if body.transport == "hls":
            count = await self._streams.watching(name, body.session, body.leaving)
            if self._hls_requests is not None:  # this player is not one of those seen by their requests
                self._hls_requests.claim(name, address)
        else:
            count = await self._hls.count(name)
        if body.viewer is not None:  # a player that tells how its viewing goes (older ones only beat)
            session = body.session if body.whep_session is None else body.whep_session.rsplit(".", 1)[-1]
            self._viewing.player_session(
                session, found[0], found[1], body.transport, f"a:{body.viewer}",
                Figures(body.watch_seconds, body.startup_ms, body.stalls, body.stall_seconds, body.latency_ms,
                        body.dropped_frames, body.renditions), ending=body.leaving)
        return json_response(WatchingOut(hls_viewers=count))

    async def directory(self, call: Call[None]) -> web.StreamResponse:
        query = call.request.query
        live_raw = query.get("live", "")
        if live_raw not in ("", "true", "false"):
            raise Invalid("live must be true or false", errors=[{"field": "live", "message": "not a boolean"}])
        search = query.get("q", "")
        if len(search) > 64 or any(ord(c) < 32 for c in search):
            raise Invalid("q must be at most 64 printable characters", errors=[{"field": "q", "message": "invalid"}])
        offset = int_query(call.request, "cursor", 0, 0, 1_000_000)
        limit = int_query(call.request, "limit", 50, 1, 100)
        views, next_offset = await self._channels.directory(
            call.principal, live=None if not live_raw else live_raw == "true", query=search, offset=offset, limit=limit
        )
        return json_response(
            ChannelListOut(
                items=await self._out(views),
                next_cursor=None if next_offset is None else str(next_offset),
            )
        )

    async def show(self, call: Call[None]) -> web.StreamResponse:
        view = await self._channels.get(name_param(call.request, "name"), call.principal)
        return json_response((await self._out([view]))[0])

    async def update(self, call: Call[ChannelIn]) -> web.StreamResponse:
        b = call.body
        view = await self._channels.update(
            name_param(call.request, "name"),
            call.user,
            title=b.title,
            description=b.description,
            tags=b.tags,
            avatar_url=b.avatar_url,
            record_streams=b.record_streams,
            recording_retention_days=b.recording_retention_days,
        )
        return json_response((await self._out([view]))[0])

    async def follow(self, call: Call[FollowIn | None]) -> web.StreamResponse:
        return await self._follow(call, True, call.body.notify if call.body is not None else None)

    async def unfollow(self, call: Call[None]) -> web.StreamResponse:
        return await self._follow(call, False, None)

    async def _follow(self, call: Call[Any], follow: bool, bell: str | None) -> web.StreamResponse:
        # A person follows, unfollows and rings a bell a few times an hour; a script toggling to flood a
        # channel's "new follower" webhook is stopped here.
        wait = await self._limiter.hit(f"follow:{call.user.user_id}", FOLLOWS_PER_HOUR, 3600)
        if wait:
            raise RateLimited(f"too many follow changes; try again in {wait} s", retry_after=wait)
        view = await self._channels.follow(name_param(call.request, "name"), call.user, follow, bell)
        return json_response(FollowOut(channel=view.channel.name, following=follow, followers=view.followers,
                                       notify=view.bell))  # type: ignore[arg-type]

    def endpoints(self) -> list[Endpoint]:
        path = "/api/channels/{name}"
        return [
            Endpoint("GET", "/api/channels", self.directory, "The channel directory, live channels first", ANYONE,
                     "channels", response=ChannelListOut, errors=(422,),
                     query=(("live", "boolean", "only live (true) or offline (false) channels"),
                            ("q", "string", "search in names and titles"),
                            ("cursor", "string", "next_cursor of the previous page"),
                            ("limit", "integer", "1 to 100, default 50"))),
            Endpoint("GET", path, self.show, "A channel: profile, live state, viewers, playback URLs", ANYONE,
                     "channels", response=ChannelOut, errors=(404,)),
            Endpoint("PATCH", path, self.update, "Change a channel's title, description, tags, avatar or recording settings",
                     Access(Role.BROADCASTER, "the channel's owner, or an admin"), "channels", body=ChannelIn,
                     response=ChannelOut, errors=(401, 403, 404, 422)),
            Endpoint("GET", path + "/streams", self.streams, "A channel's streams, newest first (the live one too)",
                     ANYONE, "channels", response=StreamListOut, errors=(404, 422),
                     query=(("limit", "integer", "1 to 50, default 10"),)),
            Endpoint("POST", path + "/watching", self.watching,
                     "A player watching over HLS says so every 10 s, so it counts among the viewers", ANYONE,
                     "channels", body=WatchingIn, response=WatchingOut, errors=(404, 409, 422, 429)),
            Endpoint("PUT", path + "/follow", self.follow,
                     "Follow a channel, or set the bell of one you follow (the body is optional: a new follow rings for all)",
                     SIGNED_IN, "channels", body=FollowIn, body_optional=True, response=FollowOut,
                     errors=(400, 401, 404, 415, 422, 429)),
            Endpoint("DELETE", path + "/follow", self.unfollow, "Unfollow a channel", SIGNED_IN, "channels",
                     response=FollowOut, errors=(401, 404, 422, 429)),
        ]
