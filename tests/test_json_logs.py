"""`LOG_FORMAT=json` on the real server: every line of its log is one JSON object, and the lines of a WHIP
publish and a WHEP play carry the request id (the client's `X-Request-Id`, echoed back), the user, the
channel, the stream, the session and the node. A request without a sane id gets a new one."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from http_client import SDP, Client
from server_process import serve
from webrtc_peer import Peer


async def _post_sdp(http: aiohttp.ClientSession, url: str, offer: str, token: str | None,
                    request_id: str) -> tuple[int, str, str]:
    headers = {"Content-Type": SDP, "X-Request-Id": request_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=offer, headers=headers) as response:
        return response.status, await response.text(), response.headers.get("X-Request-Id", "")


def _lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, or this fails
    assert all({"time", "level", "logger", "message", "node"} <= set(entry) for entry in parsed), parsed[:3]
    return parsed


async def test_json_logs_carry_the_request_user_channel_stream_session_and_node_ids(tmp_path: Path) -> None:
    with serve(tmp_path, LOG_FORMAT="json", LOG_LEVEL="INFO", NODE_ID="node-a") as server:
        async with aiohttp.ClientSession() as http:
            client = Client(http, server.url)
            await client.admin("boss")
            key = await client.broadcaster("caster")
            await client.broadcaster("fan")
            _, login = await client.call("POST", "/api/auth/login", {"username": "fan", "password": "correct horse"})
            publisher, viewer = Peer.publisher("h264", audio=True), Peer.viewer()
            try:
                status, answer, echoed = await _post_sdp(http, f"{server.url}/whip/caster", await publisher.offer(), key,
                                                         "publish-1")
                assert status == 201 and echoed == "publish-1", answer
                await publisher.answer(answer)
                for _ in range(100):  # until the publisher has connected (409 before)
                    status, answer, echoed = await _post_sdp(http, f"{server.url}/whep/caster", await viewer.offer(),
                                                             login["access_token"], "play-1")
                    if status != 409:
                        break
                    await viewer.close()
                    viewer = Peer.viewer()
                    await asyncio.sleep(0.1)
                assert status == 201 and echoed == "play-1", answer
                await viewer.answer(answer)
                await viewer.wait_frames(5)
                # No id, or one that could forge log lines: a new one.
                async with http.get(f"{server.url}/api/channels/caster") as response:
                    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
                async with http.get(f"{server.url}/api/channels/caster", headers={"X-Request-Id": "a\"b"}) as response:
                    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
                async with http.get(f"{server.url}/nowhere", headers={"X-Request-Id": "lost-1"}) as response:
                    assert response.status == 404 and response.headers["X-Request-Id"] == "lost-1"  # errors too
            finally:
                await publisher.close()
                await viewer.close()
    entries = _lines(server.log)
    assert {e["node"] for e in entries} == {"node-a"}

    published = [e for e in entries if e.get("request_id") == "publish-1"]
    said = next(e for e in published if e["message"] == "whip: caster publishes to caster")
    assert said["user"] == "caster" and said["channel"] == "caster" and said["session"], said
    started = next(e for e in entries if e["message"].startswith("room caster: stream "))
    assert started["stream"] and started["stream"] in started["message"], started
    assert started.get("request_id") == "publish-1" and started["channel"] == "caster", started  # what the request began

    played = [e for e in entries if e.get("request_id") == "play-1"]
    said = next(e for e in played if e["message"] == "whep: a viewer of caster")
    assert said["user"] == "fan" and said["channel"] == "caster" and said["stream"] == started["stream"], said
    assert said["session"] and said["session"] != next(e for e in published if e.get("session"))["session"]
    # Lines outside any request carry none of a request's ids.
    assert any("request_id" not in e and "Tallylight signaling ready" in e["message"] for e in entries)
