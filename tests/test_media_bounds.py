"""The media plane's bounds, against the real server and SFU with aiortc peers on loopback: sessions
that never connect, concurrent offers, trickle, NACK floods, viewer-count storms, OPTIONS with
credentials, a takeover in another codec, and counters that never go down."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCRtpSender

from signaling.app import SERVICES, create_app
from sfu.subscriber import Subscriber
from support import Api, FakeClock, make_settings
from test_simulcast import eventually
from test_whip_whep import FRAG, SDP, go_live, post_sdp, stream_key
from webrtc_peer import Peer

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Factory = Callable[..., Any]


@pytest.fixture
async def bounded(tmp_path: Any, database_url: str) -> AsyncIterator[Factory]:
    """Start the app with these settings (several per test at most); closed at the end."""
    clients: list[TestClient[Any, Any]] = []

    async def start(**overrides: Any) -> Api:
        settings = dict(webrtc_host_addresses=["127.0.0.1"], trust_forwarded_for=True, session_connect_timeout=1.5)
        settings.update(overrides)
        app = create_app(make_settings(tmp_path / f"app{len(clients)}", database_url, **settings), clock=FakeClock())
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Api(client, app[SERVICES], FakeClock())

    yield start
    for client in clients:
        await client.close()


async def offer_from(api: Api, path: str, sdp: str, address: str, token: str | None = None) -> tuple[int, Any, Any]:
    return await api.call("POST", path, data=sdp.encode(), token=token,
                          headers={"Content-Type": SDP, "X-Forwarded-For": address})


async def ghost_offer() -> str:
    """A viewer's offer without candidates and without end-of-candidates: ICE waits for candidates that
    never come (a client that vanished, or an attacker), so the session never connects by itself."""
    peer = Peer.viewer()
    sdp = await peer.offer()
    await peer.close()
    return "".join(line + "\r\n" for line in sdp.splitlines() if not line.startswith(("a=candidate", "a=end-of-candidates")))


def answer_ports(answer: bytes) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host", answer.decode())}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def metric(api: Api, name: str) -> float:
    _, body, _ = await api.call("GET", "/metrics")
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", body.decode(), re.M)
    assert match, name
    return float(match.group(1))


async def test_options_are_answered_whatever_credentials_come_along(bounded: Factory) -> None:
    api = await bounded()
    name, token = await api.user()
    key = await stream_key(api, token)
    for path in (f"/whip/{name}", f"/whep/{name}", f"/whip/{name}/some-session"):
        for authorization in (f"Bearer {key}", f"Bearer {token}", "Bearer not-a-token", "Basic dXNlcjpwYXNz"):
            status, _, headers = await api.call("OPTIONS", path, headers={
                "Authorization": authorization, "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert status == 204, (path, authorization)
            assert "PATCH" in headers["Access-Control-Allow-Methods"]
            assert headers["Accept-Post"] == SDP and headers["Accept-Patch"] == FRAG
            assert headers["Access-Control-Allow-Origin"] == "*"


async def test_offers_that_never_connect_are_ended_and_a_real_viewer_gets_in(bounded: Factory) -> None:
    api = await bounded(max_pending_per_client=4, max_pending_sessions=6, max_viewers_per_node=20)
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    node = api.services.node

    statuses, ports = [], set()
    for address in ["203.0.113.7"] * 5 + ["203.0.113.8"] * 3:
        status, body, _ = await offer_from(api, f"/whep/{name}", await ghost_offer(), address)
        statuses.append(status)
        if status == 201:
            ports |= answer_ports(body)
    # Four from one address, then 429; two more from another fill the node's six, then 503.
    assert statuses == [201] * 4 + [429] + [201] * 2 + [503], statuses
    assert node.stats()["pending"] == 6 and node.stats()["viewers"] == 0
    assert (await api.call("GET", f"/api/channels/{name}"))[1]["viewer_count"] == 0  # connecting is not watching
    status, _, headers = await offer_from(api, f"/whep/{name}", await Peer.viewer().offer(), "198.51.100.2")
    assert status == 503 and int(headers["Retry-After"]) > 0
    assert ports and not any(port_is_free(port) for port in ports)

    await eventually(lambda: node.stats()["pending"] == 0, timeout=5)  # session_connect_timeout 1.5 s
    assert all(port_is_free(port) for port in ports)  # their sockets are closed
    assert not [s for s in node.sessions.values() if isinstance(s, Subscriber)]

    viewer = Peer.viewer()
    status, answer, _ = await offer_from(api, f"/whep/{name}", await viewer.offer(), "198.51.100.2")
    assert status == 201
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10)
    await eventually(lambda: node.stats()["viewers"] == 1)
    await viewer.close()
    await publisher.close()


async def test_concurrent_offers_cannot_exceed_the_viewer_cap(bounded: Factory) -> None:
    api = await bounded(max_viewers_per_node=3, max_pending_sessions=50)
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    offers = [await Peer.viewer().offer() for _ in range(10)]
    results = await asyncio.gather(*(offer_from(api, f"/whep/{name}", sdp, f"198.51.100.{i}") for i, sdp in enumerate(offers)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * 3 + [503] * 7, statuses
    await publisher.close()


async def test_a_publisher_still_connecting_holds_no_viewer_place(bounded: Factory) -> None:
    """A publisher's offer holds a pending place on the node, never one of the viewers' places."""
    api = await bounded(max_viewers_per_node=1)
    name, token = await api.user()
    publisher = Peer.publisher("h264")
    status, _, _ = await offer_from(api, f"/whip/{name}", await publisher.offer(), "198.51.100.1",
                                    token=await stream_key(api, token))
    assert status == 201 and api.services.node.pending == 1  # its answer is never applied: it keeps connecting
    status, _, _ = await offer_from(api, f"/whep/{name}", await ghost_offer(), "198.51.100.2")
    assert status == 201  # the one viewer place
    status, _, _ = await offer_from(api, f"/whep/{name}", await ghost_offer(), "198.51.100.3")
    assert status == 503
    await publisher.close()


async def test_trickle_is_capped_per_session_and_rate_limited_per_client(bounded: Factory) -> None:
    api = await bounded(rate_trickle_per_minute=4)
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    status, _, headers = await offer_from(api, f"/whep/{name}", await ghost_offer(), "203.0.113.9")
    assert status == 201
    session, etag = headers["Location"], headers["ETag"]

    def candidates(first: int, count: int) -> str:
        return "a=mid:0\r\n" + "".join(f"a=candidate:{i} 1 udp 2130706431 192.0.2.{i % 250 + 1} {9000 + i} typ host\r\n"
                                       for i in range(first, first + count))

    patch = {"Content-Type": FRAG, "If-Match": etag, "X-Forwarded-For": "203.0.113.9"}
    status, _, _ = await api.call("PATCH", session, data=candidates(0, 60), headers=patch)
    assert status == 204
    status, problem, _ = await api.call("PATCH", session, data=candidates(60, 10), headers=patch)
    assert status == 422 and "64" in problem["detail"]  # the session has all it takes
    for _ in range(2):
        status, _, _ = await api.call("PATCH", session, data=candidates(0, 1), headers=patch)
    status, problem, headers = await api.call("PATCH", session, data=candidates(0, 1), headers=patch)
    assert status == 429 and int(headers["Retry-After"]) > 0
    await publisher.close()


async def test_a_nack_flood_costs_a_bounded_share_and_the_viewer_keeps_playing(bounded: Factory) -> None:
    api = await bounded()
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    viewer = Peer.viewer()
    status, answer, headers = await post_sdp(api, f"/whep/{name}", await viewer.offer())
    assert status == 201
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10)
    subscriber = api.services.node.session(headers["Location"].rsplit("/", 1)[1])
    assert isinstance(subscriber, Subscriber) and subscriber.video is not None
    down = subscriber.video
    receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
    await asyncio.sleep(1.5)  # a second of stream for the feed's bitrate, and packets to ask for again

    before, frames_before = down.retransmitted, viewer.frames
    started = asyncio.get_running_loop().time()
    for _ in range(50):  # 50 NACKs of 986 packets each (a 248-byte NACK), within a second
        newest = down._rewriter._last_out_seq & 0xFFFF
        await receiver._send_rtcp_nack(down.ssrc, sorted((newest - i) & 0xFFFF for i in range(986)))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    elapsed = asyncio.get_running_loop().time() - started
    resent = down.retransmitted - before
    budget_bytes = max(32_000, 0.5 * down.feed.bitrate / 8) * (elapsed + 1.0)
    assert resent * 1200 > 0  # something was repaired...
    assert resent <= budget_bytes / 100, (resent, budget_bytes)  # ...within the budget (packets of 100+ bytes)
    assert down.nacks_refused > 10 * resent  # the rest of what it asked for again (still cached) was refused
    assert viewer.frames >= frames_before + 10  # it kept playing meanwhile
    await viewer.close()
    await publisher.close()


async def test_a_join_storm_is_one_viewer_count_per_second(bounded: Factory) -> None:
    api = await bounded()
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    events = await api.services.bus.subscribe("stream.viewers")
    viewers = [Peer.viewer() for _ in range(6)]
    offers = [await v.offer() for v in viewers]
    answers = await asyncio.gather(*(offer_from(api, f"/whep/{name}", sdp, f"198.51.100.{i}") for i, sdp in enumerate(offers)))
    for viewer, (status, answer, _) in zip(viewers, answers):
        assert status == 201
        await viewer.answer(answer.decode())
    await asyncio.gather(*(v.wait_frames(3) for v in viewers))
    counts = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.5
    while loop.time() < deadline:
        try:
            message = await asyncio.wait_for(events.get(), deadline - loop.time())
        except asyncio.TimeoutError:
            break
        counts.append(message.payload["viewers"])
    assert counts and counts[-1] == 6 and len(counts) <= 4, counts  # not one per join (and one per leave)
    for viewer in viewers:
        await viewer.close()
    await events.close()
    await publisher.close()


async def test_a_publisher_back_in_another_codec_starts_a_new_stream_and_counters_never_go_down(bounded: Factory) -> None:
    api = await bounded(publisher_timeout=6.0)
    name, token = await api.user()
    key = await stream_key(api, token)
    events = await api.services.bus.subscribe("stream.started", "stream.ended")
    first, _ = await go_live(api, name, key, codec="h264")
    started = await asyncio.wait_for(events.get(), 5)
    viewer = Peer.viewer()
    status, answer, _ = await post_sdp(api, f"/whep/{name}", await viewer.offer())
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10)
    sent_before = await metric(api, "tally_sfu_packets_out_total")
    assert sent_before > 0

    await first.close()  # gone without DELETE; it comes back in VP8 once the old connection is silent
    await asyncio.sleep(api.services.node.settings.takeover_after + 0.3)
    second, _ = await go_live(api, name, key, codec="vp8")
    ended = await asyncio.wait_for(events.get(), 5)
    restarted = await asyncio.wait_for(events.get(), 5)
    assert ended.topic == "stream.ended" and ended.payload["stream"] == started.payload["stream"]
    assert restarted.topic == "stream.started" and restarted.payload["codecs"] == {"video": "VP8"}
    assert restarted.payload["stream"] != started.payload["stream"]  # a new recording, a new ladder
    # The H.264 viewer cannot follow: its session ended; and what it was sent is still counted.
    assert api.services.node.stats()["viewers"] == 0
    assert await metric(api, "tally_sfu_packets_out_total") >= sent_before
    await viewer.close()
    await second.close()
    await events.close()


async def test_a_publisher_is_told_the_bitrate_ceiling_and_ended_when_it_keeps_above_it(bounded: Factory) -> None:
    api = await bounded(max_publish_bitrate=40_000)  # far below what the test clip sends
    name, token = await api.user()
    events = await api.services.bus.subscribe("stream.ended")
    publisher = Peer.publisher("h264", audio=True)
    status, answer, _ = await post_sdp(api, f"/whip/{name}", await publisher.offer(), await stream_key(api, token))
    assert status == 201
    video = answer.decode().split("m=video", 1)[1]
    assert "b=AS:40\r\n" in video and "b=TIAS:40000\r\n" in video  # RFC 4566 / RFC 3890, in the video section
    await publisher.answer(answer.decode())
    ended = await asyncio.wait_for(events.get(), 15)  # about five seconds above 1.5 times the ceiling
    assert "above the ceiling of 40 kbit/s" in ended.payload["reason"], ended.payload
    await publisher.close()
    await events.close()


class WideProtect:
    """A publisher-side SRTP session that protects RTP packets up to a full datagram (pylibsrtp's own
    stops at 1,356 bytes): the test publisher then packetises as GStreamer does, at a 1,400-byte MTU."""

    def __init__(self, session: Any) -> None:
        from sfu.aiortc_internals import srtp_ffi, srtp_protect

        self._session, self._protect = session, srtp_protect
        self._buffer = srtp_ffi.new("char[]", 2048)
        self._view = srtp_ffi.buffer(self._buffer)
        self._length = srtp_ffi.new("int *")
        self.largest = 0

    def protect(self, packet: bytes) -> bytes:
        self._view[0 : len(packet)] = packet
        self._length[0] = len(packet)
        assert self._protect(self._session._srtp[0], self._buffer, self._length) == 0
        self.largest = max(self.largest, self._length[0])
        return bytes(self._view[0 : self._length[0]])

    def protect_rtcp(self, packet: bytes) -> bytes:
        return bytes(self._session.protect_rtcp(packet))


async def test_packets_filling_a_whole_datagram_are_forwarded_whole(bounded: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiortc.codecs.h264

    from media_clips import EncodedVideoTrack, encode_video

    api = await bounded()
    name, token = await api.user()
    publisher = Peer()
    gop = 30
    transceiver = publisher.pc.addTransceiver(
        EncodedVideoTrack(encode_video("h264", frames=90, bitrate=3_000_000, gop=gop, noise=True), gop=gop), direction="sendonly")
    transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                     if c.mimeType.lower() in ("video/h264", "video/rtx")])
    status, answer, _ = await post_sdp(api, f"/whip/{name}", await publisher.offer(), await stream_key(api, token))
    assert status == 201
    await publisher.answer(answer.decode())
    dtls = publisher.pc.getTransceivers()[0].sender.transport
    await eventually(lambda: dtls._tx_srtp is not None, what="the publisher's DTLS")
    wide = dtls._tx_srtp = WideProtect(dtls._tx_srtp)
    monkeypatch.setattr(aiortc.codecs.h264, "PACKET_MAX", 1440)  # RTP of ~1,480 bytes: 1,490 once protected

    viewer = Peer.viewer()
    status, answer, _ = await post_sdp(api, f"/whep/{name}", await viewer.offer())
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10, timeout=15)
    track = transceiver.sender.track
    decoded, sent = viewer.frames, track._index
    await asyncio.sleep(4.0)
    decoded, sent = viewer.frames - decoded, track._index - sent
    assert wide.largest > 1450  # the publisher really sent datagrams of ~1,500 bytes
    assert decoded >= 0.85 * sent and sent > 30, (decoded, sent)  # and the viewer decoded (nearly) every picture
    assert api.services.node.stats()["dropped_too_large"] == 0
    await viewer.close()
    await publisher.close()


async def test_a_refused_ice_restart_changes_nothing(bounded: Factory) -> None:
    api = await bounded()
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    viewer = Peer.viewer()
    status, answer, headers = await post_sdp(api, f"/whep/{name}", await viewer.offer())
    await viewer.answer(answer.decode())
    await viewer.wait_frames(5)
    session, etag = headers["Location"], headers["ETag"]
    restart = "a=ice-ufrag:wxyz\r\na=ice-pwd:" + "q" * 22 + "\r\na=mid:0\r\n"
    too_many = restart + "".join(f"a=candidate:{i} 1 udp 2130706431 192.0.2.1 {9000 + i} typ host\r\n" for i in range(65))
    malformed = restart + "a=candidate:1 1 udp 2130706431 192.0.2.1 9000 typ host\r\na=candidate:x 1 udp nope 1 2 3 4\r\n"
    for body, expected in ((too_many, 400), (malformed, 400)):  # more than a PATCH may carry; a bad one
        status, _, _ = await api.call("PATCH", session, data=body, headers={"Content-Type": FRAG, "If-Match": "*"})
        assert status == expected
    # Still the session's first ETag (a restart would have made a new one) and its credentials: it plays on.
    status, _, _ = await api.call("PATCH", session, data="a=mid:0\r\na=end-of-candidates\r\n",
                                  headers={"Content-Type": FRAG, "If-Match": etag})
    assert status == 204
    before = viewer.frames
    await asyncio.sleep(1.0)
    assert viewer.frames > before + 10
    await viewer.close()
    await publisher.close()


async def test_a_peer_that_is_the_dtls_client_connects_and_nothing_of_it_is_refused(bounded: Factory) -> None:
    """An offer with a=setup:active (FFmpeg's WHIP muxer, some players): the peer is the DTLS client and
    sends its ClientHello as soon as its own ICE check succeeds, maybe before the server nominated the
    pair. The server's socket guard must take it as the peer's (it refuses datagrams from strangers)."""
    api = await bounded()
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    viewer = Peer.viewer()
    offer = (await viewer.offer()).replace("a=setup:actpass", "a=setup:active")
    status, answer, _ = await post_sdp(api, f"/whep/{name}", offer)
    assert status == 201 and "a=setup:passive" in answer.decode()
    await viewer.answer(answer.decode())
    await viewer.wait_frames(10)
    assert api.services.node.stats()["foreign_datagrams"] == 0
    await viewer.close()
    await publisher.close()


async def test_a_closed_session_is_freed_without_waiting_for_a_full_garbage_collection(bounded: Factory) -> None:
    """`tally serve` runs full collections rarely (signaling/cli.py); a session that came and went must be
    freed by reference counting alone, or memory grows with every viewer (loadtest/soak.py)."""
    import gc
    import weakref

    api = await bounded()
    name, token = await api.user()
    publisher, _ = await go_live(api, name, await stream_key(api, token))
    node = api.services.node
    gc.collect()
    gc.disable()
    try:
        refs = []
        for polite in (True, False):
            viewer = Peer.viewer()
            status, answer, headers = await post_sdp(api, f"/whep/{name}", await viewer.offer())
            await viewer.answer(answer.decode())
            await viewer.wait_frames(3)
            session = node.session(headers["Location"].rsplit("/", 1)[1])
            refs += [weakref.ref(session), weakref.ref(session.pc)]
            del session
            if polite:
                assert (await api.call("DELETE", headers["Location"]))[0] == 200
            else:  # it vanishes: the server gives it up itself (as after SUBSCRIBER_TIMEOUT)
                await node.end(headers["Location"].rsplit("/", 1)[1], "no feedback from the viewer")
            await viewer.close()
        await eventually(lambda: node.closing == 0, what="the sessions closed")
        await asyncio.sleep(0.1)
        assert [ref() for ref in refs] == [None] * len(refs)
    finally:
        gc.enable()
    await publisher.close()
