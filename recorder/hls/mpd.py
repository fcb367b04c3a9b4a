"""The LL-DASH manifest (MPD) of a live ladder, written from the same windows as its LL-HLS playlists.

One packaging, two manifests: the CMAF parts of a rendition's LL-HLS playlist are the chunks of its
DASH segments, and a DASH segment's number is its grid slot (`boundaries.py`), so segment N starts at
N × `segment` seconds of stream time, which is `availabilityStartTime` + N × `segment` on the wall
clock. That is what `SegmentTemplate@duration` with `$Number$` promises a player, and the grid keeps it
true (within a frame or two) however long the stream runs.

Low latency (DASH-IF low-latency modes): `availabilityTimeOffset` lets a player ask for a segment a
part after it starts, and `availabilityTimeComplete="false"` says it then arrives chunk by chunk (the
origin answers with chunked transfer as parts are made); `ServiceDescription` gives the target
latency and the catch-up rates; `UTCTiming` points at the origin's clock. The time-shift buffer is
the HLS window. An ended stream's manifest becomes `type="static"` and describes what the window
still holds (its period starts at the first slot kept, with that slot's media time as its
presentation time offset), with the same numbers and media times, so players watching it play to
its end and a player that opens it then starts at the oldest segment there is.

A slot a segment ran over (its keyframe came late) has no segment of its own: the origin answers it
with the segment that covers it. Stream time follows the publisher's clock (sender reports), so it
drifts from the origin's wall clock by the two clocks' difference in rate: parts per million.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from recorder.hls.cmaf import AUDIO_TIMESCALE, VIDEO_TIMESCALE
from recorder.hls.playlist import RenditionWindow

NAMESPACE = "urn:mpeg:dash:schema:mpd:2011"
PROFILES = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019"
UTC_SCHEME = "urn:mpeg:dash:utc:http-iso:2014"
CHANNELS_SCHEME = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011"


@dataclass(frozen=True, slots=True)
class DashOptions:
    segment: float  # seconds: the grid
    window: int  # complete segments a rendition's window keeps
    target_latency: float = 1.5  # seconds behind live a player aims at


@dataclass(frozen=True, slots=True)
class Video:
    window: RenditionWindow
    bandwidth: int
    codec: str


def manifest(videos: list[Video], audio: RenditionWindow | None, audio_bandwidth: int, options: DashOptions,
             started_at: float, now: float, ended: bool, prefix: str, clock_url: str) -> str:
    """The MPD: `prefix` leads every media URL (the ladder's id), `clock_url` is the UTCTiming source."""
    o = options
    mpd = ET.Element("MPD", {
        "xmlns": NAMESPACE,
        "profiles": PROFILES,
        "type": "static" if ended else "dynamic",
        "minBufferTime": _duration(min(1.0, o.segment)),
        "maxSegmentDuration": _duration(o.segment * 2),
    })
    windows = [v.window for v in videos] + ([audio] if audio is not None else [])
    if ended:
        # Where every track still has media (the shorter track's end): a player that reaches it ends,
        # rather than waiting at the end of the shorter one for media that never comes.
        end = min((w.segments[-1].start + w.segments[-1].duration for w in windows if w.segments), default=0.0)
        mpd.set("mediaPresentationDuration", _duration(end))  # from 0: the period starts at the first slot kept
    else:
        mpd.set("availabilityStartTime", _instant(started_at))
        mpd.set("publishTime", _instant(now))
        mpd.set("minimumUpdatePeriod", _duration(o.segment))
        mpd.set("timeShiftBufferDepth", _duration(max(1, o.window - 1) * o.segment))
        service = ET.SubElement(mpd, "ServiceDescription", id="0")
        latency = round(o.target_latency * 1000)
        ET.SubElement(service, "Latency", target=str(latency), min=str(latency * 2 // 3),
                      max=str(latency * 3))
        ET.SubElement(service, "PlaybackRate", min="0.96", max="1.04")
    # Ended, only what the window still holds is described, from its first slot on; the numbers and
    # the media times stay those of the live MPD (period start = that slot's time = its PTO).
    first = min((w.segments[0].slot for w in windows if w.segments), default=0) if ended else 0
    period = ET.SubElement(mpd, "Period", id="0", start=_duration(first * o.segment))
    if videos:
        sizes = [(v.window.current_init.width, v.window.current_init.height) for v in videos if v.window.current_init]
        video_set = ET.SubElement(period, "AdaptationSet", {
            "id": "0", "contentType": "video", "mimeType": "video/mp4", "segmentAlignment": "true",
            "startWithSAP": "1",
        })
        if sizes:
            video_set.set("maxWidth", str(max(w for w, _ in sizes)))
            video_set.set("maxHeight", str(max(h for _, h in sizes)))
        for video in videos:
            init = video.window.current_init
            representation = ET.SubElement(video_set, "Representation", {
                "id": video.window.name, "bandwidth": str(video.bandwidth), "codecs": video.codec,
            })
            if init is not None and init.width:
                representation.set("width", str(init.width))
                representation.set("height", str(init.height))
                representation.set("sar", "1:1")
            _template(representation, video.window, VIDEO_TIMESCALE, o, ended, prefix, first)
    if audio is not None:
        audio_set = ET.SubElement(period, "AdaptationSet", {
            "id": "1", "contentType": "audio", "mimeType": "audio/mp4", "lang": "und", "segmentAlignment": "true",
            "startWithSAP": "1",
        })
        ET.SubElement(audio_set, "AudioChannelConfiguration", schemeIdUri=CHANNELS_SCHEME, value="2")
        representation = ET.SubElement(audio_set, "Representation", {
            "id": audio.name, "bandwidth": str(audio_bandwidth), "codecs": "mp4a.40.2",
            "audioSamplingRate": str(AUDIO_TIMESCALE),
        })
        _template(representation, audio, AUDIO_TIMESCALE, o, ended, prefix, first)
    if not ended:
        ET.SubElement(mpd, "UTCTiming", schemeIdUri=UTC_SCHEME, value=clock_url)
    ET.indent(mpd)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(mpd, encoding="unicode") + "\n"


def _template(parent: ET.Element, window: RenditionWindow, timescale: int, o: DashOptions, ended: bool,
              prefix: str, first: int) -> None:
    init = window.current_init
    duration = round(o.segment * timescale)
    attributes = {
        "timescale": str(timescale),
        "duration": str(duration),
        "startNumber": str(first),
        "presentationTimeOffset": str(first * duration),
        "initialization": f"{prefix}{window.name}/init{init.version if init else 0}.mp4",
        "media": f"{prefix}{window.name}/$Number$.m4s",
    }
    if not ended:
        # Asked for once its first chunk is due; the rest follows on the same response.
        attributes["availabilityTimeOffset"] = _decimal(o.segment - window.options.part_target)
        attributes["availabilityTimeComplete"] = "false"
    ET.SubElement(parent, "SegmentTemplate", attributes)


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    return f"PT{_decimal(seconds)}S"


def _decimal(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"
