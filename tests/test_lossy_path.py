"""A lossy network between real peers and the real server: 2 % of datagrams dropped, delayed and
reordered each way, between the publisher and the server and between a viewer and the server (a relay
of the test's own, `udp_impairment`). The viewer behind the lossy link keeps decoding about as well as
one on a clean link, and the recording decodes with no error at all: the server repairs what it can
(NACKs upstream, retransmissions downstream) and never writes a frame it does not have whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from media_probe import decode_errors, probe
from signaling.app import SERVICES
from support import Api, FakeClock
from test_recordings import download, wait_state
from test_whip_whep import post_sdp, stream_key
from udp_impairment import Impairment, LossyRelay
from sfu.subscriber import Subscriber
from webrtc_peer import Peer

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

SECONDS = 15.0


@pytest.fixture
async def lossy(app_factory: Callable[..., web.Application], clock: FakeClock) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], publisher_timeout=3.0)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def connect(api: Api, peer: Peer, path: str, token: str | None, relay: LossyRelay | None) -> str:
    offer = await peer.offer()
    status, body, headers = await post_sdp(api, path, relay.offer(offer) if relay else offer, token)
    assert status == 201, body
    answer = body.decode()
    await peer.answer(relay.answer(answer) if relay else answer)
    return str(headers["Location"])


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_at_two_percent_loss_viewers_keep_decoding_and_the_recording_has_no_error(
        lossy: Api, tmp_path: Path, codec: str) -> None:
    name, token = await lossy.user()
    status, _, _ = await lossy.call("PATCH", f"/api/channels/{name}", {"record_streams": True}, token=token)
    assert status == 200
    upstream, downstream = LossyRelay(Impairment(), seed=1), LossyRelay(Impairment(), seed=2)
    await upstream.start()
    await downstream.start()
    publisher, lossy_viewer, clean_viewer = Peer.publisher(codec, audio=True), Peer.viewer(), Peer.viewer()
    try:
        session = await connect(lossy, publisher, f"/whip/{name}", await stream_key(lossy, token), upstream)
        await connect(lossy, lossy_viewer, f"/whep/{name}", None, downstream)
        await connect(lossy, clean_viewer, f"/whep/{name}", None, None)
        await lossy_viewer.wait_frames(5, timeout=15)
        await clean_viewer.wait_frames(5, timeout=15)
        lossy_start, clean_start = lossy_viewer.frames, clean_viewer.frames
        await asyncio.sleep(SECONDS)
        lossy_frames, clean_frames = lossy_viewer.frames - lossy_start, clean_viewer.frames - clean_start
        stats = lossy.services.node.stats()
        downtracks = [(d.feed.kind, d.packets, d.retransmitted, d.nacks_refused, round(d.rtt or 0, 3), d.keyframe_waits)
                      for s in lossy.services.node.sessions.values() if isinstance(s, Subscriber) for d in s.downtracks]
        waiting = _jitter_buffer(lossy_viewer)
        print(f"down tracks (kind, sent, re-sent, refused, rtt, keyframe waits): {downtracks}")
        status, _, _ = await lossy.call("DELETE", session, token=token)
        assert status == 200
    finally:
        for peer in (publisher, lossy_viewer, clean_viewer):
            await peer.close()
        upstream.close()
        downstream.close()

    # Both links really lost packets, and the server repaired them both ways.
    assert upstream.impairment.counts["dropped"] > 20 and downstream.impairment.counts["dropped"] > 20
    assert stats["retransmitted"] > 0
    # The viewer behind the lossy link kept decoding about as well as the one on a clean link (both
    # decode in this process, so a busy machine slows them alike: the comparison is what counts).
    assert clean_frames >= 5 * SECONDS, clean_frames
    assert lossy_frames >= 0.85 * clean_frames, (lossy_frames, clean_frames, downtracks, waiting)

    status, listing, _ = await lossy.call("GET", f"/api/channels/{name}/recordings")
    ready = await wait_state(lossy, listing["items"][0]["id"], "ready")
    recording = await download(lossy, ready["playback_url"], tmp_path / "recording.mp4")
    assert decode_errors(recording) == ""
    assert probe(recording).duration >= SECONDS - 2


def _jitter_buffer(peer: Peer) -> tuple[int | None, list[int]]:
    """The viewer's video jitter buffer: the sequence number it waits on and those it holds (aiortc's
    waits for a missing packet until 512 have piled up behind it)."""
    receiver = next(t.receiver for t in peer.pc.getTransceivers() if t.kind == "video")
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    return buffer._origin, sorted(p.sequence_number for p in buffer._packets if p is not None)[:8]
