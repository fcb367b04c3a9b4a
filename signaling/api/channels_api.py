"""The channel directory, one channel, channel settings, and follows."""

from __future__ import annotations

from aiohttp import web

from signaling.api.endpoint import ANYONE, SIGNED_IN, Access, Call, Endpoint, int_query, json_response, name_param
from signaling.api.presenters import channel_out
from signaling.api.schemas import ChannelIn, ChannelListOut, ChannelOut, FollowOut
from signaling.auth.roles import Role
from signaling.channels.service import ChannelService
from signaling.errors import Invalid
from signaling.settings import Settings


class ChannelsApi:
    def __init__(self, channels: ChannelService, settings: Settings) -> None:
        self._channels = channels
        self._base = settings.resolved_public_url

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
                items=[channel_out(v, self._base) for v in views],
                next_cursor=None if next_offset is None else str(next_offset),
            )
        )

    async def show(self, call: Call[None]) -> web.StreamResponse:
        view = await self._channels.get(name_param(call.request, "name"), call.principal)
        return json_response(channel_out(view, self._base))

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
        return json_response(channel_out(view, self._base))

    async def follow(self, call: Call[None]) -> web.StreamResponse:
        return await self._follow(call, True)

    async def unfollow(self, call: Call[None]) -> web.StreamResponse:
        return await self._follow(call, False)

    async def _follow(self, call: Call[None], follow: bool) -> web.StreamResponse:
        view = await self._channels.follow(name_param(call.request, "name"), call.user, follow)
        return json_response(FollowOut(channel=view.channel.name, following=follow, followers=view.followers))

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
            Endpoint("PUT", path + "/follow", self.follow, "Follow a channel", SIGNED_IN, "channels",
                     response=FollowOut, errors=(401, 404, 422)),
            Endpoint("DELETE", path + "/follow", self.unfollow, "Unfollow a channel", SIGNED_IN, "channels",
                     response=FollowOut, errors=(401, 404, 422)),
        ]
