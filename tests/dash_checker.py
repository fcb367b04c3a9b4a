"""A checker of live LL-DASH manifests over time, with a maintained MPD parser (mpegdash) reading them.

Each `check` parses the MPD and asserts the rules of a live low-latency DASH stream: a dynamic MPD
with its availability start fixed across reloads and publish times that never go back, UTCTiming,
the ServiceDescription's target latency, a time-shift buffer within the window, and per
representation a `$Number$` SegmentTemplate with a duration, an `availabilityTimeOffset` below it and
`availabilityTimeComplete="false"`; once ended, a static MPD with its duration. `available(now)` says
which segment numbers a player may ask for at a time on the UTCTiming clock.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import datetime
from xml.etree import ElementTree as ET

from mpegdash.parser import MPEGDASHParser

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", duration)
    assert match is not None, duration
    hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Track:
    id: str
    kind: str  # video or audio
    timescale: int
    duration: int  # ticks
    offset: float  # availabilityTimeOffset, seconds
    media: str
    init: str
    codecs: str
    bandwidth: int

    @property
    def seconds(self) -> float:
        return self.duration / self.timescale

    def url(self, number: int) -> str:
        return self.media.replace("$Number$", str(number))


@dataclass(frozen=True)
class Checked:
    dynamic: bool
    tracks: list[Track]
    start: float  # availabilityStartTime (dynamic)
    duration: float  # mediaPresentationDuration (static)
    window: float  # timeShiftBufferDepth
    clock_url: str
    target_latency: float
    first: int  # startNumber (the same in every representation)
    period_start: float

    def available(self, now: float, track: Track) -> range:
        """The numbers of the segments a player may ask for at `now` (UTCTiming clock)."""
        newest = int((now - self.start + track.offset) // track.seconds) - 1
        oldest = max(0, int((now - self.start - self.window) // track.seconds))
        return range(oldest, newest + 1)


class LiveMpdChecker:
    def __init__(self) -> None:
        self.start: float | None = None
        self.published = 0.0
        self.checked = 0

    def check(self, text: str) -> Checked:
        mpd = MPEGDASHParser.parse(text)
        root = ET.fromstring(text)
        assert mpd.profiles and "urn:mpeg:dash:profile:isoff-live:2011" in mpd.profiles, mpd.profiles
        assert mpd.periods and len(mpd.periods) == 1, "one period"
        period = mpd.periods[0]
        dynamic = mpd.type == "dynamic"
        start = duration = window = target = 0.0
        clock = ""
        if dynamic:
            assert mpd.availability_start_time and mpd.publish_time and mpd.minimum_update_period
            start = instant(mpd.availability_start_time)
            assert self.start is None or self.start == start, "availabilityStartTime moved"
            self.start = start
            published = instant(mpd.publish_time)
            assert published >= self.published, "publishTime went back"
            self.published = published
            window = seconds(mpd.time_shift_buffer_depth)
            assert 0 < window <= 60, window
            assert 0 < seconds(mpd.minimum_update_period) <= 10
            timings = [(t.scheme_id_uri, t.value) for t in mpd.utc_timings or []]
            assert len(timings) == 1 and timings[0][0] == "urn:mpeg:dash:utc:http-iso:2014", timings
            clock = timings[0][1]
            latency = root.find("d:ServiceDescription/d:Latency", NS)
            assert latency is not None, "ServiceDescription with a target latency"
            target = int(latency.get("target", "0")) / 1000
            assert 0.5 <= target <= 10
        else:
            assert mpd.type == "static" and mpd.media_presentation_duration, mpd.type
            duration = seconds(mpd.media_presentation_duration)
            assert duration > 0
        tracks = []
        firsts = set()
        period_start = seconds(period.start)
        kinds = [a.content_type for a in period.adaptation_sets]
        assert kinds in (["video", "audio"], ["video"], ["audio"]), kinds
        for element, adaptation in zip(root.findall("d:Period/d:AdaptationSet", NS), period.adaptation_sets):
            for rep_element, rep in zip(element.findall("d:Representation", NS), adaptation.representations):
                template = rep.segment_templates[0]
                raw = rep_element.find("d:SegmentTemplate", NS)
                assert raw is not None
                assert template.media and "$Number$" in template.media and template.initialization
                assert template.timescale and template.duration and template.start_number is not None
                firsts.add(template.start_number)
                # The period starts where its first segment does: the numbers map to the same times.
                assert template.presentation_time_offset == template.start_number * template.duration
                assert abs(period_start - template.start_number * template.duration / template.timescale) < 1e-3
                assert rep.bandwidth and rep.codecs and rep.id
                offset = 0.0
                if dynamic:
                    offset = float(raw.get("availabilityTimeOffset", "0"))
                    assert 0 < offset < template.duration / template.timescale, offset
                    assert raw.get("availabilityTimeComplete") == "false"
                if adaptation.content_type == "video":
                    assert rep.codecs.startswith("avc1.") and rep.width and rep.height
                else:
                    assert rep.codecs == "mp4a.40.2"
                tracks.append(Track(rep.id, adaptation.content_type, template.timescale, template.duration, offset,
                                    template.media, template.initialization, rep.codecs, rep.bandwidth))
        assert tracks and len(firsts) == 1, firsts
        if dynamic:
            assert firsts == {0}
        self.checked += 1
        return Checked(dynamic, tracks, start, duration, window, clock, target, firsts.pop(), period_start)


def decode_time(segment: bytes) -> int:
    """The first fragment's base media decode time (`tfdt`)."""
    at = segment.index(b"tfdt")
    version = segment[at + 4]
    return struct.unpack(">Q" if version == 1 else ">I", segment[at + 8:at + (16 if version == 1 else 12)])[0]


def fragments(segment: bytes) -> int:
    """How many `moof` boxes (CMAF chunks) a segment holds, walking its top-level boxes."""
    count = at = 0
    while at + 8 <= len(segment):
        size = struct.unpack(">I", segment[at:at + 4])[0]
        assert size >= 8, "a box of size < 8"
        count += segment[at + 4:at + 8] == b"moof"
        at += size
    assert at == len(segment), "the segment ends inside a box"
    return count
