"""A client of a running server over real HTTP (aiohttp), for tests that start `tally serve` processes."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from webrtc_peer import Peer

SDP = "application/sdp"


class Client:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   sdp: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if sdp is not None:
            headers["Content-Type"] = SDP
        async with self.http.request(method, self.url + path, json=body, data=sdp, headers=headers) as response:
            if response.content_type == SDP:
                return response.status, await response.text()
            raw = await response.read()
            return response.status, (await response.json(content_type=None)) if raw and "json" in response.content_type else raw

    async def broadcaster(self, name: str) -> str:
        status, _ = await self.call("POST", "/api/auth/register",
                                    {"username": name, "email": f"{name}@example.com", "password": "correct horse"})
        assert status == 201
        status, login = await self.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"})
        status, key = await self.call("GET", "/api/me/stream-key", token=login["access_token"])
        return str(key["key"])

    async def connect(self, peer: Peer, path: str, token: str | None = None) -> str:
        status, answer = await self.call("POST", path, token=token, sdp=await peer.offer())
        assert status == 201, answer
        await peer.answer(answer)
        return str(answer)

    async def metric(self, name: str) -> float:
        _, body = await self.call("GET", "/metrics")
        match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", body.decode(), re.M)
        return float(match.group(1)) if match else 0.0

    async def admin(self, name: str) -> str:
        """Sign up `name` (the first account of a fresh installation administers it); its access token."""
        await self.broadcaster(name)
        status, login = await self.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"})
        assert status == 200, login
        return str(login["access_token"])
