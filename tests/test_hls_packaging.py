"""The ladder's timing, on real encoded media: where segments start (on a fixed grid, a publisher asked
for keyframes just in time), the audio track's parts and segments on the same grid, and playlists that
never claim more media than there is. ffprobe reads the parts back as the checker.

Two defects these guard: segments 5-14 s long because the publisher's answer to the keyframe request
came before the cut was due and was not taken; hls.js at the live edge reloading a segment's parts in a
loop because the playlist (rounded up) ended short of its media."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from media_clips import encode_aac, encode_audio, encode_video

from recorder.hls.boundaries import SegmentBoundaries
from recorder.hls.cmaf import VIDEO_TIMESCALE
from recorder.hls.ladder import parse_ladder
from recorder.hls.packager import Init, Part
from recorder.hls.playlist import PlaylistOptions, RenditionWindow
from recorder.hls.transcoder import LadderOptions, LadderTranscoder, Output
from sfu.frame_sink import EncodedFrame
from sfu.keyframe import is_keyframe_frame

FPS = 30
FRAME = VIDEO_TIMESCALE // FPS


class Publisher:
    """A sender whose encoder makes a keyframe `answer_frames` frames after being asked, and one every
    `own_gop` frames by itself (Chromium: almost never)."""

    def __init__(self, answer_frames: int, own_gop: int = 10_000, deaf: bool = False) -> None:
        self.answer_frames = answer_frames
        self.own_gop = own_gop
        self.deaf = deaf  # requests are lost
        self.asked_at: list[int] = []
        self._due: int | None = None
        self.frame = 0
        self.lag = 0  # frames the ladder's worker is behind the live stream (the publisher is at frame + lag)

    def ask(self) -> None:
        self.asked_at.append(self.frame)
        if not self.deaf and self._due is None:
            self._due = self.frame + self.lag + self.answer_frames

    def next_is_keyframe(self) -> bool:
        self.frame += 1
        if self.frame % self.own_gop == 0 or self.frame == self._due:
            self._due = None
            return True
        return False


def segment_starts(publisher: Publisher, seconds: float, passthrough: bool = True) -> list[tuple[float, int]]:
    """(start in seconds, grid slot) of every segment cut."""
    cuts = SegmentBoundaries(2 * VIDEO_TIMESCALE, VIDEO_TIMESCALE, passthrough, publisher.ask)
    return [(i * FRAME / VIDEO_TIMESCALE, cuts.slot) for i in range(round(seconds * FPS))
            if cuts.video_frame(i * FRAME, i == 0 or publisher.next_is_keyframe())]


def off_grid(starts: list[tuple[float, int]]) -> list[float]:
    """How far each segment started from its grid slot (2 s apart), in seconds."""
    return [round(start - 2.0 * slot, 4) for start, slot in starts]


@pytest.mark.parametrize("answer_frames", [1, 3, 8])
def test_a_passed_through_source_is_cut_on_the_grid_at_the_keyframe_it_was_asked_for(answer_frames: int) -> None:
    publisher = Publisher(answer_frames)
    starts = segment_starts(publisher, 30)
    assert len(starts) >= 14, starts
    assert [slot for _, slot in starts] == list(range(len(starts)))  # one segment per slot: none skipped
    assert all(-0.3 <= off <= 1 / FPS + 1e-9 for off in off_grid(starts)), off_grid(starts)
    # The lead learns the publisher's answer time: after the first few, segments start within two frames
    # of the grid, so the stream never drifts from the wall clock (LL-DASH players count on it).
    assert all(abs(off) <= 2 / FPS + 1e-9 for off in off_grid(starts)[6:]), off_grid(starts)


def test_a_worker_that_lags_and_catches_up_still_cuts_on_the_grid() -> None:
    """A busy machine: the ladder's worker handles frames up to half a second after they arrived, then
    catches up, then lags again. Timing requests from the frame in hand, the segments after each
    catch-up came out short by the lag (1.5-1.8 s where 2 s was due)."""
    publisher = Publisher(4)
    cuts = SegmentBoundaries(2 * VIDEO_TIMESCALE, VIDEO_TIMESCALE, True, publisher.ask)
    starts = []
    for i in range(round(60 * FPS)):
        publisher.lag = 15 if (i // (7 * FPS)) % 2 == 0 else 0  # 0.5 s behind for 7 s, then on time for 7 s
        keyframe = i == 0 or publisher.next_is_keyframe()
        if cuts.video_frame(i * FRAME, keyframe, publisher.lag * FRAME):
            starts.append((i * FRAME / VIDEO_TIMESCALE, cuts.slot))
    assert len(starts) >= 28, starts
    assert all(abs(off) <= 3 / FPS + 1e-9 for off in off_grid(starts)[3:]), off_grid(starts)


def test_an_unanswered_keyframe_request_is_repeated_and_a_spontaneous_keyframe_is_taken() -> None:
    deaf = Publisher(1, own_gop=150, deaf=True)
    starts = segment_starts(deaf, 30)
    lengths = [b - a for (a, _), (b, _) in zip(starts, starts[1:])]
    # Requests go unanswered: every segment waits for the publisher's own keyframe (every 5 s)...
    assert len(lengths) >= 4 and all(abs(length - 5.0) < 1e-9 for length in lengths), lengths
    # ...each taking the slot it started nearest to, so the numbers after a long one stay on the clock.
    assert [slot for _, slot in starts] == [round(start / 2.0 + 1e-9) for start, _ in starts], starts
    # ...and the request is repeated once a second meanwhile (the next segment's first request comes
    # `lead` before its grid point is due) rather than given up on.
    gaps = [b - a for a, b in zip(deaf.asked_at, deaf.asked_at[1:])]
    assert gaps.count(30) >= 2 * len(lengths) and set(gaps) <= {30, 60, 90}, gaps


def test_an_encoded_source_is_cut_every_segment_on_the_dot() -> None:
    starts = segment_starts(Publisher(1), 12, passthrough=False)
    assert starts == [(2.0 * slot, slot) for slot in range(6)]


def frames_of(video: list[bytes], audio: list[bytes], audio_lag: float) -> list[tuple[float, EncodedFrame]]:
    """Video at 30 fps and Opus every 20 ms, in the order they arrive (audio `audio_lag` late)."""
    def frame(kind: str, codec: str, data: bytes, rtp: int, rate: int, key: bool) -> EncodedFrame:
        return EncodedFrame(kind, codec, data, rtp, rate, key, None, "test", ("audio", "video"), 0.0)
    timed = [(i / FPS, i / FPS, frame("video", "H264", d, i * FRAME, VIDEO_TIMESCALE, is_keyframe_frame("H264", d)))
             for i, d in enumerate(video)]
    timed += [(j * 0.02 + audio_lag, j * 0.02, frame("audio", "opus", d, j * 960, 48000, True)) for j, d in enumerate(audio)]
    timed.sort(key=lambda t: t[0])
    return [(pts, f) for _, pts, f in timed]


def source_ladder() -> tuple[list[Init], list[Part], LadderTranscoder]:
    """A one-rendition ladder ("source"): the init segments and parts of every track, as emitted."""
    parts: list[Part] = []
    inits: list[Init] = []

    def collect(index: int, outputs: list[Output]) -> None:
        for item in outputs:
            (inits if isinstance(item, Init) else parts).append(item)  # type: ignore[arg-type]

    return inits, parts, LadderTranscoder(parse_ladder("source"), LadderOptions(), collect, lambda: None)


def ffprobe_packets(path: Path) -> dict[str, list[tuple[float, float]]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_entries",
                          "packet=codec_type,pts_time,duration_time", "-show_entries", "stream=codec_type", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    packets: dict[str, list[tuple[float, float]]] = {}
    for p in json.loads(out.stdout)["packets"]:
        packets.setdefault(p["codec_type"], []).append((float(p["pts_time"]), float(p.get("duration_time", 0))))
    return packets


def tracks_of(inits: list[Init], parts: list[Part]) -> dict[str, tuple[Init, list[Part]]]:
    """The video and the audio track apart (each part holds one track: 1 video, 2 audio)."""
    video_init = next(i for i in inits if not i.codec.startswith("mp4a"))
    audio_init = next(i for i in inits if i.codec.startswith("mp4a"))
    return {"video": (video_init, [p for p in parts if _track(p) == 1]),
            "audio": (audio_init, [p for p in parts if _track(p) == 2])}


def _track(part: Part) -> int:
    """The track id of a part's one `traf` (its `tfhd`)."""
    at = part.data.index(b"tfhd")
    return int.from_bytes(part.data[at + 8:at + 12], "big")


