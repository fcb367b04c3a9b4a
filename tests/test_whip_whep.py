"""WHIP (RFC 9725) and WHEP against the real server and SFU, with real aiortc peers on loopback:
every status code and header the issue names, and the stream's life in the database and on the bus."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from signaling.app import SERVICES
from signaling.db.models import StreamSession
from support import Api
from webrtc_peer import Peer

SDP = "application/sdp"
FRAG = "application/trickle-ice-sdpfrag"


@pytest.fixture
async def rtc(app_factory: Callable[..., web.Application], clock: Any) -> AsyncIterator[Api]:
    app = app_factory(
        webrtc_host_addresses=["127.0.0.1"],
        publisher_timeout=1.5,
        max_viewers_per_node=2,
        ice_servers='[{"urls": "stun:stun.tally.test:3478"}, {"urls": "turn:turn.tally.test:3478?transport=udp", "username": "u", "credential": "p"}]',
    )
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def stream_key(api: Api, token: str) -> str:
    status, body, _ = await api.call("GET", "/api/me/stream-key", token=token)
    assert status == 200
    return str(body["key"])


async def post_sdp(api: Api, path: str, sdp: str, token: str | None = None, content_type: str = SDP) -> tuple[int, Any, Any]:
    return await api.call("POST", path, data=sdp.encode(), token=token, headers={"Content-Type": content_type})


async def go_live(api: Api, name: str, key: str, codec: str = "h264", audio: bool = False) -> tuple[Peer, Any]:
    peer = Peer.publisher(codec, audio=audio)
    status, body, headers = await post_sdp(api, f"/whip/{name}", await peer.offer(), key)
    assert status == 201, body
    await peer.answer(body.decode())
    return peer, headers


async def until(predicate: Callable[[], Any], timeout: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_options_advertise_sdp_cors_and_ice_servers(rtc: Api) -> None:
    name, _ = await rtc.user()
    for path in (f"/whip/{name}", f"/whep/{name}", f"/whip/{name}/abc"):
        status, _, headers = await rtc.call("OPTIONS", path)
        assert status == 204
        assert headers["Accept-Post"] == SDP and headers["Accept-Patch"] == FRAG
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "PATCH" in headers["Access-Control-Allow-Methods"]
        assert {"Authorization", "Content-Type", "If-Match"} <= {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {"Location", "ETag", "Link"} <= {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
        links = headers.getall("Link")
        assert '<stun:stun.tally.test:3478>; rel="ice-server"' in links
        assert any('rel="ice-server"; username="u"; credential="p"; credential-type="password"' in link for link in links)


async def test_whip_refuses_bad_credentials_and_bad_offers(rtc: Api) -> None:
    name, token = await rtc.user()
    other, other_token = await rtc.user()
    viewer, viewer_token = await rtc.user("viewer")
    key = await stream_key(rtc, token)
    other_key = await stream_key(rtc, other_token)
    offer = await Peer.publisher().offer()
    cases = [
        (f"/whip/{name}", None, SDP, offer, 401),
        (f"/whip/{name}", "not-a-token", SDP, offer, 401),
        (f"/whip/{name}", "tlsk_" + "x" * 40, SDP, offer, 401),
        (f"/whip/{name}", other_key, SDP, offer, 403),
        (f"/whip/{name}", other_token, SDP, offer, 403),
        (f"/whip/{viewer}", viewer_token, SDP, offer, 403),
        ("/whip/nobody_here", key, SDP, offer, 403),
        (f"/whip/{name}", key, "text/plain", offer, 415),
        (f"/whip/{name}", key, SDP, "v=0\r\nthis is not sdp", 400),
        (f"/whip/{name}", key, SDP, "hello", 400),
        (f"/whip/{name}", key, SDP, offer.replace("a=sendonly", "a=recvonly"), 400),
        (f"/whip/{name}", key, SDP, offer.replace("a=rtcp-mux\r\n", ""), 400),
        (f"/whip/{name}", key, SDP, offer.replace("a=ice-pwd:", "a=x-ice-pwd:"), 400),
        (f"/whip/{name}", key, SDP, offer + "a=x:" + "y" * 70_000 + "\r\n", 413),
        (f"/whip/{name}", key, SDP, offer.replace("H264", "H265"), 422),
    ]
    for path, bearer, content_type, body, expected in cases:
        status, problem, headers = await post_sdp(rtc, path, body, bearer, content_type)
        assert status == expected, (path, bearer and bearer[:8], content_type, expected, problem)
        assert headers["Content-Type"].startswith("application/problem+json") and problem["status"] == expected
        assert headers["Access-Control-Allow-Origin"] == "*"
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["is_live"] is False and rtc.services.node.stats()["rooms"] == 0
    status, _, _ = await rtc.call("POST", "/api/me/stream-key", token=token)  # rotate: the old key dies
    status, _, _ = await post_sdp(rtc, f"/whip/{name}", offer, key)
    assert status == 401


async def test_publish_watch_patch_and_delete(rtc: Api) -> None:
    name, token = await rtc.user()
    key = await stream_key(rtc, token)
    events = await rtc.services.bus.subscribe("stream.started", "stream.ended", "stream.viewers")

    status, problem, headers = await post_sdp(rtc, f"/whep/{name}", await Peer.viewer().offer())
    assert status == 409 and headers["Retry-After"] and problem["status"] == 409  # not live yet

    publisher, whip = await go_live(rtc, name, key)
    assert whip["Content-Type"].startswith(SDP)
    location, etag = whip["Location"], whip["ETag"]
    assert location.startswith(f"/whip/{name}/") and len(location.rsplit("/", 1)[1]) >= 24
    assert etag.startswith('"') and etag.endswith('"') and etag != '"*"'
    started = await asyncio.wait_for(events.get(), 5)
    assert started.topic == "stream.started" and started.payload["channel"] == name
    assert started.payload["codecs"] == {"video": "H264"}
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["is_live"] is True

    second = Peer.publisher()
    status, problem, headers = await post_sdp(rtc, f"/whip/{name}", await second.offer(), token)
    assert status == 409 and int(headers["Retry-After"]) >= 1  # one publisher at a time
    await second.close()

    viewer = Peer.viewer()
    status, answer, whep = await post_sdp(rtc, f"/whep/{name}", await viewer.offer(), token)
    assert status == 201 and whep["Location"].startswith(f"/whep/{name}/")
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10)  # decoded by the viewer: forwarded intact
    for _ in range(100):  # frames re-assembled on the loop (not in a thread) reach the frame sinks
        if rtc.services.node.stats()["frames_to_sinks"]:
            break
        await asyncio.sleep(0.05)
    assert rtc.services.node.stats()["frames_to_sinks"] > 0
    joined = await asyncio.wait_for(events.get(), 5)
    assert joined.topic == "stream.viewers" and joined.payload["viewers"] == 1
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["viewer_count"] == 1

    # PATCH: preconditions first, then trickle (204) and an ICE restart (200, new ETag).
    session = whep["Location"]
    candidate = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
    status, _, _ = await rtc.call("PATCH", session, data=candidate, headers={"Content-Type": FRAG})
    assert status == 428
    status, _, _ = await rtc.call("PATCH", session, data=candidate, headers={"Content-Type": FRAG, "If-Match": '"stale"'})
    assert status == 412
    status, _, _ = await rtc.call("PATCH", session, data=candidate, headers={"Content-Type": SDP, "If-Match": whep["ETag"]})
    assert status == 415
    status, _, _ = await rtc.call("PATCH", session, data="garbage line", headers={"Content-Type": FRAG, "If-Match": whep["ETag"]})
    assert status == 400
    status, body, _ = await rtc.call("PATCH", session, data=candidate, headers={"Content-Type": FRAG, "If-Match": whep["ETag"]})
    assert status == 204 and body == b""
    restart = "a=ice-ufrag:abcd\r\na=ice-pwd:" + "p" * 22 + "\r\n" + candidate
    status, body, headers = await rtc.call("PATCH", session, data=restart, headers={"Content-Type": FRAG, "If-Match": "*"})
    assert status == 200 and headers["Content-Type"].startswith(FRAG)
    assert headers["ETag"] != whep["ETag"] and "a=ice-ufrag:" in body.decode() and "a=candidate:" in body.decode()
    status, _, _ = await rtc.call("PATCH", session, data=candidate, headers={"Content-Type": FRAG, "If-Match": whep["ETag"]})
    assert status == 412  # the old ETag is stale after a restart
    status, _, _ = await rtc.call("PATCH", f"/whep/{name}/nope", data=candidate, headers={"Content-Type": FRAG, "If-Match": "*"})
    assert status == 404
    status, _, _ = await rtc.call("DELETE", session.replace("/whep/", "/whip/"))
    assert status == 404  # a WHEP session is not a WHIP one

    status, _, _ = await rtc.call("DELETE", session)
    assert status == 200
    left = await asyncio.wait_for(events.get(), 5)
    assert left.topic == "stream.viewers" and left.payload["viewers"] == 0
    status, _, _ = await rtc.call("DELETE", session)
    assert status == 404

    status, _, _ = await rtc.call("DELETE", location)
    assert status == 200
    ended = await asyncio.wait_for(events.get(), 5)
    assert ended.topic == "stream.ended" and ended.payload["reason"] == "ended by the client"
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["is_live"] is False and channel["viewer_count"] == 0
    async with rtc.services.db.session() as db:
        record = (await db.scalars(select(StreamSession))).one()
    assert record.ended_at is not None and record.peak_viewers == 1 and record.video_codec == "H264"
    await viewer.close()
    await publisher.close()
    # Every receiver's idle decoder thread ended with its connection (a stuck one would hang the loop).
    assert not [thread for thread in threading.enumerate() if thread.name.endswith("-decoder")]
    await events.close()


async def test_a_vanished_publisher_ends_the_stream_and_a_full_node_says_503(rtc: Api) -> None:
    name, token = await rtc.user()
    key = await stream_key(rtc, token)
    publisher, _ = await go_live(rtc, name, key, codec="vp8")
    viewers = []
    for _ in range(2):
        viewer = Peer.viewer()
        status, answer, _ = await post_sdp(rtc, f"/whep/{name}", await viewer.offer())
        assert status == 201
        await viewer.answer(answer.decode())
        viewers.append(viewer)
    await viewers[0].wait_frames(5)
    status, problem, headers = await post_sdp(rtc, f"/whep/{name}", await Peer.viewer().offer())
    assert status == 503 and int(headers["Retry-After"]) > 0  # max_viewers_per_node=2: the page falls back

    await publisher.close()  # gone without DELETE: no media for publisher_timeout ends the stream

    async def offline() -> bool:
        return (await rtc.call("GET", f"/api/channels/{name}"))[1]["is_live"] is False

    await until(offline)
    assert rtc.services.node.stats()["viewers"] == 0
    for viewer in viewers:
        await viewer.close()



async def test_an_audio_only_player_gets_just_the_audio(rtc: Api) -> None:
    name, token = await rtc.user()
    publisher, _ = await go_live(rtc, name, await stream_key(rtc, token), audio=True)
    listener = Peer()
    listener.pc.addTransceiver("audio", direction="recvonly")
    status, answer, _ = await post_sdp(rtc, f"/whep/{name}", await listener.offer())
    assert status == 201, answer
    sections = [line for line in answer.decode().splitlines() if line.startswith("m=")]
    assert len(sections) == 1 and sections[0].startswith("m=audio")
    await listener.answer(answer.decode())
    await until(lambda: _connected(listener))
    await listener.close()
    await publisher.close()


async def _connected(peer: Peer) -> bool:
    return peer.pc.connectionState == "connected"


async def test_hls_players_count_among_the_viewers(rtc: Api) -> None:
    name, token = await rtc.user()
    key = await stream_key(rtc, token)
    path = f"/api/channels/{name}/watching"
    session = {"session": "player-" + "a" * 16}
    status, problem, _ = await rtc.call("POST", path, session)
    assert status == 409 and "not live" in problem["detail"]  # nothing to watch yet
    assert (await rtc.call("POST", "/api/channels/nobody_at_all/watching", session))[0] == 404
    for bad in ({"session": "short"}, {"session": "x" * 65}, {"session": "a b" * 8}, {}, {"session": 7}):
        status, problem, _ = await rtc.call("POST", path, bad)
        assert status == 422, (bad, problem)

    publisher, _ = await go_live(rtc, name, key)

    async def live() -> bool:
        return bool((await rtc.call("GET", f"/api/channels/{name}"))[1]["is_live"])

    await until(live)
    events = await rtc.services.bus.subscribe("stream.viewers")
    status, body, _ = await rtc.call("POST", path, session)
    assert status == 200 and body == {"hls_viewers": 1}
    told = await asyncio.wait_for(events.get(), 5)  # the channel's pages hear of a new viewer at once
    assert told.payload == {"channel": name, "stream": "", "viewers": 1}
    assert (await rtc.call("POST", path, session))[1] == {"hls_viewers": 1}  # the same player again
    rtc.clock.advance(1.1)  # newcomers are told (and the peak kept) at most once a second per channel
    assert (await rtc.call("POST", path, {"session": "player-" + "b" * 16}))[1] == {"hls_viewers": 2}
    assert (await asyncio.wait_for(events.get(), 5)).payload["viewers"] == 2
    assert (await rtc.call("POST", path, {"session": "player-" + "c" * 16, "leaving": True}))[1] == {"hls_viewers": 2}
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["viewer_count"] == 2 and channel["hls_viewers"] == 2
    status, directory, _ = await rtc.call("GET", "/api/channels?live=true")
    assert [c["hls_viewers"] for c in directory["items"] if c["name"] == name] == [2]
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["viewer_count"] == 2
    leaving = {"session": "player-" + "b" * 16, "leaving": True}  # b stops (or moves to WebRTC)
    assert (await rtc.call("POST", path, leaving))[1] == {"hls_viewers": 1}
    rtc.clock.advance(30)  # a fell silent
    status, channel, _ = await rtc.call("GET", f"/api/channels/{name}")
    assert channel["viewer_count"] == 0 and channel["hls_viewers"] == 0
    status, streams, _ = await rtc.call("GET", f"/api/channels/{name}/streams")
    assert status == 200 and len(streams["items"]) == 1
    live_stream = streams["items"][0]
    assert live_stream["ended_at"] is None and live_stream["peak_viewers"] == 2  # the HLS viewers at their most
    await publisher.close()

    async def ended() -> bool:
        return (await rtc.call("GET", f"/api/channels/{name}/streams?limit=1"))[1]["items"][0]["ended_at"] is not None

    await until(ended)
    assert (await rtc.call("GET", f"/api/channels/{name}/streams?limit=0"))[0] == 422
    assert (await rtc.call("GET", "/api/channels/nobody_at_all/streams"))[0] == 404
