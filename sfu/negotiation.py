"""Reading offers and answers: what the peer sends and how it numbers it (RFC 8829 / 3264 via aiortc's
SDP parser), and the codec preferences that make a viewer's answer match the publisher's format."""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from sfu.errors import BadOffer
from sfu.media_format import MediaFormat, PayloadMap

MAX_SDP_BYTES = 64 * 1024
SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")


def parse_offer(sdp: str, publishing: bool) -> SessionDescription:
    """The parsed offer, or BadOffer saying what is wrong with it."""
    if len(sdp) > MAX_SDP_BYTES:
        raise BadOffer("the offer is too large")
    if not sdp.startswith("v=0"):
        raise BadOffer("the body is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise BadOffer(f"the SDP offer cannot be parsed: {type(exc).__name__}: {exc}") from None
    media = [m for m in description.media if m.kind in ("audio", "video")]
    if not media:
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
            raise BadOffer(f"the {m.kind} section has no a=fingerprint")
        if not m.rtcp_mux:
            raise BadOffer("RTCP multiplexing (a=rtcp-mux) is required")
    return description


def payload_maps(sdp: str) -> dict[str, PayloadMap]:
    """By mid: the format and numbering of each accepted audio/video section of a local description."""
    maps: dict[str, PayloadMap] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind not in ("audio", "video") or media.port == 0 or not media.rtp.codecs:
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
    chosen = exact or matching
    rtx = [c for c in codecs if c.mimeType.lower().endswith("/rtx")]
    return chosen + rtx