@pytest.mark.parametrize("audio_lag", [0.0, 0.12])
def test_audio_is_its_own_track_on_the_video_grid_and_the_playlists_never_outrun_the_media(
    audio_lag: float, tmp_path: Path
) -> None:
    seconds = 7
    video = encode_video("h264", frames=seconds * FPS, gop=2 * FPS)
    audio = encode_audio(seconds + 1)
    inits, parts, transcoder = source_ladder()
    for pts, frame in frames_of(video, audio, audio_lag):
        transcoder.push(frame, pts)
    transcoder.finish()
    assert [t.name for t in transcoder.tracks] == ["source", "audio"]
    tracks = tracks_of(inits, parts)
    for kind, (init, own) in tracks.items():
        assert len(own) >= 15, (kind, len(own))
        part_target = transcoder.part_target(0 if kind == "video" else 1)
        window = RenditionWindow(kind, PlaylistOptions(2, part_target, window=10), 0.0)
        window.add_init(init)
        for part in own:
            window.add_part(part)
            assert part.duration <= part_target + 1e-9, (kind, part)
        playlist_end = sum(float(line.split("DURATION=")[1].split(",")[0])
                           for line in window.media_playlist().splitlines() if line.startswith("#EXT-X-PART:"))
        whole = tmp_path / f"{kind}.mp4"
        whole.write_bytes(init.data + b"".join(p.data for p in own))
        media = ffprobe_packets(whole)
        assert set(media) == {kind}, media.keys()  # one track per rendition: what DASH players require
        media_end = max(pts + duration for pts, duration in media[kind])
        # The playlist ends at, never after, the media (rounded down, within a hundred microseconds).
        assert media_end - 1e-4 <= playlist_end <= media_end + 1e-6, (kind, playlist_end, media_end)
        # Segments of both tracks start on the same 2 s grid: the audio within half an AAC frame.
        slack = 1024 / 48000 / 2 if kind == "audio" else 1 / FPS
        starts = [(s.start, s.slot) for s in window.segments]
        assert [slot for _, slot in starts] == list(range(starts[0][1], starts[0][1] + len(starts))), starts
        assert all(abs(start - 2.0 * slot) <= slack + 1e-6 for start, slot in starts[1:]), (kind, starts)
    # Audio parts are whole AAC frames, 16 to a part at most (0.341 s: the audio playlist's part target).
    assert transcoder.part_target(1) == 16 * 1024 / 48000


