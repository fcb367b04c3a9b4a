"""Benchmark: CPU of the HLS ladder transcoder against the ffmpeg command line doing the same ladder.

    .venv/bin/python loadtest/hls_transcode.py --seconds 60 --rounds 3

The input is 720p30 H.264 (~2 Mbit/s, a keyframe every 2 s) with Opus, as a publisher sends it. Our
side is the real path after the SFU: the timeline, the ladder transcoder (decode once; 360p and 180p
with libx264 veryfast/zerolatency/baseline; AAC once; the source passed through) and the CMAF
packager cutting parts and segments, in this process (CPU of all its threads). The baseline is ffmpeg
reading the same packets from an MP4 and producing the same ladder (source copied, the same scaler
and x264 settings, AAC) into its null muxer, so it has no packaging cost at all. Rounds alternate
the two; medians and the median of the per-round ratios are printed as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE)]

from media_clips import encode_audio, encode_video  # noqa: E402
from recorder.hls.ladder import DEFAULT_LADDER, parse_ladder, plan  # noqa: E402
from recorder.hls.transcoder import AAC_KBPS, LadderOptions, LadderTranscoder, Output, x264_options  # noqa: E402
from recorder.mp4 import OPUS, FragmentedMp4  # noqa: E402
from recorder.timeline import Timeline  # noqa: E402
from recording_cost import FPS, GOP, frame_source  # noqa: E402

WIDTH, HEIGHT = 1280, 720


def ours(seconds: float, video: list[bytes], audio: list[bytes]) -> tuple[float, int]:
    """(CPU seconds, bytes of parts) for `seconds` of the stream through timeline, transcoder and packager."""
    produced = 0

    def emit(index: int, outputs: list[Output]) -> None:
        nonlocal produced
        produced += sum(len(o.data) for o in outputs)

    transcoder = LadderTranscoder(parse_ladder(DEFAULT_LADDER), LadderOptions(), emit, lambda: None)
    timeline = Timeline()
    cpu0 = time.process_time()
    for frame in frame_source("h264", seconds, video, audio):
        for placed, at in timeline.push(frame):
            transcoder.push(placed, at)
    for placed, at in timeline.flush():
        transcoder.push(placed, at)
    transcoder.finish()
    return time.process_time() - cpu0, produced


def source_file(seconds: float, video: list[bytes], audio: list[bytes], folder: Path) -> Path:
    """The same H.264 and Opus packets in an MP4, for ffmpeg to read."""
    path = folder / "source.mp4"
    writer = FragmentedMp4(path, (WIDTH, HEIGHT), OPUS)
    timeline = Timeline()
    for frame in frame_source("h264", seconds, video, audio):
        for placed, at in timeline.push(frame):
            if placed.kind == "video":
                writer.write_video(placed.data, at, placed.keyframe)
            else:
                writer.write_audio(placed.data, at)
    writer.close()
    return path


def ffmpeg_command(source: Path) -> list[str]:
    options = LadderOptions()
    renditions = [r for r in plan(parse_ladder(DEFAULT_LADDER), "H264", WIDTH, HEIGHT) if not r.passthrough]
    split = f"[0:v]split={len(renditions)}" + "".join(f"[s{i}]" for i in range(len(renditions)))
    scales = [f"[s{i}]scale={r.width}:{r.height}:flags=bilinear[v{i}]" for i, r in enumerate(renditions)]
    command = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-filter_complex", ";".join([split, *scales]),
               "-map", "0:v", "-c:v:0", "copy"]
    for i, rendition in enumerate(renditions):
        x264 = x264_options(rendition, options)
        n = i + 1
        command += ["-map", f"[v{i}]", f"-c:v:{n}", "libx264", f"-preset:v:{n}", x264["preset"],
                    f"-tune:v:{n}", x264["tune"], f"-profile:v:{n}", x264["profile"], f"-bf:v:{n}", "0",
                    f"-g:v:{n}", x264["g"], f"-keyint_min:v:{n}", x264["keyint_min"],
                    f"-sc_threshold:v:{n}", "0", f"-b:v:{n}", f"{rendition.kbps}k", f"-maxrate:v:{n}", x264["maxrate"],
                    f"-bufsize:v:{n}", x264["bufsize"]]
    command += ["-map", "0:a", "-c:a", "aac", "-b:a", f"{AAC_KBPS}k", "-f", "null", "-"]
    return command


def ffmpeg_cpu(command: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="media seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    audio = encode_audio(seconds=2.0)
    video = encode_video("h264", frames=300, width=WIDTH, height=HEIGHT, bitrate=2_000_000, gop=GOP, noise=True)
    ours_cpu: list[float] = []
    theirs_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tally-hls-") as tmp:
        source = source_file(args.seconds, video, audio, Path(tmp))
        command = ffmpeg_command(source)
        produced = 0
        for _ in range(args.rounds):
            cpu, produced = ours(args.seconds, video, audio)
            ours_cpu.append(cpu)
            theirs_cpu.append(ffmpeg_cpu(command))
    ratios = [a / b for a, b in zip(ours_cpu, theirs_cpu)]
    print(json.dumps({
        "media_seconds": args.seconds,
        "ladder": DEFAULT_LADDER,
        "input": f"{WIDTH}x{HEIGHT}@{FPS} H.264 + Opus",
        "ours_cpu_s": [round(c, 2) for c in ours_cpu],
        "ffmpeg_cli_cpu_s": [round(c, 2) for c in theirs_cpu],
        "ours_median_share_of_a_core": round(statistics.median(ours_cpu) / args.seconds, 3),
        "ffmpeg_median_share_of_a_core": round(statistics.median(theirs_cpu) / args.seconds, 3),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "ladder_bytes_per_round": produced,
        "ffmpeg_command": " ".join(command[:6]) + " … (see ffmpeg_command() in this file)",
    }), flush=True)


if __name__ == "__main__":
    main()
