"""Cuts one track of one rendition into LL-HLS parts and segments, as CMAF fragments.

Every track is packaged on its own (video renditions without audio, and one audio rendition all video
renditions share), as DASH players require and HLS allows with an audio group: one packaging, served
as LL-HLS and as LL-DASH alike.

Video segment boundaries are decided upstream, once for the whole ladder (`slot` on a keyframe: the
grid point of `boundaries.py` the segment starts at), so every rendition's segments start at the same
instant and players switch between them seamlessly. Parts are cut here by time, from the same
timestamps, so they line up across renditions too. A video sample's duration is only known when the
next one arrives, so the newest sample waits for its successor. A part is cut before the frame that
would take it beyond `part_target` (a late frame shortens the last sample's duration instead).

Audio (AAC, 1024 samples a frame) drives its own cuts: a part holds as many whole frames as fit in
the part target rounded up to a frame (16 frames, 0.341 s, for a third of a second: the audio
playlist's own part target), and a segment ends at the frame nearest to the same grid as the video's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from recorder.hls import cmaf
from recorder.hls.boundaries import grid_slot
from recorder.hls.cmaf import AUDIO_TIMESCALE, VIDEO_TIMESCALE, AudioTrack, ParameterSets, Sample, VideoTrack

AAC_FRAME = 1024


@dataclass(frozen=True, slots=True)
class Init:
    version: int
    data: bytes
    codec: str  # RFC 6381 string of the track
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Part:
    number: int  # running number of the part in this rendition (its URI)
    msn: int  # media sequence number of its segment
    index: int  # position in the segment
    duration: float
    independent: bool  # starts with a keyframe (or is audio)
    data: bytes
    ends_segment: bool
    init: int  # init segment version the part needs
    start: float  # seconds on the stream's timeline
    slot: int  # its segment's place on the segment grid (the DASH segment number)
    ends_slot: bool = False  # the last part of its slot: the next segment starts the next slot (or none follows)


@dataclass(slots=True)
class _Open:
    samples: list[Sample] = field(default_factory=list)
    start: int = 0  # ticks of the track's timescale
    independent: bool = False
    init: int = 0


class Packager:
    """One video track (`audio` None) or the audio track (`audio` given) of a rendition."""

    def __init__(self, audio: AudioTrack | None, part_target: float, segment: float) -> None:
        self.audio_track = audio
        self.has_video = audio is None
        self._scale = AUDIO_TIMESCALE if audio is not None else VIDEO_TIMESCALE
        if audio is not None:
            self._part_ticks = math.ceil(part_target * AUDIO_TIMESCALE / AAC_FRAME - 1e-9) * AAC_FRAME
        else:
            self._part_ticks = round(part_target * VIDEO_TIMESCALE)
        self._segment_ticks = round(segment * self._scale)
        self._held: Sample | None = None  # newest video sample, waiting for its duration
        self._held_slot: int | None = None  # the slot of the segment it starts, if it starts one
        self._open: _Open | None = None
        self._params: ParameterSets | None = None
        self._size = (0, 0)
        self._init_version = -1
        self._number = 0
        self._msn = 0
        self._index = 0
        self._slot = 0
        self._due = 0  # audio: where the segment being made is due to end, in ticks
        self._last_delta = VIDEO_TIMESCALE // 30
        self.started = False

    @property
    def part_target(self) -> float:
        """The longest a part gets, in seconds (what its playlist declares)."""
        return self._part_ticks / self._scale

    # --- input ---

    def video(self, annex_b: bytes, pts: int, keyframe: bool, slot: int | None, size: tuple[int, int]) -> list[Init | Part]:
        """One frame (H.264 Annex B, 90 kHz `pts`); `slot`: a new segment starts with it, at that grid slot."""
        out: list[Init | Part] = []
        units = cmaf.nal_units(annex_b)
        if not self.started:
            if not (keyframe and slot is not None):
                return out
            self.started = True
        if self._held is not None:
            self._release(pts, out)
        if keyframe:
            params = cmaf.parameter_sets(units)
            if params is not None and (params != self._params or size != self._size):
                if self._params is not None and slot is None:
                    # A new init segment needs a new segment (HLS changes EXT-X-MAP only there); it keeps
                    # its slot, so the grid goes on undisturbed: a DASH segment is every segment of its slot.
                    slot = self._slot
                self._params, self._size = params, size
                out.append(self._new_init())
        self._held = Sample(cmaf.length_prefixed(units), pts, 0, keyframe)
        self._held_slot = slot
        return out

    def audio(self, access_unit: bytes, pts: int) -> list[Init | Part]:
        """One AAC access unit, `pts` at 48 kHz."""
        out: list[Init | Part] = []
        if self._init_version < 0:
            out.append(self._new_init())
        current = self._open
        if current is not None:
            end = current.start + len(current.samples) * AAC_FRAME
            if 2 * pts + AAC_FRAME >= 2 * self._due:  # this frame is nearer the next segment than this one
                out.append(self._cut(end, True))
            elif end + AAC_FRAME - current.start > self._part_ticks:
                out.append(self._cut(end, False))
        if self._open is None:
            if not self.started or self._index == 0:
                slot = grid_slot(pts, self._segment_ticks)
                self._slot = slot if not self.started else max(slot, self._slot + 1)
                self.started = True
                self._due = (self._slot + 1) * self._segment_ticks
            self._open = _Open(start=pts, independent=True, init=self._init_version)
        self._open.samples.append(Sample(access_unit, pts, AAC_FRAME, True))
        return out

    def finish(self) -> list[Init | Part]:
        """The end of the stream: the open part closes and ends its segment."""
        out: list[Init | Part] = []
        if self._held is not None:
            self._release(self._held.time + self._last_delta, out)
            self._held = None
        if self._open is not None and self._open.samples:
            out.append(self._cut(self._open.start + sum(s.duration for s in self._open.samples), True))
        return out

    # --- cutting ---

    def _release(self, next_pts: int, out: list[Init | Part]) -> None:
        """The held sample gets its duration from `next_pts`; cut before it if it must start a part."""
        held = self._held
        assert held is not None
        delta = next_pts - held.time
        if delta <= 0:
            delta = 1
        else:
            self._last_delta = delta
        held.duration = delta
        current = self._open
        slot = self._held_slot
        if current is not None:
            elapsed = held.time - current.start
            # Cut before `held` when it would end beyond the target, or a segment starts with it.
            if slot is not None or elapsed + delta > self._part_ticks:
                if elapsed > 0:
                    if elapsed > self._part_ticks:  # a frame came late: the part keeps its promised length
                        current.samples[-1].duration -= elapsed - self._part_ticks
                        elapsed = self._part_ticks
                    out.append(self._cut(current.start + elapsed, slot is not None, slot is not None and slot != self._slot))
                    current = None
        if current is None:
            if slot is not None:
                self._slot = slot
            current = self._open = _Open(start=held.time, independent=held.sync, init=self._init_version)
        current.samples.append(held)

    def _cut(self, end: int, ends_segment: bool, ends_slot: bool | None = None) -> Part:
        """The open part ends at `end` and goes out; `ends_slot` (by default `ends_segment`): the next
        segment, if any, has the next slot."""
        current = self._open
        assert current is not None
        self._open = None
        self._number += 1
        video, audio = (current.samples, []) if self.has_video else ([], current.samples)
        part = Part(
            number=self._number - 1,
            msn=self._msn,
            index=self._index,
            duration=(end - current.start) / self._scale,
            independent=current.independent,
            data=cmaf.fragment(self._number, video, audio),
            ends_segment=ends_segment,
            init=current.init,
            start=current.start / self._scale,
            slot=self._slot,
            ends_slot=ends_segment if ends_slot is None else ends_slot,
        )
        if ends_segment:
            self._msn += 1
            self._index = 0
        else:
            self._index += 1
        return part

    def _new_init(self) -> Init:
        self._init_version += 1
        if self.audio_track is not None:
            return Init(self._init_version, cmaf.init_segment(None, self.audio_track), "mp4a.40.2", 0, 0)
        assert self._params is not None
        video = VideoTrack(self._size[0], self._size[1], self._params)
        return Init(self._init_version, cmaf.init_segment(video, None), self._params.codec, self._size[0], self._size[1])
