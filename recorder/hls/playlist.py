"""A rendition's live window and the LL-HLS playlists written from it.

The window holds the last `window` complete segments (their parts, and the segment as the parts put
together) and the segment being made; older media falls out. Playlists follow RFC 8216bis with the
low-latency extensions: parts with `EXT-X-PART-INF`, `EXT-X-SERVER-CONTROL` (blocking reload,
`PART-HOLD-BACK` of three parts, `CAN-SKIP-UNTIL` six target durations), `EXT-X-PRELOAD-HINT` for the
next part, delta updates (`EXT-X-SKIP`), `EXT-X-RENDITION-REPORT` for the other video renditions and
`EXT-X-ENDLIST` once the stream is over. Parts are listed for the last three target durations only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from recorder.hls.packager import Init, Part

VERSION = 9  # EXT-X-SKIP needs 9; players of older versions ignore what they do not know


@dataclass(slots=True)
class Segment:
    msn: int
    init: int
    start: float  # seconds on the stream's timeline
    slot: int  # its place on the segment grid: its DASH number
    parts: list[Part] = field(default_factory=list)
    complete: bool = False
    data: bytes = b""  # the parts put together, once complete

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)


@dataclass(frozen=True, slots=True)
class PlaylistOptions:
    target_duration: int  # EXT-X-TARGETDURATION, whole seconds
    part_target: float
    window: int = 10  # complete segments kept


class RenditionWindow:
    def __init__(self, name: str, options: PlaylistOptions, started_at: float) -> None:
        self.name = name
        self.options = options
        self.started_at = started_at  # wall clock (epoch seconds) at stream time 0
        self.inits: dict[int, Init] = {}
        self.segments: list[Segment] = []
        self.parts: dict[int, Part] = {}
        self.ended = False
        self.bytes_total = 0
        self.peak_bitrate = 0

    # --- updates ---

    def add_init(self, init: Init) -> None:
        self.inits[init.version] = init

    def add_part(self, part: Part) -> None:
        if not self.segments or self.segments[-1].complete:
            self.segments.append(Segment(part.msn, part.init, part.start, part.slot))
        segment = self.segments[-1]
        segment.parts.append(part)
        self.parts[part.number] = part
        self.bytes_total += len(part.data)
        if part.ends_segment:
            segment.complete = True
            segment.data = b"".join(p.data for p in segment.parts)
            if segment.duration > 0:
                self.peak_bitrate = max(self.peak_bitrate, round(len(segment.data) * 8 / segment.duration))
            self._slide()

    def _slide(self) -> None:
        complete = [s for s in self.segments if s.complete]
        for old in complete[: max(0, len(complete) - self.options.window)]:
            self.segments.remove(old)
            for part in old.parts:
                self.parts.pop(part.number, None)
        live_inits = {s.init for s in self.segments}
        for version in [v for v in self.inits if v not in live_inits and v < max(self.inits)]:
            del self.inits[version]

    def end(self) -> None:
        self.ended = True
        if self.segments and self.segments[-1].parts and not self.segments[-1].parts[-1].ends_slot:
            last_part = self.segments[-1].parts[-1]
            self.segments[-1].parts[-1] = replace(last_part, ends_slot=True)  # nothing follows it
        if self.segments and not self.segments[-1].complete:
            # A part cut short by the end without closing its segment: close it as it is.
            last = self.segments[-1]
            last.complete = True
            last.data = b"".join(p.data for p in last.parts)

    # --- questions ---

    @property
    def current_init(self) -> Init | None:
        return self.inits[max(self.inits)] if self.inits else None

    @property
    def next_part(self) -> int:
        return max(self.parts) + 1 if self.parts else 0

    def last_part(self) -> tuple[int, int] | None:
        """(msn, index) of the newest part."""
        if not self.segments or not self.segments[-1].parts:
            return None
        part = self.segments[-1].parts[-1]
        return part.msn, part.index

    @property
    def last_complete_msn(self) -> int:
        complete = [s.msn for s in self.segments if s.complete]
        return complete[-1] if complete else -1

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist holds segment `msn` (complete), or its part `part`."""
        for segment in reversed(self.segments):
            if segment.msn > msn:
                return True
            if segment.msn == msn:
                if segment.complete:
                    return True
                return part is not None and len(segment.parts) > part
        return False

    def segment(self, msn: int) -> Segment | None:
        for segment in self.segments:
            if segment.msn == msn:
                return segment if segment.complete else None
        return None

    def at_slot(self, slot: int, segment_seconds: float) -> list[Segment]:
        """The segments of grid slot `slot` (its DASH number), complete or being made: those that
        started there (two when the publisher's picture changed size: a new init segment needs a new
        segment), or, for a slot left out, the one that ran long over it (a keyframe came late). A
        segment starting half a segment or more after its grid point takes the next slot
        (`grid_slot`), so one that has run that far past slot `slot`'s time leaves it out for good."""
        found = [s for s in self.segments if s.slot == slot]
        if found:
            return found
        earlier = [s for s in self.segments if s.slot < slot]
        if earlier and earlier[-1].start + earlier[-1].duration >= (slot + 0.5) * segment_seconds:
            return [earlier[-1]]
        return []

    @staticmethod
    def slot_complete(segments: list[Segment]) -> bool:
        """Whether no more media of these segments' slot is to come."""
        return bool(segments) and segments[-1].complete and segments[-1].parts[-1].ends_slot

    @property
    def ready(self) -> bool:
        return any(s.complete for s in self.segments)

    # --- the playlist ---

    def media_playlist(self, skip: bool = False, reports: list[tuple[str, RenditionWindow]] | None = None) -> str:
        o = self.options
        can_skip = 6 * o.target_duration
        part_target = _decimal(o.part_target)  # as written: what the hold-back is three times of
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{o.target_duration}",
            f"#EXT-X-PART-INF:PART-TARGET={part_target}",
        ]
        control = f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={_decimal(3 * float(part_target))}"
        control += f",HOLD-BACK={_decimal(3 * o.target_duration)},CAN-SKIP-UNTIL={_decimal(can_skip)}"
        lines.append(control)
        segments = self.segments
        first = segments[0].msn if segments else 0
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        end_time = segments[-1].start + segments[-1].duration if segments else 0.0
        skipped = 0
        if skip:
            for segment in segments:
                if segment.complete and end_time - (segment.start + segment.duration) > can_skip:
                    skipped += 1
                else:
                    break
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        map_version: int | None = None
        parts_from = end_time - 3 * o.target_duration
        for segment in segments[skipped:]:
            if segment.init != map_version:
                map_version = segment.init
                lines.append(f'#EXT-X-MAP:URI="init{map_version}.mp4"')
            stamp = datetime.fromtimestamp(self.started_at + segment.start, UTC)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}")
            if not self.ended and segment.start + segment.duration >= parts_from:
                for part in segment.parts:
                    independent = ",INDEPENDENT=YES" if part.independent else ""
                    lines.append(f'#EXT-X-PART:DURATION={_media(part.duration)},URI="p{part.number}.m4s"{independent}')
            if segment.complete:
                lines.append(f"#EXTINF:{_media(segment.duration)},")
                lines.append(f"s{segment.msn}.m4s")
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        else:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="p{self.next_part}.m4s"')
            for uri, other in reports or []:
                last = other.last_part()
                if last is not None:
                    lines.append(f'#EXT-X-RENDITION-REPORT:URI="{uri}",LAST-MSN={last[0]},LAST-PART={last[1]}')
        return "\n".join(lines) + "\n"


def _decimal(value: float) -> str:
    """Targets and hold-backs, rounded up: a part of exactly the target is within it as written."""
    return _five_places(math.ceil(value * 100000 - 1e-6))


def _media(value: float) -> str:
    """Media durations, rounded down: the playlist never ends after the media does. (Rounded up, a
    part ending a segment ends a few microseconds past what the player has buffered, and hls.js at
    the live edge then loads that segment's parts again, in a loop, until the next part is listed.)"""
    return _five_places(math.floor(value * 100000 + 1e-6))


def _five_places(units: int) -> str:
    text = f"{units / 100000:.5f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
