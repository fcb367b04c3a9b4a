"""Offers as the mainstream WebRTC stacks write them (tests/sdp_corpus/, described in its README.md), posted
to the real server: each is answered (201) or refused with a 4xx problem document, never a 5xx.

A 201 must carry an answer that fits its offer (RFC 3264 section 6, RFC 8843, RFC 8829 section 5.3): as many
m-lines in the same order and of the same kinds, a port-0 offered section rejected (port 0) in the answer, an
accepted section carrying the offer's mid, header extensions only with ids the offer gave them (RFC 8285
section 6) and a DTLS role that complements the offer's (RFC 8842 section 5.3). WHIP offers go to one channel
with its stream key, and each session is deleted so the next can publish; WHEP offers watch a second channel
that an aiortc peer publishes H.264 (constrained baseline) and Opus to. One server serves the whole module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCRtpSender

from signaling.app import SERVICES, create_app
from support import Api, FakeClock, make_settings
from test_whip_whep import post_sdp, stream_key
from webrtc_peer import Peer

CORPUS = Path(__file__).parent / "sdp_corpus"
REFUSED = frozenset({400, 422})


@dataclass(frozen=True)
class Expect:
    statuses: frozenset[int]
    accept: tuple[str, ...] = ()  # on 201: every offered section of these kinds is accepted
    reject: tuple[str, ...] = ()  # on 201: every offered section of these kinds is rejected (port 0)


AV = ("audio", "video")
ANSWERED = Expect(frozenset({201}), accept=AV)

# Every corpus file and what the server may do with it. Where the specs leave a choice (refuse, or answer
# without the track it cannot forward), every allowed outcome is listed.
EXPECTED: dict[str, Expect] = {
    # WHIP: a publisher's sendonly offer
    "chromium-whip.sdp": ANSWERED,
    "chromium-whip-trickle.sdp": ANSWERED,
    "chromium-whip-two-byte-extmap.sdp": ANSWERED,
    "chromium-whip-mid-32.sdp": ANSWERED,
    "chromium-whip-datachannel.sdp": ANSWERED,  # the data channel may be accepted or rejected
    "chromium-whip-two-video.sdp": Expect(REFUSED),  # RFC 9725: at most one audio and one video track
    "chromium-whip-av1-h265-only.sdp": Expect(REFUSED),  # nothing the SFU can forward
    "chromium-whip-rejected-only.sdp": Expect(REFUSED),  # its one m-line has port 0: nothing to publish
    "firefox-whip.sdp": ANSWERED,
    "safari-whip.sdp": ANSWERED,
    "obs-whip.sdp": ANSWERED,
    "obs-whip-hevc.sdp": Expect(frozenset({201, 422}), accept=("audio",), reject=("video",)),
    "gstreamer-whip.sdp": ANSWERED,
    "gstreamer-whip-bundle-only.sdp": ANSWERED,
    "pion-whip.sdp": ANSWERED,
    "pion-whip-ice-lite.sdp": ANSWERED,
    "pion-whip-mid-40.sdp": ANSWERED,
    "ffmpeg-whip.sdp": ANSWERED,  # a=setup:passive
    "ffmpeg-whip-active.sdp": Expect(frozenset({201, 400, 422}), accept=AV),  # a=setup:active may be refused
    "ffmpeg-whip-high-profile.sdp": Expect(frozenset({201, 422}), accept=AV),  # H.264 High only
    # WHEP: a player's recvonly offer
    "chromium-whep.sdp": ANSWERED,
    "chromium-whep-two-byte-extmap.sdp": ANSWERED,
    "chromium-whep-extmap-255.sdp": ANSWERED,
    "chromium-whep-mid-32.sdp": ANSWERED,
    "chromium-whep-datachannel.sdp": Expect(frozenset({201}), accept=(*AV, "application")),  # chat rides on it
    "chromium-whep-rejected-only.sdp": Expect(REFUSED),
    "firefox-whep.sdp": ANSWERED,
    "safari-whep.sdp": ANSWERED,
    "obs-whep.sdp": ANSWERED,
    "gstreamer-whep.sdp": ANSWERED,
    "gstreamer-whep-bundle-only.sdp": ANSWERED,
    "pion-whep-mid-40.sdp": ANSWERED,
    "pion-whep-audio-rejected.sdp": Expect(frozenset({201}), accept=("video",), reject=("audio",)),
}

CASES = sorted({p.name for p in CORPUS.glob("*.sdp")} | set(EXPECTED))


# --- a small SDP reader of our own, independent of the parser under test --------------------------------


@dataclass
class Section:
    kind: str
    port: int
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.attributes if key == name]

    def first(self, name: str) -> str | None:
        found = self.values(name)
        return found[0] if found else None

    @property
    def accepted(self) -> bool:
        """Port 0 rejects a section unless it is bundle-only (RFC 3264 section 6, RFC 8843 section 6)."""
        return self.port != 0 or bool(self.values("bundle-only"))

    @property
    def extmaps(self) -> dict[int, str]:
        out = {}
        for value in self.values("extmap"):
            ident, uri = value.split()[:2]
            out[int(ident.split("/")[0])] = uri
        return out


@dataclass
class Description:
    session: Section
    media: list[Section]

    def setup(self, index: int) -> str | None:
        return self.media[index].first("setup") or self.session.first("setup")


def parse(sdp: str) -> Description:
    session = Section("session", 0)
    media: list[Section] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            media.append(Section(kind, int(port)))
        elif line.startswith("a="):
            key, _, value = line[2:].partition(":")
            (media[-1] if media else session).attributes.append((key, value.strip()))
    return Description(session, media)


def answer_problems(offer_sdp: str, answer_sdp: str, expect: Expect) -> list[str]:
    """What is wrong with `answer_sdp` as the answer to `offer_sdp`; empty when nothing is."""
    offer, answer = parse(offer_sdp), parse(answer_sdp)
    kinds = [m.kind for m in offer.media], [m.kind for m in answer.media]
    if kinds[0] != kinds[1]:
        return [f"the answer's m-lines {kinds[1]} do not match the offer's {kinds[0]} (RFC 3264 section 6)"]
    problems = []
    for i, (o, a) in enumerate(zip(offer.media, answer.media)):
        where = f"m-line {i} ({o.kind}, mid {o.first('mid')!r})"
        if not o.accepted and a.port != 0:
            problems.append(f"{where}: offered with port 0 but answered with port {a.port}, not 0")
        if o.kind in expect.accept and not a.accepted:
            problems.append(f"{where}: rejected (port 0), but it must be accepted")
        if o.kind in expect.reject and a.accepted:
            problems.append(f"{where}: accepted, but it must be rejected (port 0)")
        if not a.accepted:
            continue
        if a.first("mid") != o.first("mid"):
            problems.append(f"{where}: the answer's mid is {a.first('mid')!r}, not the offer's")
        offered = o.extmaps
        for ident, uri in a.extmaps.items():
            if offered.get(ident) != uri:
                problems.append(f"{where}: a=extmap:{ident} {uri} was not offered with that id (offer: {offered})")
        theirs, ours = offer.setup(i), answer.setup(i)
        wanted = {"actpass": {"active", "passive"}, "active": {"passive"}, "passive": {"active"}}.get(theirs or "")
        if wanted is not None and ours not in wanted:
            problems.append(f"{where}: offer a=setup:{theirs} answered with a=setup:{ours} (RFC 8842 section 5.3)")
    if not any(a.accepted and a.kind in AV for a in answer.media):
        problems.append("the answer accepts no audio or video section")
    return problems


# --- one server for the module ---------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Server-side errors (with tracebacks), so a 5xx comes with the reason."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Corpus:
    api: Api
    whip_channel: str
    whip_key: str
    live_channel: str
    errors: ErrorLog


async def publish_h264_and_opus(api: Api, channel: str, key: str) -> Peer:
    """An aiortc publisher sending H.264 constrained baseline (42e01f, what browsers and OBS signal) and Opus."""
    peer = Peer.publisher("h264", audio=True)
    codecs = RTCRtpSender.getCapabilities("video").codecs
    video = next(t for t in peer.pc.getTransceivers() if t.kind == "video")
    video.setCodecPreferences(
        [c for c in codecs if c.mimeType.lower() == "video/h264" and c.parameters.get("profile-level-id") == "42e01f"]
        + [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    )
    status, body, _ = await post_sdp(api, f"/whip/{channel}", await peer.offer(), key)
    assert status == 201, body
    await peer.answer(body.decode())
    return peer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    tmp = tmp_path_factory.mktemp("sdp-corpus")
    clock = FakeClock()  # time stands still: no session times out while the module runs
    settings = make_settings(
        tmp, f"sqlite+aiosqlite:///{tmp / 'tally.db'}", webrtc_host_addresses=["127.0.0.1"],
        rate_whip_per_minute=10_000, rate_whep_per_minute=10_000,
    )
    app = create_app(settings, clock=clock)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        async with TestClient(TestServer(app)) as client:
            api = Api(client, app[SERVICES], clock)
            whip_channel, whip_token = await api.user()
            live_channel, live_token = await api.user()
            publisher = await publish_h264_and_opus(api, live_channel, await stream_key(api, live_token))
            try:
                yield Corpus(api, whip_channel, await stream_key(api, whip_token), live_channel, errors)
            finally:
                await publisher.close()
    finally:
        logging.getLogger().removeHandler(errors)


def test_every_corpus_file_has_an_expectation_and_a_readme_entry() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.sdp"))
    assert files == sorted(EXPECTED), "tests/sdp_corpus/ and EXPECTED must list the same files"
    readme = (CORPUS / "README.md").read_text()
    assert [name for name in files if f"`{name}`" not in readme] == []
    for name in files:
        raw = (CORPUS / name).read_bytes()
        assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b""), f"{name}: CRLF line endings"
        assert name.removesuffix(".sdp").split("-")[1] in ("whip", "whep"), name


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", CASES)
async def test_offer_is_answered_or_refused_with_a_4xx(corpus: Corpus, name: str) -> None:
    expect = EXPECTED.get(name)
    assert expect is not None and (CORPUS / name).exists(), f"{name}: needs both a corpus file and an EXPECTED entry"
    offer = (CORPUS / name).read_bytes().decode()
    publish = name.removesuffix(".sdp").split("-")[1] == "whip"
    path = f"/whip/{corpus.whip_channel}" if publish else f"/whep/{corpus.live_channel}"
    seen = len(corpus.errors.lines)

    status, body, headers = await post_sdp(corpus.api, path, offer, corpus.whip_key if publish else None)

    server_log = "\n".join(corpus.errors.lines[seen:]) or "(nothing logged)"
    location = headers.get("Location") if status == 201 else None
    try:
        assert status < 500, f"{name}: {status} {body!r}\n--- server log ---\n{server_log}"
        problems = answer_problems(offer, body.decode(), expect) if status == 201 else []
        unfit = "".join(f"\n  {problem}" for problem in problems)
        detail = body.get("detail") if isinstance(body, dict) else "an SDP answer"
        assert status in expect.statuses, f"{name}: {status} (expected {sorted(expect.statuses)}): {detail}{unfit}"
        if status == 201:
            assert headers["Content-Type"].startswith("application/sdp") and location, headers
            assert not problems, f"{name}: the answer does not fit the offer:{unfit}"
        else:
            assert headers["Content-Type"].startswith("application/problem+json"), headers["Content-Type"]
            assert isinstance(body, dict) and body.get("status") == status, body
    finally:
        if location:  # end the session whatever happened: the next WHIP offer must be able to publish
            deleted, _, _ = await corpus.api.call("DELETE", location)
            assert deleted == 200, f"{name}: DELETE {location} -> {deleted}"

