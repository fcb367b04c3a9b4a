"""Chat over HTTP: the WebSocket (`GET /ws`), history, and moderation (deleting, bans and time-outs,
slow and followers-only modes, moderators). Moderation happens here, over REST; its effects reach
every connected client as protocol frames."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from signaling.accounts.service import AccountService
from signaling.accounts.names import username_problem
from signaling.api.endpoint import (
    ANYONE,
    MAX_ID,
    SIGNED_IN,
    Call,
    Endpoint,
    bearer_token,
    id_param,
    int_query,
    json_response,
    name_param,
)
from signaling.api.schemas import (
    BanIn,
    BanListOut,
    BanOut,
    ChatHistoryOut,
    ChatSettingsIn,
    ChatSettingsOut,
    ChattersOut,
    ModeratorListOut,
)
from signaling.chat.hub import ChatHub, Chatter
from signaling.chat.links import WebSocketLink
from signaling.chat.service import ChatService
from signaling.errors import BadRequest, NotFound, Unavailable

HEARTBEAT = 30.0  # seconds between WebSocket pings; a client that stops answering is dropped
MAX_CHATTERS_LISTED = 500
CHATTERS_FRESH = 2.0  # seconds one answer serves everybody asking about a channel (bounded: 1000 channels)


class ChatApi:
    def __init__(self, chat: ChatService, hub: ChatHub, accounts: AccountService) -> None:
        self._chat = chat
        self._hub = hub
        self._accounts = accounts
        self._chatters: dict[str, tuple[float, ChattersOut]] = {}

    async def websocket(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        channel = request.query.get("channel", "")  # none: the user's notifications only
        if channel and (username_problem(channel) is not None or not await self._chat.channel_exists(channel)):
            raise NotFound(f"there is no channel {channel[:64]!r}")
        token = bearer_token(request)
        principal = await self._accounts.authenticate(token) if token else None  # browsers send an auth frame instead
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, compress=False, max_msg_size=64 * 1024)
        if not ws.can_prepare(request).ok:
            raise BadRequest("this is a WebSocket endpoint: connect with a WebSocket client")
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None  # uvloop's transports are not asyncio.Transport subclasses
        link = WebSocketLink(ws, transport)
        try:
            if channel:
                await self._hub.serve(Chatter(link, channel, principal), link.frames())
            else:
                await self._hub.serve_personal(Chatter(link, channel, principal), link.frames())
        finally:
            await link.finish()
            await ws.close()
        return ws

    async def history(self, call: Call[None]) -> web.StreamResponse:
        name = name_param(call.request, "name")
        before = int_query(call.request, "before", 0, 1, MAX_ID) or None
        limit = int_query(call.request, "limit", 50, 1, 200)
        messages, older = await self._chat.history(name, before, limit)
        return json_response(ChatHistoryOut.model_validate({"messages": messages, "next_before": older}))

    async def delete_message(self, call: Call[None]) -> web.StreamResponse:
        message_id = id_param(call.request, "id", "message")
        await self._chat.delete_message(name_param(call.request, "name"), message_id, call.user)
        return web.Response(status=204)

    async def chatters(self, call: Call[None]) -> web.StreamResponse:
        name = name_param(call.request, "name")
        now = time.monotonic()
        cached = self._chatters.get(name)
        if cached is None or now - cached[0] > CHATTERS_FRESH:
            if not await self._chat.channel_exists(name):
                raise NotFound(f"there is no channel {name!r}")
            try:
                async with asyncio.timeout(3):
                    listed = await self._hub.presence.listed(name, MAX_CHATTERS_LISTED)
            except Exception as exc:  # noqa: BLE001 - the list's store (Redis) is down: say so, not a 500
                raise Unavailable("the list of who is in the chat is unavailable right now", retry_after=5) from exc
            if len(self._chatters) >= 1000:
                self._chatters = {k: v for k, v in self._chatters.items() if now - v[0] <= CHATTERS_FRESH}
            cached = self._chatters[name] = (now, ChattersOut(items=listed[0], count=listed[1]))
        return json_response(cached[1])

    async def settings(self, call: Call[None]) -> web.StreamResponse:
        settings = await self._chat.settings(name_param(call.request, "name"))
        return json_response(ChatSettingsOut(**settings.frame(self._chat.rules.max_length)))

    async def change_settings(self, call: Call[ChatSettingsIn]) -> web.StreamResponse:
        settings = await self._chat.change_settings(
            name_param(call.request, "name"), call.user, call.body.slow_mode, call.body.followers_only
        )
        return json_response(ChatSettingsOut(**settings.frame(self._chat.rules.max_length)))

    async def bans(self, call: Call[None]) -> web.StreamResponse:
        views = await self._chat.bans(name_param(call.request, "name"), call.user)
        return json_response(BanListOut(items=[BanOut(username=v.username, until=v.until, reason=v.reason) for v in views]))

    async def ban(self, call: Call[BanIn]) -> web.StreamResponse:
        view = await self._chat.ban(
            name_param(call.request, "name"), name_param(call.request, "username"), call.user, call.body.seconds, call.body.reason
        )
        return json_response(BanOut(username=view.username, until=view.until, reason=view.reason))

    async def unban(self, call: Call[None]) -> web.StreamResponse:
        await self._chat.unban(name_param(call.request, "name"), name_param(call.request, "username"), call.user)
        return web.Response(status=204)

    async def moderators(self, call: Call[None]) -> web.StreamResponse:
        return json_response(ModeratorListOut(items=await self._chat.moderators(name_param(call.request, "name"))))

    async def appoint(self, call: Call[None]) -> web.StreamResponse:
        return await self._appoint(call, True)

    async def dismiss(self, call: Call[None]) -> web.StreamResponse:
        return await self._appoint(call, False)

    async def _appoint(self, call: Call[None], appoint: bool) -> web.StreamResponse:
        names = await self._chat.appoint(name_param(call.request, "name"), name_param(call.request, "username"), call.user, appoint)
        return json_response(ModeratorListOut(items=names))

    def endpoints(self) -> list[Endpoint]:
        chat = "/api/channels/{name}/chat"
        mods = "/api/channels/{name}/moderators"
        moderator = "the channel's owner, its moderators, or a site moderator"
        return [
            Endpoint("GET", "/ws", self.websocket, "Chat and live events over a WebSocket (protocol: signaling/chat/PROTOCOL.md)",
                     ANYONE, "chat", errors=(400, 401, 404),
                     query=(("channel", "string", "the channel whose chat to join"),),
                     extra={"own_auth": True}),
            Endpoint("GET", chat, self.history, "Chat history, newest page first, each page oldest first", ANYONE, "chat",
                     response=ChatHistoryOut, errors=(404, 422),
                     query=(("before", "integer", "only messages with a smaller id (next_before of the previous page)"),
                            ("limit", "integer", "1 to 200, default 50"))),
            Endpoint("DELETE", chat + "/{id}", self.delete_message, f"Delete a message for everyone ({moderator})",
                     SIGNED_IN, "chat", status=204, errors=(401, 403, 404)),
            Endpoint("GET", chat + "/chatters", self.chatters, "Who is in the chat now (signed-in users)", ANYONE, "chat",
                     response=ChattersOut, errors=(404,)),
            Endpoint("GET", chat + "/settings", self.settings, "The chat's modes and limits", ANYONE, "chat",
                     response=ChatSettingsOut, errors=(404,)),
            Endpoint("PATCH", chat + "/settings", self.change_settings, f"Slow mode and followers-only mode ({moderator})",
                     SIGNED_IN, "chat", body=ChatSettingsIn, response=ChatSettingsOut, errors=(401, 403, 404, 422)),
            Endpoint("GET", chat + "/bans", self.bans, f"Users banned or timed out now ({moderator})", SIGNED_IN, "chat",
                     response=BanListOut, errors=(401, 403, 404)),
            Endpoint("PUT", chat + "/bans/{username}", self.ban, f"Ban a user, or time them out with `seconds` ({moderator})",
                     SIGNED_IN, "chat", body=BanIn, response=BanOut, errors=(401, 403, 404, 409, 422)),
            Endpoint("DELETE", chat + "/bans/{username}", self.unban, f"Lift a ban or time-out ({moderator})", SIGNED_IN,
                     "chat", status=204, errors=(401, 403, 404)),
            Endpoint("GET", mods, self.moderators, "The channel's moderators", ANYONE, "chat", response=ModeratorListOut,
                     errors=(404,)),
            Endpoint("PUT", mods + "/{username}", self.appoint, "Appoint a moderator (the channel's owner or an admin)",
                     SIGNED_IN, "chat", response=ModeratorListOut, errors=(401, 403, 404, 409, 422)),
            Endpoint("DELETE", mods + "/{username}", self.dismiss, "Dismiss a moderator (the channel's owner or an admin)",
                     SIGNED_IN, "chat", response=ModeratorListOut, errors=(401, 403, 404, 422)),
        ]
