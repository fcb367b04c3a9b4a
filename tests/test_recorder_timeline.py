"""The recording timeline on constructed frames: sender-report alignment, keyframe start, epochs."""

from __future__ import annotations

from sfu.frame_sink import EncodedFrame
from sfu.sender_reports import ClockMapping
from recorder.timeline import Timeline

NTP0 = 3_900_000_000.0  # the publisher's clock (NTP seconds)
WALL0 = 1_800_000_000.0  # this server's clock


def frame(kind: str, t: float, delay: float, source: str = "a", keyframe: bool = False, report: bool = True,
          rtp0: int = 1234, kinds: tuple[str, ...] = ("audio", "video")) -> EncodedFrame:
    """A frame captured at publisher time NTP0 + t, arriving `delay` seconds later."""
    rate = 90000 if kind == "video" else 48000
    mapping = ClockMapping(NTP0, rtp0, rate, 0.0) if report else None
    return EncodedFrame(kind, "H264" if kind == "video" else "opus", b"x", (rtp0 + round(t * rate)) & 0xFFFFFFFF, rate,
                        keyframe, mapping, source, kinds, WALL0 + t + delay)


def test_audio_and_video_are_aligned_by_sender_time_whatever_their_delays() -> None:
    timeline = Timeline()
    placed = []
    # Video arrives 300 ms late, audio 20 ms: arrival order says nothing about capture order.
    for i in range(60):
        t = i * 0.02
        placed += timeline.push(frame("audio", t, 0.02))
        if i % 2 == 0:
            placed += timeline.push(frame("video", t, 0.3, keyframe=i == 10))
    times = {kind: [s for f, s in placed if f.kind == kind] for kind in ("audio", "video")}
    assert times["video"][0] == 0.0  # the recording starts at the keyframe, captured at t = 0.2
    assert abs(times["audio"][0]) < 0.001  # audio captured with it starts with it
    # Capture time 1.0 s is 0.8 s into the recording on both tracks.
    audio_at = {round(f.rtp_timestamp / 48000 - 1234 / 48000, 3): s for f, s in placed if f.kind == "audio"}
    assert abs(audio_at[1.0] - 0.8) < 0.001


def test_frames_wait_for_reports_and_a_track_without_reports_is_placed_by_arrival() -> None:
    timeline = Timeline(hold=1.0)
    assert timeline.push(frame("video", 0.0, 0.05, keyframe=True)) == []  # audio has no report yet
    out = []
    for i in range(1, 80):
        out += timeline.push(frame("audio", i * 0.02, 0.05, report=False))
    assert out, "after `hold` seconds the frames are placed anyway"
    audio = [s for f, s in out if f.kind == "audio"]
    assert abs(audio[0] - 0.02) < 0.002  # by arrival, shifted by the clock offset video's report shows


def test_a_new_connection_starts_a_new_epoch_at_the_real_gap_and_late_frames_are_dropped() -> None:
    timeline = Timeline()
    for i in range(50):
        timeline.push(frame("video", i / 25, 0.05, keyframe=i == 0, kinds=("video",)))
    first_end = timeline.end
    # The publisher reconnects 3 s later with new timestamps (and another clock).
    later = []
    for i in range(25):
        f = frame("video", i / 25, 0.05, source="b", keyframe=i == 0, rtp0=999, kinds=("video",))
        f2 = EncodedFrame(f.kind, f.codec, f.data, f.rtp_timestamp, f.clock_rate, f.keyframe,
                          ClockMapping(NTP0 + 5000, 999, 90000, 0.0), f.source, f.kinds, f.received_at + 2 + 3.0)
        later += timeline.push(f2)
    assert abs(later[0][1] - (first_end + 3.0 + 0.04)) < 0.05  # the gap stays a gap, of its length
    assert all(b[1] > a[1] for a, b in zip(later, later[1:]))
    assert timeline.push(frame("video", 2.0, 0.05, kinds=("video",))) == []  # the old connection's straggler
    assert timeline.dropped == 1


def test_nothing_is_placed_before_a_keyframe_and_times_never_go_backwards() -> None:
    timeline = Timeline()
    assert timeline.push(frame("video", 0.0, 0.01, kinds=("video",))) == []
    placed = timeline.push(frame("video", 0.04, 0.01, keyframe=True, kinds=("video",)))
    assert [s for _, s in placed] == [0.0]
    # A frame whose timestamp goes back (a bad report, a reordered frame) still moves forward.
    placed = timeline.push(frame("video", 0.02, 0.01, kinds=("video",)))
    assert placed[0][1] > 0.0


