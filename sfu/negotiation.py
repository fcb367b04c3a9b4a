"""Reading offers and answers: what the peer sends and how it numbers it (RFC 8829 / 3264 via aiortc's
SDP parser), and the codec preferences that make a viewer's answer match the publisher's format."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import MediaDescription, SessionDescription

from sfu.errors import BadOffer, UnsupportedMedia
from sfu.media_format import MediaFormat, PayloadMap

MAX_SDP_BYTES = 64 * 1024
SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")


@dataclass(frozen=True, slots=True)
class Offer:
    """A checked offer: its audio and video sections to negotiate, and the text aiortc is given.

    aiortc negotiates every m-line it gets, port 0 or not, and insists on ICE and DTLS attributes in
    each; so sections the offerer rejected (port 0 without a=bundle-only, RFC 8843 section 7.3.3) are
    taken out before aiortc sees the offer and put back, rejected, into the answer (RFC 3264 section
    6: as many m-lines as the offer, in its order).
    """

    sdp: str
    media: list[MediaDescription]
    rejected: tuple[tuple[int, str, str | None], ...] = ()  # (index, m-line, mid) of each rejected section

    def answer(self, local_sdp: str) -> str:
        """aiortc's answer with the rejected sections back in their places, rejected."""
        if not self.rejected:
            return local_sdp
        session, sections = _split(local_sdp)
        for index, m_line, mid in self.rejected:
            kind, _, rest = m_line[2:].partition(" ")
            proto_and_formats = rest.split(None, 1)[1] if len(rest.split(None, 1)) > 1 else "UDP/TLS/RTP/SAVPF 0"
            section = [f"m={kind} 0 {proto_and_formats}", "c=IN IP4 0.0.0.0"] + ([f"a=mid:{mid}"] if mid else [])
            sections.insert(min(index, len(sections)), section)
        return _join(session, sections)


def _split(sdp: str) -> tuple[list[str], list[list[str]]]:
    """(session-level lines, lines of each media section)."""
    session: list[str] = []
    sections: list[list[str]] = []
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _join(session: list[str], sections: list[list[str]]) -> str:
    return "\r\n".join([*session, *(line for section in sections for line in section)]) + "\r\n"


