"""WHIP ingest (RFC 9725) and WHEP playback: SDP over HTTP in front of the SFU node.

    POST    /whip/{channel}            offer -> 201 answer, Location, ETag, Link (ice servers)
    PATCH   /whip/{channel}/{session}  trickle-ice-sdpfrag: candidates -> 204; ICE restart -> 200 + ETag
    DELETE  /whip/{channel}/{session}  end -> 200
    OPTIONS on both                    CORS preflight, Accept-Post / Accept-Patch, Link
and the same under /whep. WHIP takes the channel's stream key or its owner's access token as bearer;
WHEP is open for public channels, and a bearer access token binds the viewer to a user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from sfu.errors import (
    AlreadyPublishing,
    BadOffer,
    NodeFull,
    NotLive,
    SfuError,
    TooManyCandidates,
    TooManyPending,
    UnknownLayer,
    UnknownSession,
    UnsupportedMedia,
)
from sfu.sdp_fragment import parse_fragment
from signaling.accounts.service import AccountService
from signaling.api.client_address import client_address
from signaling.api.endpoint import (
    ANYONE, MAX_BODY, Access, Call, Endpoint, Handler, bearer_token, json_response, name_param,
)
from signaling.api.schemas import IceServerOut, IceServersOut, LayerIn, LayersOut
from signaling.auth import secrets
from signaling.auth.rate_limit import RateLimiter
from signaling.auth.turn_credentials import IceServer, IceServers
from signaling.streams.publishing import stream_key_owner
from signaling.auth.roles import Role
from signaling.channels.service import ChannelService
from signaling.media.plane import Layers, MediaPlane, SessionState
from signaling.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from signaling.settings import Settings
from telemetry.context import CHANNEL, SESSION, USER

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDP_FRAGMENT = "application/trickle-ice-sdpfrag"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match, X-Request-Id",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, X-Request-Id",
    "Access-Control-Max-Age": "600",
}
STREAM_KEY_OR_OWNER = Access(None, "bearer stream key of the channel, or an access token of its owner")
SESSION_HOLDER = Access(None, "whoever holds the session URL (unguessable)")
# Per address: viewers behind one NAT look at their layers every 30 s; choosing is rarer (and each
# choice costs a keyframe, so the node also keeps 3 s between one viewer's choices).
LAYER_LOOKS_PER_MINUTE = 240
LAYER_CHOICES_PER_MINUTE = 30


class PreconditionRequired(AppError):
    status, title, slug = 428, "Precondition Required", "precondition-required"


class PreconditionFailed(AppError):
    status, title, slug = 412, "Precondition Failed", "precondition-failed"


@web.middleware
async def cors_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """WHIP/WHEP are called cross-origin by players and encoders: CORS headers on every answer, errors too."""
    response: web.StreamResponse = await handler(request)
    if request.path.startswith(("/whip/", "/whep/")):
        response.headers.update(CORS_HEADERS)
    return response


def sfu_error(exc: SfuError, takeover_after: float) -> AppError:
    """The one place SFU refusals become HTTP statuses."""
    if isinstance(exc, BadOffer):
        return BadRequest(str(exc))
    if isinstance(exc, UnsupportedMedia):
        return Invalid(str(exc))
    if isinstance(exc, NotLive):
        return Conflict("the channel is not live", retry_after=5)
    if isinstance(exc, AlreadyPublishing):
        return Conflict(
            "someone is already publishing to this channel; a reconnect takes over once the old connection "
            f"has been silent for {takeover_after:g} s",
            retry_after=max(1, round(takeover_after)),
        )
    if isinstance(exc, NodeFull):
        return Unavailable(str(exc), retry_after=10)
    if isinstance(exc, TooManyPending):
        return RateLimited(str(exc), retry_after=10)
    if isinstance(exc, TooManyCandidates):
        return Invalid(str(exc))
    if isinstance(exc, UnknownSession):
        return NotFound("there is no such session (it ended, or never existed)")
    if isinstance(exc, UnknownLayer):
        return NotFound(f"there is no layer {str(exc)!r} now (the layers run while the HLS ladder does)")
    return AppError(str(exc))


class WebRtcApi:
    def __init__(
        self, media: MediaPlane, channels: ChannelService, accounts: AccountService, limiter: RateLimiter,
        settings: Settings, ice: IceServers,
    ) -> None:
        self._ice = ice
        self._media = media
        self._channels = channels
        self._accounts = accounts
        self._limiter = limiter
        self._settings = settings

    def _translating(self, handler: Handler) -> Handler:
        """The handler with SFU refusals turned into problem details, in one place for every endpoint."""

        async def handle(call: Call[Any]) -> web.StreamResponse:
            try:
                return await handler(call)
            except SfuError as exc:
                raise sfu_error(exc, self._media.takeover_after) from None

        handle.__name__ = getattr(handler, "__name__", "endpoint")
        return handle

    def endpoints(self) -> list[Endpoint]:
        out: list[Endpoint] = []
        for kind, publish in (("whip", True), ("whep", False)):
            tag = "WHIP" if publish else "WHEP"
            base, session = f"/{kind}/{{channel}}", f"/{kind}/{{channel}}/{{session}}"
            out += [
                Endpoint("OPTIONS", base, self.options, f"{tag} preflight: CORS, Accept-Post, ICE servers", ANYONE, tag,
                         status=204, extra={"own_auth": True}),
                Endpoint(
                    "POST", base, self.publish if publish else self.play,
                    "Publish a stream (RFC 9725)" if publish else "Watch a stream (WHEP)",
                    STREAM_KEY_OR_OWNER if publish else ANYONE, tag, status=201, raw_body=SDP,
                    errors=(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
                    extra={"produces": SDP, "own_auth": publish},
                ),
                Endpoint("OPTIONS", session, self.options, f"{tag} session preflight", ANYONE, tag, status=204,
                         extra={"own_auth": True}),
                Endpoint(
                    "PATCH", session, self.patch, "Trickle ICE candidates, or restart ICE (If-Match: \"*\")",
                    SESSION_HOLDER, tag, status=204, raw_body=SDP_FRAGMENT, errors=(400, 404, 412, 415, 422, 428, 429),
                    extra={"produces": SDP_FRAGMENT, "own_auth": True},
                ),
                Endpoint("DELETE", session, self.delete, "End the session", SESSION_HOLDER, tag, errors=(404,),
                         extra={"own_auth": True}),
            ]
        layers = "/whep/{channel}/{session}/layers"
        out += [
            Endpoint("GET", "/api/ice-servers", self.ice_servers,
                     "STUN/TURN servers for a browser's peer connection (TURN with short-lived credentials)",
                     ANYONE, "WHEP", response=IceServersOut, errors=(429,)),
            Endpoint("OPTIONS", layers, self.options, "Layers preflight", ANYONE, "WHEP", status=204,
                     extra={"own_auth": True}),
            Endpoint("GET", layers, self.layers,
                     "A viewer's video choices (the source and the encoded layers while the HLS ladder runs)",
                     SESSION_HOLDER, "WHEP", response=LayersOut, errors=(404,), extra={"own_auth": True}),
            Endpoint("PUT", layers, self.choose_layer,
                     "Watch one layer (it stays until chosen again or it ends), or \"auto\": the server picks from loss",
                     SESSION_HOLDER, "WHEP", body=LayerIn, response=LayersOut, errors=(404, 422, 429),
                     extra={"own_auth": True}),
        ]
        return [replace(e, handler=self._translating(e.handler)) for e in out]

    # --- handlers ---

    async def options(self, call: Call[None]) -> web.StreamResponse:
        """204 whatever credentials come along: a WHIP client sends its stream key here too, and reads
        PATCH in the allowed methods to decide on trickle ICE (RFC 9725 section 4.1)."""
        # No TURN credential for a preflight: anyone may send one, unlimited (RFC 9725 section 4.6).
        headers = {"Accept-Post": SDP, "Accept-Patch": SDP_FRAGMENT}
        return web.Response(status=204, headers=self._with_links(headers, self._ice.static()))

    async def ice_servers(self, call: Call[None]) -> web.StreamResponse:
        """What a page passes to `new RTCPeerConnection()` before it offers (it gathers relay candidates
        at once, so nothing has to trickle)."""
        await self._limit(call.request, "ice", self._settings.rate_ice_servers_per_minute)
        who = call.principal.username if call.principal is not None else self._ice.guest(self._client(call.request))
        servers = [IceServerOut(urls=list(s.urls), username=s.username, credential=s.credential)
                   for s in self._ice.issue(who)]
        out = IceServersOut(ice_servers=servers, ice_transport_policy=self._settings.ice_transport_policy,
                            expires_in=self._ice.ttl if self._ice.issues_credentials else None)
        return json_response(out, headers={"Cache-Control": "no-store"})

    async def publish(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        name = name_param(request, "channel")
        token = bearer_token(request)
        await self._limit(request, "whip", self._settings.rate_whip_per_minute)
        if token is None:
            raise Unauthorized("WHIP needs 'Authorization: Bearer <stream key or access token>'")
        CHANNEL.set(name)
        owner = await self._authorize_publisher(name, token)
        USER.set(owner)
        offer = await _read_body(request, SDP)
        ticket = await self._media.publish(name, offer, owner, self._client(request))
        SESSION.set(ticket.session)
        log.info("whip: %s publishes to %s", owner, name)
        return self._created("whip", name, ticket.session, ticket.etag, ticket.answer, owner)

    async def play(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        name = name_param(request, "channel")
        CHANNEL.set(name)
        await self._limit(request, "whep", self._settings.rate_whep_per_minute)
        await self._channels.get(name)  # 404 for a channel that does not exist
        offer = await _read_body(request, SDP)
        ticket = await self._media.subscribe(name, offer, call.principal, self._client(request))
        SESSION.set(ticket.session)
        log.info("whep: a viewer of %s", name)
        who = call.principal.username if call.principal is not None else self._ice.guest(self._client(request))
        return self._created("whep", name, ticket.session, ticket.etag, ticket.answer, who)

    async def patch(self, call: Call[None]) -> web.StreamResponse:
        request = call.request
        session_id = request.match_info["session"]
        session = await self._session(request)
        await self._limit(request, "trickle", self._settings.rate_trickle_per_minute)
        if_match = request.headers.get("If-Match")
        if if_match is None:
            raise PreconditionRequired("send If-Match with the session's ETag (or \"*\" for an ICE restart)")
        text = await _read_body(request, SDP_FRAGMENT)
        fragment = parse_fragment(text)
        if fragment.restarts_ice:
            if if_match.strip() not in ("*", '"*"', session.etag):
                raise PreconditionFailed("the ETag does not match the session's current one")
            answer, etag = await self._media.restart_ice(request.match_info["channel"], session_id, text)
            return web.Response(status=200, text=answer, content_type=SDP_FRAGMENT, headers={"ETag": etag})
        if if_match.strip() != session.etag:
            raise PreconditionFailed("the ETag does not match the session's current one")
        await self._media.trickle(request.match_info["channel"], session_id, text)
        return web.Response(status=204)

    async def delete(self, call: Call[None]) -> web.StreamResponse:
        await self._session(call.request)
        try:
            await self._media.end(call.request.match_info["channel"], call.request.match_info["session"])
        except UnknownSession:
            pass  # ended meanwhile: the client's wish is granted
        return web.Response(status=200)

    # The node answers only for a viewer's session of that channel (a publisher's is "no such session").

    async def layers(self, call: Call[None]) -> web.StreamResponse:
        channel, session = call.request.match_info["channel"], call.request.match_info["session"]
        await self._limit(call.request, "layers", LAYER_LOOKS_PER_MINUTE)
        return json_response(_layers_out(await self._media.layers(channel, session)))

    async def choose_layer(self, call: Call[LayerIn]) -> web.StreamResponse:
        channel, session = call.request.match_info["channel"], call.request.match_info["session"]
        await self._limit(call.request, "layer", LAYER_CHOICES_PER_MINUTE)
        return json_response(_layers_out(await self._media.choose_layer(channel, session, call.body.layer)))

    # --- helpers ---

    async def _session(self, request: web.Request) -> SessionState:
        kind = request.path.split("/", 2)[1]
        session = await self._media.state(request.match_info["channel"], request.match_info["session"])
        if (kind == "whip") != (session.kind == "publish"):
            raise NotFound("there is no such session here")
        return session

    async def _authorize_publisher(self, name: str, token: str) -> str:
        """The username publishing to channel `name` with `token`, or 401/403/404."""
        if token.startswith(secrets.STREAM_KEY_PREFIX):
            channel, owner = await stream_key_owner(self._channels, self._accounts, token)
            if channel.name != name:
                raise Forbidden("this stream key belongs to another channel")
        else:
            owner = await self._accounts.authenticate(token)
            view = await self._channels.get(name)
            if view.channel.owner_id != owner.user_id:
                raise Forbidden("only the channel's owner may publish to it")
        if not owner.at_least(Role.BROADCASTER):
            raise Forbidden("publishing needs the broadcaster role")
        return owner.username

    def _client(self, request: web.Request) -> str:
        return client_address(request, self._settings.trust_forwarded_for)

    async def _limit(self, request: web.Request, what: str, per_minute: int) -> None:
        address = self._client(request)
        wait = await self._limiter.hit(f"{what}:ip:{address}", per_minute, 60)
        if wait:
            raise RateLimited(f"too many requests; try again in {wait} s", retry_after=wait)

    def _created(self, kind: str, channel: str, session_id: str, etag: str, answer: str, who: str) -> web.Response:
        """201 with the ICE servers, TURN with credentials for `who`: a WHIP/WHEP client that offered
        host candidates only (OBS) adds relay ones and trickles them (RFC 9725 section 4.6)."""
        headers = self._with_links({"Location": f"/{kind}/{channel}/{session_id}", "ETag": etag}, self._ice.issue(who))
        return web.Response(status=201, text=answer, content_type=SDP, headers=headers)

    @staticmethod
    def _with_links(headers: dict[str, str], servers: tuple[IceServer, ...]) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict(headers)
        for server in servers:
            for link in server.link_headers():
                out.add("Link", link)
        return out


async def _read_body(request: web.Request, content_type: str) -> str:
    if request.content_type != content_type:
        raise UnsupportedMediaType(f"send the body as {content_type}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body is larger than {request.app[MAX_BODY]} bytes") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    if "\x00" in text:
        raise BadRequest("the body contains NUL characters")
    return text


def _layers_out(layers: Layers) -> LayersOut:
    return LayersOut(choices=list(layers.choices), current=layers.current, auto=layers.auto)
