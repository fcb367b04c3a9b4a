"""GET/PATCH /api/me, the user's stream key, and the channels the user follows."""

from __future__ import annotations

from aiohttp import web

from signaling.accounts.service import AccountService
from signaling.api.endpoint import SIGNED_IN, Access, Call, Endpoint, json_response
from signaling.api.presenters import channel_out, stream_key_out, user_out
from signaling.api.schemas import ChannelListOut, ProfileIn, StreamKeyOut, UserOut
from signaling.auth.rate_limit import RateLimiter
from signaling.auth.roles import Role
from signaling.channels.service import ChannelService, StreamKey
from signaling.errors import RateLimited
from signaling.settings import Settings

NO_STORE = {"Cache-Control": "no-store"}


class MeApi:
    def __init__(
        self, accounts: AccountService, channels: ChannelService, limiter: RateLimiter, settings: Settings
    ) -> None:
        self._accounts = accounts
        self._channels = channels
        self._limiter = limiter
        self._settings = settings
        # The RTMP URL told to encoders; cleared when this process's listener could not be had.
        self.rtmp_url = settings.resolved_rtmp_url

    async def show(self, call: Call[None]) -> web.StreamResponse:
        return json_response(user_out(await self._accounts.get_user(call.user.user_id), private=True))

    async def update(self, call: Call[ProfileIn]) -> web.StreamResponse:
        b = call.body
        user = await self._accounts.update_profile(
            call.user.user_id,
            display_name=b.display_name,
            bio=b.bio,
            email=b.email,
            current_password=b.current_password,
            new_password=b.new_password,
        )
        return json_response(user_out(user, private=True))

    async def _limit_keys(self, call: Call[None]) -> None:
        wait = await self._limiter.hit(f"stream-key:{call.user.user_id}", self._settings.rate_stream_key_per_hour, 3600)
        if wait:
            raise RateLimited(f"too many stream key requests; try again in {wait} s", retry_after=wait)

    def _whip_url(self, call: Call[None]) -> str:
        return f"{self._settings.resolved_public_url}/whip/{call.user.username}"

    async def show_stream_key(self, call: Call[None]) -> web.StreamResponse:
        await self._limit_keys(call)
        key = await self._channels.show_stream_key(call.user)
        return json_response(self._key_out(key, call), headers=NO_STORE)

    async def rotate_stream_key(self, call: Call[None]) -> web.StreamResponse:
        await self._limit_keys(call)
        key = await self._channels.rotate_stream_key(call.user)
        return json_response(self._key_out(key, call), status=201, headers=NO_STORE)

    def _key_out(self, key: StreamKey, call: Call[None]) -> StreamKeyOut:
        return stream_key_out(key, self._whip_url(call), self.rtmp_url, self._settings.resolved_rtmps_url)

    async def following(self, call: Call[None]) -> web.StreamResponse:
        views = await self._channels.following(call.user)
        base = self._settings.resolved_public_url
        return json_response(ChannelListOut(items=[channel_out(v, base, playback=self._settings.playback_order) for v in views], next_cursor=None))

    def endpoints(self) -> list[Endpoint]:
        broadcaster = Access(Role.BROADCASTER, "own channel only")
        return [
            Endpoint("GET", "/api/me", self.show, "Your own profile", SIGNED_IN, "me", response=UserOut,
                     errors=(401,)),
            Endpoint("PATCH", "/api/me", self.update,
                     "Change your profile; email and password changes need current_password",
                     SIGNED_IN, "me", body=ProfileIn, response=UserOut, errors=(401, 403, 409, 422)),
            Endpoint("GET", "/api/me/stream-key", self.show_stream_key,
                     "Your stream key's hint; the first call ever creates the key and shows it once",
                     broadcaster, "me", response=StreamKeyOut, errors=(401, 403, 429)),
            Endpoint("POST", "/api/me/stream-key", self.rotate_stream_key,
                     "Make a new stream key (the old one stops working) and show it once",
                     broadcaster, "me", response=StreamKeyOut, status=201, errors=(401, 403, 429)),
            Endpoint("GET", "/api/me/following", self.following, "Channels you follow, live ones first",
                     SIGNED_IN, "me", response=ChannelListOut, errors=(401,)),
        ]