def parse_offer(sdp: str, publishing: bool) -> Offer:
    """The checked offer, or BadOffer (malformed) or UnsupportedMedia (nothing to send or receive)
    saying what is wrong with it."""
    if len(sdp) > MAX_SDP_BYTES:
        raise BadOffer("the offer is too large")
    if not sdp.startswith("v=0"):
        raise BadOffer("the body is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise BadOffer(f"the SDP offer cannot be parsed: {type(exc).__name__}: {exc}") from None
    session, sections = _split(sdp)
    if len(sections) != len(description.media):
        raise BadOffer("the offer's media sections cannot be read")
    rejected = []
    for index, section in enumerate(sections):
        fields = section[0].split()
        if len(fields) > 1 and fields[1] == "0" and "a=bundle-only" not in section:
            mid = next((line[len("a=mid:"):] for line in section if line.startswith("a=mid:")), None)
            rejected.append((index, section[0], mid))
    gone = {index for index, _, _ in rejected}
    media = [m for i, m in enumerate(description.media) if m.kind in ("audio", "video") and i not in gone]
    if not media:
        if any(m.kind in ("audio", "video") for m in description.media):
            raise UnsupportedMedia("every audio and video section of the offer is rejected (port 0)")
        raise BadOffer("the offer has no audio or video section")
    for kind in ("audio", "video"):
        if sum(1 for m in media if m.kind == kind) > 1:
            raise BadOffer(f"at most one {kind} section is allowed")
    wanted = SENDING if publishing else RECEIVING
    for m in media:
        if m.direction not in wanted:
            role = "a WHIP offer sends media (sendonly)" if publishing else "a WHEP offer receives media (recvonly)"
            raise BadOffer(f"{role}; the {m.kind} section is {m.direction}")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise BadOffer(f"the {m.kind} section has no a=ice-ufrag / a=ice-pwd")
        if m.dtls is None or not m.dtls.fingerprints:
            raise BadOffer(f"the {m.kind} section has no a=fingerprint and a=setup (both are needed)")
        if not m.rtcp_mux:
            raise BadOffer("RTCP multiplexing (a=rtcp-mux) is required")
        if m.rtp.muxId is not None and not 1 <= len(m.rtp.muxId.encode()) <= 255:
            raise BadOffer("a=mid must be 1 to 255 bytes (RFC 8843)")
        for extension in m.rtp.headerExtensions:
            if not 1 <= extension.id <= 255:
                raise BadOffer(f"a=extmap id {extension.id} is outside 1-255 (RFC 8285)")
    if not rejected:
        return Offer(sdp, media)
    mids = {mid for _, _, mid in rejected if mid}
    session = [" ".join(w for w in line.split(" ") if w not in mids) if line.startswith("a=group:") else line
               for line in session]
    kept = [section for i, section in enumerate(sections) if i not in gone]
    return Offer(_join(session, kept), media, tuple(rejected))


def payload_maps(sdp: str, directions: tuple[str, ...] | None = None) -> dict[str, PayloadMap]:
    """By mid: the format and numbering of each accepted audio/video section of a description (only
    those with one of `directions`, when given)."""
    maps: dict[str, PayloadMap] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind not in ("audio", "video") or media.port == 0 or not media.rtp.codecs:
            continue
        if directions is not None and media.direction not in directions:
            continue
        codec = media.rtp.codecs[0]
        rtx = next(
            (c.payloadType for c in media.rtp.codecs if c.name.lower() == "rtx" and c.parameters.get("apt") == codec.payloadType),
            None,
        )
        parameters = {k: v for k, v in codec.parameters.items() if v is not None}
        fmt = MediaFormat(media.kind, codec.name, codec.clockRate, codec.channels, parameters)
        ids = {ext.uri: ext.id for ext in media.rtp.headerExtensions}
        mid = media.rtp.muxId or ""
        if codec.payloadType is None:
            continue
        maps[mid] = PayloadMap(fmt, codec.payloadType, rtx, mid, ids)
    return maps


def preferences_for(fmt: MediaFormat) -> list[RTCRtpCodecCapability]:
    """The codec capabilities a viewer's answer may use: exactly the publisher's format (and RTX)."""
    codecs = RTCRtpSender.getCapabilities(fmt.kind).codecs
    matching = [c for c in codecs if c.mimeType.lower() == fmt.mime_type.lower()]
    profile = fmt.parameters.get("profile-level-id")
    exact = [c for c in matching if profile is None or c.parameters.get("profile-level-id") == profile]
    # The publisher's profile first; then the other profiles of the codec, for players that offer only
    # those: H.264 Baseline (42001f) and Constrained Baseline (42e01f) streams from WebRTC encoders use
    # no tool the other lacks, and every browser decodes either.
    chosen = exact + [c for c in matching if c not in exact]
    rtx = [c for c in codecs if c.mimeType.lower().endswith("/rtx")]
    return chosen + rtx


def with_bandwidth(sdp: str, bits_per_second: int) -> str:
    """`sdp` with the most the peer may send in its video section (or its only one): b=TIAS (RFC 3890)
    and b=AS (RFC 4566, kbit/s), after the section's c= line."""
    lines = sdp.split("\r\n")
    sections = [i for i, line in enumerate(lines) if line.startswith("m=")]
    video = [i for i in sections if lines[i].startswith("m=video")] or sections[:1]
    for start in reversed(video):
        end = next((i for i in sections if i > start), len(lines))
        at = next((i + 1 for i in range(start, end) if lines[i].startswith("c=")), start + 1)
        lines[at:at] = [f"b=AS:{max(1, bits_per_second // 1000)}", f"b=TIAS:{bits_per_second}"]
    return "\r\n".join(lines)
