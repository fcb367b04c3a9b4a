"""A checker of live LL-HLS media playlists against the rules of RFC 8216bis and Apple's LL-HLS
authoring spec that players rely on, fed every reload of one playlist in turn."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTR.findall(text)}


@dataclass
class PlaylistSegment:
    msn: int
    uri: str
    duration: float
    parts: list[dict[str, str]] = field(default_factory=list)


@dataclass
class MediaPlaylist:
    tags: dict[str, str]
    segments: list[PlaylistSegment]
    pending_parts: list[dict[str, str]]  # parts of the segment being made
    skipped: int
    preload_hint: dict[str, str] | None
    reports: list[dict[str, str]]
    ended: bool

    @property
    def media_sequence(self) -> int:
        return int(self.tags.get("EXT-X-MEDIA-SEQUENCE", "0"))


def parse(text: str) -> MediaPlaylist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines and lines[0] == "#EXTM3U", "a playlist starts with #EXTM3U"
    tags: dict[str, str] = {}
    segments: list[PlaylistSegment] = []
    parts: list[dict[str, str]] = []
    duration: float | None = None
    skipped = 0
    hint = None
    reports = []
    ended = False
    msn: int | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            msn = int(line.split(":", 1)[1])
            tags["EXT-X-MEDIA-SEQUENCE"] = str(msn)
        elif line.startswith("#EXT-X-SKIP:"):
            skipped = int(attributes(line.split(":", 1)[1])["SKIPPED-SEGMENTS"])
            assert msn is not None
            msn += skipped
        elif line.startswith("#EXT-X-PART:"):
            parts.append(attributes(line.split(":", 1)[1]))
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            hint = attributes(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-RENDITION-REPORT:"):
            reports.append(attributes(line.split(":", 1)[1]))
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#"):
            name, _, value = line[1:].partition(":")
            tags[name] = value
        else:
            assert duration is not None, f"{line} has no #EXTINF"
            assert msn is not None, "#EXT-X-MEDIA-SEQUENCE comes before the segments"
            segments.append(PlaylistSegment(msn, line, duration, parts))
            msn += 1
            parts = []
            duration = None
    return MediaPlaylist(tags, segments, parts, skipped, hint, reports, ended)


class LiveValidator:
    """Checks one rendition's playlist on every reload, and the reloads against each other."""

    def __init__(self) -> None:
        self.seen: dict[int, PlaylistSegment] = {}
        self.last_sequence = -1
        self.reloads = 0
        self.parts_checked = 0

    def check(self, text: str) -> MediaPlaylist:
        p = parse(text)
        self.reloads += 1
        target = int(p.tags["EXT-X-TARGETDURATION"])
        part_target = float(attributes(p.tags["EXT-X-PART-INF"])["PART-TARGET"])
        control = attributes(p.tags["EXT-X-SERVER-CONTROL"])
        assert control["CAN-BLOCK-RELOAD"] == "YES"
        assert float(control["PART-HOLD-BACK"]) >= 3 * part_target - 1e-6, control
        assert float(control.get("HOLD-BACK", 3 * target)) >= 3 * target, control
        assert float(control["CAN-SKIP-UNTIL"]) >= 6 * target, control
        assert "EXT-X-MAP" in p.tags, "fMP4 segments need #EXT-X-MAP"
        # Media sequence numbers only move forward, and a segment keeps its URI and duration.
        assert p.media_sequence >= self.last_sequence, (p.media_sequence, self.last_sequence)
        self.last_sequence = p.media_sequence
        for segment in p.segments:
            assert round(segment.duration) <= target, f"segment {segment.msn}: {segment.duration} s > target {target}"
            before = self.seen.get(segment.msn)
            if before is not None:
                assert (before.uri, before.duration) == (segment.uri, segment.duration), (before, segment)
            self.seen[segment.msn] = segment
            self._check_parts(segment.parts, part_target, segment.duration)
        self._check_parts(p.pending_parts, part_target, None)
        msns = [s.msn for s in p.segments]
        assert msns == list(range(msns[0], msns[0] + len(msns))) if msns else True
        if p.ended:
            assert p.preload_hint is None
        else:
            assert p.preload_hint is not None and p.preload_hint["TYPE"] == "PART", "a live LL playlist hints the next part"
        return p

    def _check_parts(self, parts: list[dict[str, str]], part_target: float, segment_duration: float | None) -> None:
        if not parts:
            return
        assert parts[0].get("INDEPENDENT") == "YES", "a segment's first part starts with a keyframe"
        total = 0.0
        for part in parts:
            duration = float(part["DURATION"])
            assert 0 < duration <= part_target, f"part {part['URI']}: {duration} s > PART-TARGET {part_target}"
            total += duration
            self.parts_checked += 1
        if segment_duration is not None:
            assert math.isclose(total, segment_duration, abs_tol=0.001 * len(parts) + 0.002), (total, segment_duration)
