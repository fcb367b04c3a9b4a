"""Benchmark: what recording a stream costs, per stream-hour, and whether memory stays flat.

    .venv/bin/python loadtest/recording_cost.py --minutes 60 --transcode-seconds 60

The real recorder path (timeline, fragmented MP4 spool, live upload to file:// storage, finalize to
faststart MP4) is fed 720p30 H.264 (~2 Mbit/s) + Opus frames as the SFU's frame sink hands them over,
faster than real time, in this process; CPU is the process's own (all threads). Two cases:

- H.264 pass-through: `--minutes` of media (60 = a 1-hour stream), with RSS sampled throughout;
- VP8 -> H.264: `--transcode-seconds` of 720p30 VP8 re-encoded (libx264 veryfast, zerolatency), beside
  the ffmpeg command line doing the same conversion of the same VP8 input in the same run.

Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from media_clips import encode_audio, encode_video  # noqa: E402
from recorder.recording import Recording, RecordingOptions, finalize_spool  # noqa: E402
from recorder.storage import FileStorage  # noqa: E402
from sfu.frame_sink import EncodedFrame, FrameSinks  # noqa: E402
from sfu.keyframe import is_keyframe_frame  # noqa: E402
from sfu.sender_reports import ClockMapping  # noqa: E402

FPS = 30
GOP = 60  # a keyframe every 2 s, as the recorder asks for


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def frame_source(codec: str, seconds: float, video: list[bytes], audio: list[bytes]):  # type: ignore[no-untyped-def]
    """The frames of `seconds` of a stream, in arrival order, as the SFU's sink would hand them over."""
    ntp0, wall0 = 3_900_000_000.0, time.time()
    vmap = ClockMapping(ntp0, 1000, 90000, 0.0)
    amap = ClockMapping(ntp0, 5000, 48000, 0.0)
    kinds = ("audio", "video")
    codec_name = {"h264": "H264", "vp8": "VP8"}[codec]
    keys = [is_keyframe_frame(codec_name, f) for f in video]
    n_video, n_audio = int(seconds * FPS), int(seconds * 50)
    a = 0
    for v in range(n_video):
        t = v / FPS
        while a < n_audio and a * 0.02 <= t:
            yield EncodedFrame("audio", "opus", audio[a % len(audio)], (5000 + a * 960) & 0xFFFFFFFF, 48000, False,
                               amap, "bench", kinds, wall0 + a * 0.02)
            a += 1
        i = v % len(video)
        yield EncodedFrame("video", codec_name, video[i], (1000 + v * 3000) & 0xFFFFFFFF, 90000, keys[i], vmap, "bench",
                           kinds, wall0 + t)


async def record(codec: str, seconds: float, video: list[bytes], audio: list[bytes], folder: Path) -> dict[str, float]:
    storage = FileStorage(folder / "storage")
    recording = Recording("bench", folder / "spool", storage, "recordings/bench/1", FrameSinks(),
                          RecordingOptions(upload_interval=0.5))
    await recording.start()
    rss_before = rss_mb()
    rss: list[float] = []  # sampled every 60th of the stream
    every = max(200, int(seconds * (FPS + 50) / 60))
    cpu0, wall0 = time.process_time(), time.monotonic()
    for count, frame in enumerate(frame_source(codec, seconds, video, audio)):
        recording.on_frame("bench", frame)
        if count % 200 == 0:
            while recording.backlog > 500:  # feed as fast as the writer takes it, never dropping
                await asyncio.sleep(0.002)
        if count % every == 0:
            rss.append(rss_mb())
    await recording.stop()
    record_cpu = time.process_time() - cpu0
    record_wall = time.monotonic() - wall0
    cpu1 = time.process_time()
    done = await finalize_spool(recording.folder, storage, "recordings/bench/1")
    finalize_cpu = time.process_time() - cpu1
    assert recording.dropped == 0, recording.dropped
    return {
        "media_seconds": round(done.info.duration, 1),
        "bytes": done.size,
        "record_cpu_s": round(record_cpu, 2),
        "record_wall_s": round(record_wall, 1),
        "finalize_cpu_s": round(finalize_cpu, 2),
        "cpu_s_per_stream_hour": round((record_cpu + finalize_cpu) * 3600 / done.info.duration, 1),
        "cpu_share_of_a_core": round((record_cpu + finalize_cpu) / done.info.duration, 4),
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_at_10pct": round(rss[len(rss) // 10], 1),
        "rss_mb_at_end": round(rss[-1], 1),
        "rss_mb_peak_while_recording": round(max(rss), 1),
        "recorder_mb_peak": round(max(rss) - rss_before, 1),
    }


def ffmpeg_baseline(video: list[bytes], seconds: float, folder: Path) -> float:
    """CPU seconds of the ffmpeg CLI converting the same VP8 frames to the same H.264 settings."""
    ivf = folder / "input.ivf"
    with ivf.open("wb") as out:  # an IVF file: 32-byte header, then 12-byte frame headers
        n = int(seconds * FPS)
        out.write(b"DKIF" + (0).to_bytes(2, "little") + (32).to_bytes(2, "little") + b"VP80"
                  + (1280).to_bytes(2, "little") + (720).to_bytes(2, "little") + FPS.to_bytes(4, "little")
                  + (1).to_bytes(4, "little") + n.to_bytes(4, "little") + bytes(4))
        for i in range(n):
            data = video[i % len(video)]
            out.write(len(data).to_bytes(4, "little") + i.to_bytes(8, "little") + data)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(ivf), "-c:v", "libx264", "-preset", "veryfast",
                    "-tune", "zerolatency", "-crf", "23", "-bf", "0", "-f", "mp4", str(folder / "ffmpeg.mp4")],
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="media minutes of the H.264 pass-through case")
    parser.add_argument("--transcode-seconds", type=float, default=60.0, help="media seconds of the VP8 case")
    args = parser.parse_args()
    audio = encode_audio(seconds=2.0)
    h264 = encode_video("h264", frames=300, width=1280, height=720, bitrate=2_000_000, gop=GOP, noise=True)
    vp8 = encode_video("vp8", frames=300, width=1280, height=720, bitrate=2_000_000, gop=GOP, noise=True)
    with tempfile.TemporaryDirectory(prefix="tally-rec-") as tmp:
        folder = Path(tmp)
        result = await record("h264", args.minutes * 60, h264, audio, folder / "h264")
        print(json.dumps({"case": "h264 pass-through", **result}), flush=True)
        result = await record("vp8", args.transcode_seconds, vp8, audio, folder / "vp8")
        baseline = ffmpeg_baseline(vp8, args.transcode_seconds, folder)
        result["ffmpeg_cli_cpu_s"] = round(baseline, 2)
        result["ratio_to_ffmpeg"] = round(result["record_cpu_s"] / baseline, 2)
        print(json.dumps({"case": "vp8 -> h264", **result}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