def test_a_rung_names_the_short_side_so_a_portrait_camera_gets_a_portrait_ladder() -> None:
    from recorder.hls.ladder import plan

    specs = parse_ladder("source,720p@2500,360p@800,180p@300")
    landscape = [(r.name, r.width, r.height) for r in plan(specs, "H264", 1280, 720)]
    assert landscape == [("source", 1280, 720), ("360p", 640, 360), ("180p", 320, 180)]
    portrait = [(r.name, r.width, r.height) for r in plan(specs, "H264", 720, 1280)]
    assert portrait == [("source", 720, 1280), ("360p", 360, 640), ("180p", 180, 320)]
    small = [(r.name, r.width, r.height) for r in plan(parse_ladder("720p@2500,360p@800"), "VP8", 360, 640)]
    assert small == [("source", 360, 640)]  # nothing below the source: the source itself


@pytest.mark.parametrize(("rate", "layout"), [(48_000, "stereo"), (44_100, "mono")])
def test_an_rtmp_encoders_aac_is_kept_when_it_is_48_khz_stereo_and_resampled_once_otherwise(
        rate: int, layout: str, tmp_path: Path) -> None:
    video = encode_video("h264", frames=4 * FPS, gop=2 * FPS)
    config, units = encode_aac(4.5, rate, layout)
    timed = [(i / FPS, EncodedFrame("video", "H264", d, i * FRAME, VIDEO_TIMESCALE, is_keyframe_frame("H264", d), None,
                                    "test", ("audio", "video"), 0.0)) for i, d in enumerate(video)]
    timed += [(j * 1024 / rate, EncodedFrame("audio", "aac", d, j * 1024, rate, False, None, "test", ("audio", "video"),
                                             0.0, config)) for j, d in enumerate(units)]
    timed.sort(key=lambda t: t[0])
    inits, parts, transcoder = source_ladder()
    for pts, frame in timed:
        transcoder.push(frame, pts)
    transcoder.finish()
    media = b"".join(p.data for p in parts)
    kept = sum(1 for unit in units[5:-20] if unit in media)
    if rate == 48_000:  # the encoder's own frames, byte for byte
        assert kept == len(units[5:-20]), kept
    else:
        assert kept == 0
    init, own = tracks_of(inits, parts)["audio"]
    whole = tmp_path / "audio.mp4"
    whole.write_bytes(init.data + b"".join(p.data for p in own))
    audio = ffprobe_packets(whole)["audio"]
    assert 3.9 <= sum(duration for _, duration in audio) <= 4.6  # the tone, all of it (the last part takes the rest)


