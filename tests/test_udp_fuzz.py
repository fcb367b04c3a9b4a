"""A minute of hostile datagrams at a real server's media ports while a viewer watches.

The server runs as its own process (`tally serve`). From a socket of its own the fuzzer sends random
and mutated STUN, DTLS, RTP and RTCP at every UDP port the server's sessions listen on; a hostile
viewer sends mutated RTCP, and a hostile publisher mutated RTP, inside their own authenticated SRTP
sessions (so the parsers behind the crypto get them too). Meanwhile a real viewer must keep decoding,
the server's memory and open files stay flat, its log stays readable (a few warnings, never a
traceback per datagram) and /metrics counts what was refused.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fuzz_datagrams import any_datagram, rtcp_packet, rtp_packet
from http_client import Client
from server_process import ServerProcess, serve
from webrtc_peer import Peer

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("TALLY_FUZZ_SECONDS", "60"))


def ports(answer: str) -> list[int]:
    return [int(p) for p in re.findall(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host", answer)]


def dtls_of(peer: Peer) -> Any:
    return peer.pc.getTransceivers()[0].receiver.transport


async def hostile_rtp(peer: Peer, rng: random.Random, count: int) -> None:
    """Mutated packets through the peer's own SRTP session: they pass the server's authentication, and
    most RTP carries the peer's own SSRC and payload types (sequence numbers and timestamps anywhere)."""
    transport = dtls_of(peer)
    senders = [t.sender for t in peer.pc.getTransceivers() if t.sender.track is not None]
    ssrcs = tuple(s._ssrc for s in senders)
    payload_types = tuple(int(pt) for pt in re.findall(r"a=rtpmap:(\d+) ", peer.pc.remoteDescription.sdp)) or (96,)
    server_ssrcs = tuple(int(ssrc) for ssrc in re.findall(r"a=ssrc:(\d+) ", peer.pc.remoteDescription.sdp))
    for _ in range(count):  # feedback (NACK, PLI, REMB) about the server's streams, or about nothing
        packet = rtcp_packet(rng, server_ssrcs or (0,)) if rng.random() < 0.5 else rtp_packet(rng, payload_types, ssrcs)
        try:
            await transport._send_rtp(packet)
        except Exception:
            pass  # libsrtp refuses to protect some of them: those never leave


@pytest.mark.parametrize("seed", [20261204])
async def test_hostile_datagrams_leave_a_viewer_watching_and_the_server_whole(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with serve(tmp_path, LOG_LEVEL="INFO") as server:
        async with aiohttp.ClientSession() as http:
            await fuzz(Client(http, server.url), server, rng)
        log = server.log.read_text()
    assert log.count("Traceback") <= 3, log[-5000:]
    assert "Task exception was never retrieved" not in log and "Exception in callback" not in log, log[-5000:]


async def fuzz(client: Client, server: ServerProcess, rng: random.Random) -> None:
    key = await client.broadcaster("fuzzed")
    hostile_key = await client.broadcaster("hostile")
    publisher, viewer = Peer.publisher("h264", audio=True), Peer.viewer()
    hostile_publisher, hostile_viewer = Peer.publisher("h264"), Peer.viewer()
    peers = [publisher, viewer, hostile_publisher, hostile_viewer]
    target_ports: list[int] = []
    try:
        target_ports += ports(await client.connect(publisher, "/whip/fuzzed", key))
        target_ports += ports(await client.connect(viewer, "/whep/fuzzed"))
        target_ports += ports(await client.connect(hostile_publisher, "/whip/hostile", hostile_key))
        target_ports += ports(await client.connect(hostile_viewer, "/whep/fuzzed"))
        await viewer.wait_frames(15)
        assert target_ports

        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setblocking(False)
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        baseline: tuple[int, int] | None = None
        track = next(t.sender.track for t in publisher.pc.getTransceivers() if t.kind == "video")
        windows: list[tuple[int, int]] = []  # (pictures the viewer decoded, frames the publisher sent) per 5 s
        window_start, frames_at, sent_at = started, viewer.frames, track._index
        while loop.time() - started < SECONDS:
            for _ in range(40):
                try:
                    sender.sendto(any_datagram(rng), ("127.0.0.1", rng.choice(target_ports)))
                    sent += 1
                except (BlockingIOError, OSError):
                    pass
            if rng.random() < 0.5:
                await hostile_rtp(hostile_viewer, rng, 3)
                await hostile_rtp(hostile_publisher, rng, 3)
            await asyncio.sleep(0.01)
            now = loop.time()
            if baseline is None and now - started > 15:  # after warm-up: what must stay flat
                baseline = (server.rss_kib(), server.open_files())
            if now - window_start >= 5:
                windows.append((viewer.frames - frames_at, track._index - sent_at))
                window_start, frames_at, sent_at = now, viewer.frames, track._index
        sender.close()

        # The viewer decoded all along: in every five seconds, nearly all the publisher sent (both run in
        # this process, so a busy machine slows them alike) and at least 10 frames a second.
        assert windows and all(decoded >= 0.8 * sent and decoded >= 50 for decoded, sent in windows), windows
        assert baseline is not None
        rss, files = server.rss_kib(), server.open_files()
        assert rss - baseline[0] < 40_000, (baseline, rss)  # KiB
        assert files <= baseline[1] + 4, (baseline, files)
        refused = (await client.metric('tally_sfu_input_refused_total{reason="malformed_stun"}')
                   + await client.metric('tally_sfu_input_refused_total{reason="foreign_datagrams"}'))
        inside = {reason: await client.metric(f'tally_sfu_input_refused_total{{reason="{reason}"}}')
                  for reason in ("malformed_rtp", "malformed_rtcp", "forwarding_errors")}
        print(f"FUZZ {SECONDS:g} s: {sent} datagrams from outside, {refused:g} refused at the socket, inside "
              f"sessions {inside}; viewer frames per 5 s {windows}; server RSS {baseline[0]} -> {rss} KiB, "
              f"open files {baseline[1]} -> {files}")
        assert sent > 1000 * SECONDS / 4 and refused > sent / 3, (sent, refused)
        status, _ = await client.call("GET", "/readyz")
        assert status == 200
        # And a newcomer still gets in and decodes.
        late = Peer.viewer()
        peers.append(late)
        await client.connect(late, "/whep/fuzzed")
        await late.wait_frames(10)
    finally:
        for peer in peers:
            await peer.close()