def test_late_sender_reports_neither_bunch_the_frames_nor_split_audio_from_video() -> None:
    """Each track's reports come every second, each sent up to 80 ms after the media it maps (as aiortc
    stamps them when they go out under load). Taken one by one, they moved the frames after each by its
    lateness: two frames 1 ms apart, then a gap, and FFmpeg read "non monotonically increasing dts"."""
    import random

    rng = random.Random(20261205)
    timeline = Timeline()
    placed = []
    reports: dict[str, ClockMapping] = {}
    for i in range(300):  # 6 s: audio every 20 ms, video every 40 ms (keyframe first)
        t = i * 0.02
        for kind in ("audio", "video") if i % 2 == 0 else ("audio",):
            rate = 90000 if kind == "video" else 48000
            if i % 50 == 0 or kind not in reports:  # a new report: "now" is the media of `late` seconds ago
                late = rng.uniform(0.0, 0.08)
                reports[kind] = ClockMapping(NTP0 + t + late, (1234 + round(t * rate)) & 0xFFFFFFFF, rate, t + late)
            placed += timeline.push(EncodedFrame(kind, "H264" if kind == "video" else "opus", b"x",
                                                 (1234 + round(t * rate)) & 0xFFFFFFFF, rate, kind == "video" and i == 0,
                                                 reports[kind], "a", ("audio", "video"), WALL0 + t + 0.03))
    video = [s for f, s in placed if f.kind == "video"]
    audio = {round((f.rtp_timestamp - 1234) / 48000, 2): s for f, s in placed if f.kind == "audio"}
    steps = [b - a for a, b in zip(video, video[1:])]
    assert len(video) > 100 and all(abs(step - 0.04) < 0.0005 for step in steps), (min(steps), max(steps))
    captured = {round((f.rtp_timestamp - 1234) / 90000, 2): s for f, s in placed if f.kind == "video"}
    assert all(abs(audio[t] - s) <= 0.08 for t, s in captured.items() if t in audio)  # in sync within a report's lateness


def test_a_report_keeps_placing_frames_past_the_rtp_wrap_and_a_new_ssrc_brings_its_own() -> None:
    """An RTMP publisher's one mapping serves a whole 24/7 stream: RTP differences are signed 32-bit,
    which wrap 6.6 h past the report at 90 kHz. And a WHIP publisher's new SSRC starts another RTP
    timeline, whose reports must not be weighed against the old one's."""
    timeline = Timeline()
    mapping = ClockMapping(NTP0, 1234, 90000, 0.0)
    times = [0.0, 0.04, 0.08] + [600.0 * k for k in range(1, 43)]  # then every 10 min for 7 h
    placed = []
    for i, t in enumerate(times):
        placed += timeline.push(EncodedFrame("video", "H264", b"x", (1234 + round(t * 90000)) & 0xFFFFFFFF, 90000, i == 0,
                                             mapping, "a", ("video",), WALL0 + t))
    assert [round(s, 3) for _, s in placed] == [round(t, 3) for t in times]

    timeline = Timeline()
    placed = []
    for i in range(100):  # 4 s on one SSRC, then another (its RTP base unrelated), reports every second
        t = i * 0.04
        base, epoch_t = (1234, t) if i < 50 else ((1234 - 900_000_000) & 0xFFFFFFFF, t - 2.0)
        report = ClockMapping(NTP0 + (t // 1) + 0.01 if i < 50 else NTP0 + 2.0 + (epoch_t // 1) + 0.01,
                              (base + round(((t // 1) if i < 50 else (epoch_t // 1)) * 90000)) & 0xFFFFFFFF, 90000, t)
        placed += timeline.push(EncodedFrame("video", "H264", b"x", (base + round(epoch_t * 90000)) & 0xFFFFFFFF, 90000,
                                             i in (0, 50), report, "a", ("video",), WALL0 + t))
    steps = [b - a for (_, a), (_, b) in zip(placed, placed[1:])]
    assert all(abs(step - 0.04) < 0.002 for step in steps), steps