def test_an_encoded_rendition_keeps_the_picture_at_its_bit_rate(tmp_path: Path) -> None:
    """A VP8 source is encoded to H.264 for the whole ladder. Without a frame rate, x264 (forced to a
    constant rate by zerolatency) took the 90 kHz time base as 90,000 frames a second and gave each
    frame 1/3000 of its bits: every encoded rendition came out a flat grey picture."""
    import fractions

    import av
    import numpy as np

    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 360, "yuv420p"
    encoder.time_base, encoder.bit_rate = fractions.Fraction(1, FPS), 2_000_000
    half = np.zeros((360, 640, 3), dtype=np.uint8)
    half[:, :320] = 255  # the left half white, the right half black
    packets = []
    for i in range(2 * FPS):
        picture = av.VideoFrame.from_ndarray(half, format="rgb24").reformat(format="yuv420p")
        picture.pts = i
        packets += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(picture)]
    inits, parts, transcoder = source_ladder()
    for i, (data, key) in enumerate(packets):
        transcoder.push(EncodedFrame("video", "VP8", data, i * FRAME, VIDEO_TIMESCALE, key, None, "test", ("video",),
                                     0.0), i / FPS)
    transcoder.finish()
    assert not transcoder.renditions[0].passthrough
    whole = tmp_path / "source.mp4"
    whole.write_bytes(inits[0].data + b"".join(p.data for p in parts))
    with av.open(str(whole)) as container:
        rows = [f.to_ndarray(format="gray")[180] for f in container.decode(video=0)]
    assert len(rows) >= 50
    for row in rows[5:]:
        assert row[:300].min() > 200 and row[340:].max() < 50, row[::40]


def test_audio_that_stops_is_filled_with_silence_so_players_do_not_stall(tmp_path: Path) -> None:
    """A publisher that mutes (no audio frames for seconds), then speaks again. Audio is a track of its
    own, and a browser's media buffer only plays while both tracks hold data: a gap in the audio
    stalled HLS and DASH players until the audio came back."""
    video = encode_video("h264", frames=8 * FPS, gop=2 * FPS)
    audio = encode_audio(8)
    spoken = [(pts, f) for pts, f in frames_of(video, audio, 0.0) if f.kind == "video" or not 2.0 <= pts < 5.0]
    inits, parts, transcoder = source_ladder()
    for pts, frame in spoken:
        transcoder.push(frame, pts)
    transcoder.finish()
    init, own = tracks_of(inits, parts)["audio"]
    whole = tmp_path / "audio.mp4"
    whole.write_bytes(init.data + b"".join(p.data for p in own))
    packets = ffprobe_packets(whole)["audio"]
    starts = [pts for pts, _ in packets]
    steps = [round((b - a) * 48000) for a, b in zip(starts, starts[1:])]
    assert set(steps) == {1024}, sorted(set(steps))  # one frame after another: no gap, no overlap
    assert starts[-1] + 1024 / 48000 >= 7.5, starts[-1]  # up to the end of the video
    assert 125 <= transcoder.silent_frames <= 145, transcoder.silent_frames  # the 3 s muted (140 frames)
    # At most the encoder's last frames from before the pause, which come out only when the audio
    # resumes, after silence took their place (~20 ms each).
    assert transcoder.late_audio <= 3, transcoder.late_audio


def test_a_new_picture_size_mid_segment_keeps_the_grid_and_dash_gets_both_halves() -> None:
    """Chromium changes its picture size under load: a new init segment, so a new HLS segment, mid-way
    through a slot. It keeps that slot, and the next grid point the next one: numbering the new
    segment as the next slot put every later DASH number a segment off its media."""
    first = encode_video("h264", frames=FPS, gop=FPS)  # 1 s at 640x360
    second = encode_video("h264", frames=4 * FPS, width=320, height=180, gop=FPS)  # from 1 s on, 320x180
    frames = [(i / FPS, EncodedFrame("video", "H264", d, i * FRAME, VIDEO_TIMESCALE, is_keyframe_frame("H264", d),
                                     None, "test", ("video",), 0.0)) for i, d in enumerate(first + second)]
    inits, parts, transcoder = source_ladder()
    for pts, frame in frames:
        transcoder.push(frame, pts)
    transcoder.finish()
    assert [i.version for i in inits] == [0, 1]  # new parameter sets: a new init segment
    window = RenditionWindow("source", PlaylistOptions(2, transcoder.part_target(0), window=10), 0.0)
    for part in parts:
        window.add_part(part)
    assert [(s.slot, round(s.start, 2), s.init) for s in window.segments][:3] == [(0, 0.0, 0), (0, 1.0, 1), (1, 2.0, 1)]
    halves = window.at_slot(0, 2.0)
    assert len(halves) == 2 and not halves[0].parts[-1].ends_slot and window.slot_complete(halves)
    assert [s.start for s in window.at_slot(1, 2.0)] == [2.0] and window.slot_complete(window.at_slot(1, 2.0))
