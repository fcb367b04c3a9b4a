"""Cuts one rendition's samples into LL-HLS parts and segments, as CMAF fragments.

Segment boundaries are decided upstream, once for the whole ladder (`boundary=True` on a keyframe), so
every rendition's segments start at the same instant and players switch between them seamlessly.
Parts are cut here by time, from the same timestamps, so they line up across renditions too.

A video sample's duration is only known when the next one arrives, so the newest sample waits for
its successor. A part is cut before the frame that would take it to its nominal length; its
duration never exceeds `part_target` (a late frame shortens the last sample's duration instead).
Audio samples (AAC, fixed duration) go into the first part not yet sent whose video ends after their
start, so a part's audio ends where its video ends (within one AAC frame). Audio comes out of its
encoder a frame or two behind the video, so a closed part waits for its audio, at most `audio_wait`
seconds of video: a player that sees a part's audio end short of its video takes the part for
incomplete and loads it again (hls.js does, at the live edge, in a loop). Audio that misses that wait
(it stopped, or lags more) goes into a later part, and parts stop waiting for it until it has caught
up, so a muted publisher does not add `audio_wait` to every part. For an audio-only stream, audio time
drives the cuts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from recorder.hls import cmaf
from recorder.hls.cmaf import AUDIO_TIMESCALE, VIDEO_TIMESCALE, AudioTrack, ParameterSets, Sample, VideoTrack

AAC_FRAME = 1024


@dataclass(frozen=True, slots=True)
class Init:
    version: int
    data: bytes
    codec: str  # RFC 6381 string of the video track ("" without video)
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Part:
    number: int  # running number of the part in this rendition (its URI)
    msn: int  # media sequence number of its segment
    index: int  # position in the segment
    duration: float
    independent: bool  # starts with a keyframe (or is audio only)
    data: bytes
    ends_segment: bool
    init: int  # init segment version the part needs
    start: float  # seconds on the stream's timeline
    bytes_video: int


@dataclass(slots=True)
class _Open:
    video: list[Sample] = field(default_factory=list)
    audio: list[Sample] = field(default_factory=list)
    start: int = 0  # ticks of the driving timescale
    independent: bool = False
    init: int = 0
    end: int = 0  # once closed
    ends_segment: bool = False


class Packager:
    def __init__(self, has_video: bool, audio: AudioTrack | None, part_target: float, segment_parts: int = 6,
                 audio_wait: float = 0.25) -> None:
        self.has_video = has_video
        self.segment_parts = segment_parts
        self.audio_track = audio
        self.part_target = part_target
        self._scale = VIDEO_TIMESCALE if has_video else AUDIO_TIMESCALE
        self._part_ticks = round(part_target * self._scale)
        self._held: Sample | None = None  # newest video sample, waiting for its duration
        self._held_boundary = False
        self._open: _Open | None = None
        self._closed: deque[_Open] = deque()  # video parts waiting for their audio
        self._audio: deque[Sample] = deque()  # audio not yet in a part (video streams)
        self._audio_end = 0  # end of the newest audio sample, 48 kHz ticks
        self._audio_wait = round(audio_wait * VIDEO_TIMESCALE)
        self._audio_behind = False  # audio missed a part's wait: do not wait again until it catches up
        self._params: ParameterSets | None = None
        self._size = (0, 0)
        self._init_version = -1
        self._number = 0
        self._msn = 0
        self._index = 0
        self._last_delta = VIDEO_TIMESCALE // 30
        self.started = False

    # --- input ---

    def video(self, annex_b: bytes, pts: int, keyframe: bool, boundary: bool, size: tuple[int, int]) -> list[Init | Part]:
        """One frame (H.264 Annex B, 90 kHz `pts`); `boundary`: a new segment starts with it."""
        out: list[Init | Part] = []
        units = cmaf.nal_units(annex_b)
        if not self.started:
            if not (keyframe and boundary):
                return out
            self.started = True
        if self._held is not None:
            self._release(pts, out)
            self._drain(out, pts)
        if keyframe:
            params = cmaf.parameter_sets(units)
            if params is not None and (params != self._params or size != self._size):
                if self._params is not None:
                    boundary = True  # a new init segment needs a new segment
                self._params, self._size = params, size
                out.append(self._new_init())
        self._held = Sample(cmaf.length_prefixed(units), pts, 0, keyframe)
        self._held_boundary = boundary
        return out

    def audio(self, access_unit: bytes, pts: int) -> list[Init | Part]:
        """One AAC access unit, `pts` at 48 kHz."""
        out: list[Init | Part] = []
        if self._init_version < 0 and not self.has_video:
            out.append(self._new_init())
        if self.has_video:
            if not self.started:
                return out  # before the first keyframe: nothing to attach it to
            self._audio.append(Sample(access_unit, pts, AAC_FRAME, True))
            self._audio_end = max(self._audio_end, pts + AAC_FRAME)
            self._drain(out, None)
            return out
        # Audio only: audio time drives the cuts; a segment every `segment_parts` parts.
        if self._open is not None and pts - self._open.start + AAC_FRAME > self._part_ticks:
            out.append(self._cut(self._open.start + sum(s.duration for s in self._open.audio), self._index + 1 >= self.segment_parts))
        if self._open is None:
            self._open = _Open(start=pts, independent=True, init=self._init_version)
        self._open.audio.append(Sample(access_unit, pts, AAC_FRAME, True))
        return out

    def finish(self) -> list[Init | Part]:
        """The end of the stream: the open part closes and ends its segment."""
        out: list[Init | Part] = []
        if self._held is not None:
            self._release(self._held.time + self._last_delta, out)
            self._held = None
        if self._open is not None and (self._open.video or self._open.audio):
            end = self._open.start + (
                sum(s.duration for s in self._open.video)
                if self.has_video
                else sum(s.duration for s in self._open.audio)
            )
            if self.has_video:
                self._close(end, True)
            else:
                out.append(self._cut(end, True))
        self._drain(out, None, force=True)
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
        if current is not None:
            starts_segment = self._held_boundary
            elapsed = held.time - current.start
            # Cut before `held` when it would end beyond the target, or a segment starts with it.
            if starts_segment or elapsed + delta > self._part_ticks:
                if elapsed > 0:
                    self._close(held.time, starts_segment)
                    current = None
        if current is None:
            current = self._open = _Open(start=held.time, independent=held.sync, init=self._init_version)
        current.video.append(held)

    def _close(self, end: int, ends_segment: bool) -> None:
        """The open video part ends at `end`; it goes out once its audio is in (`_drain`)."""
        current = self._open
        assert current is not None
        self._open = None
        if current.video and end - current.start > self._part_ticks:
            # A frame came late: shorten the last sample so the part keeps its promised length.
            current.video[-1].duration -= end - current.start - self._part_ticks
            end = current.start + self._part_ticks
        current.end, current.ends_segment = end, ends_segment
        self._closed.append(current)

    def _drain(self, out: list[Init | Part], video_now: int | None, force: bool = False) -> None:
        """Send the closed parts whose audio has arrived (or waited long enough, or has no audio)."""
        while self._closed:
            head = self._closed[0]
            short = self.audio_track is not None and self._audio_end * VIDEO_TIMESCALE < head.end * AUDIO_TIMESCALE
            if not short:
                self._audio_behind = False
            elif not (force or self._audio_behind):
                if video_now is None or video_now - head.end < self._audio_wait:
                    return  # wait for the audio
                self._audio_behind = True
            audio = self._audio
            last = force and len(self._closed) == 1  # the end of the stream: what audio is left goes in
            while audio and (last or audio[0].time * VIDEO_TIMESCALE < head.end * AUDIO_TIMESCALE):
                head.audio.append(audio.popleft())
            self._closed.popleft()
            out.append(self._part(head))

    def _cut(self, end: int, ends_segment: bool) -> Part:
        """Audio only: the open part ends at `end` and goes out now."""
        current = self._open
        assert current is not None
        self._open = None
        current.end, current.ends_segment = end, ends_segment
        return self._part(current)

    def _part(self, current: _Open) -> Part:
        end, ends_segment = current.end, current.ends_segment
        duration = end - current.start
        self._number += 1
        data = cmaf.fragment(self._number, current.video, current.audio)
        part = Part(
            number=self._number - 1,
            msn=self._msn,
            index=self._index,
            duration=duration / self._scale,
            independent=current.independent,
            data=data,
            ends_segment=ends_segment,
            init=current.init,
            start=current.start / self._scale,
            bytes_video=sum(len(s.data) for s in current.video),
        )
        if ends_segment:
            self._msn += 1
            self._index = 0
        else:
            self._index += 1
        return part

    def _new_init(self) -> Init:
        self._init_version += 1
        video = None
        codec = ""
        if self.has_video and self._params is not None:
            video = VideoTrack(self._size[0], self._size[1], self._params)
            codec = self._params.codec
        data = cmaf.init_segment(video, self.audio_track)
        return Init(self._init_version, data, codec, self._size[0], self._size[1])
