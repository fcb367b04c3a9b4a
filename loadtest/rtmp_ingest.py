"""Benchmark: what one RTMP stream costs the media process to take in, per second of media.

    .venv/bin/python loadtest/rtmp_ingest.py --seconds 120 --rounds 3

FFmpeg encodes `--seconds` of 720p30 H.264 (x264 veryfast, zerolatency: no B-frames, a keyframe every
2 s, ~2.5 Mbit/s) and AAC (128 kbit/s, 44.1 kHz stereo, like OBS's default) into an FLV file once. Each
round sends those tags through what the server runs for an RTMP publisher, in this process and faster
than real time: the RTMP chunk stream (4096-byte chunks, as OBS sends them) read back by
`sfu.rtmp.chunks.ChunkReader`, the FLV tags read, then

- video: the H.264 frames cut into RTP packets (`sfu.rtmp.rtp.H264Cutter`), and
- audio: the AAC decoded and encoded once to Opus RTP (`sfu.rtmp.rtp.AacToOpus`),

timed apart (process CPU, all threads). Figures: CPU seconds per media second (the share of a core one
stream takes) for pass-through video and for AAC -> Opus, medians over the rounds; the packets made.
The packets then go to viewers as any publisher's do (BENCHMARKS.md, "Forwarding").

An encoder that sends B-frames (OBS's x264 default) has its video re-encoded once without them
(`sfu.rtmp.reencode`): `--reencode` also encodes the same picture with two B-frames (x264 veryfast,
no zerolatency) and feeds its frames to `WithoutBFrames` in real-time order, timing its decode and
encode threads the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from sfu.rtmp.chunks import AUDIO, VIDEO, ChunkReader, ChunkWriter, Message  # noqa: E402
from sfu.rtmp.flv import aac_config, audio_tag, avc_config, nal_units, video_tag  # noqa: E402
from sfu.rtmp.reencode import WithoutBFrames  # noqa: E402
from sfu.rtmp.rtp import AacToOpus, H264Cutter, RtmpClock  # noqa: E402


def encode(seconds: int, path: Path, bframes: int = 0) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-ac", "2",
         "-c:v", "libx264", "-preset", "veryfast", *(["-tune", "zerolatency"] if not bframes else []),
         "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k", "-g", "60", "-bf", str(bframes),
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)],
        check=True,
    )


def flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(type, milliseconds, body) of every audio and video tag of an FLV file."""
    data = path.read_bytes()
    offset = struct.unpack_from(">I", data, 5)[0] + 4  # the header, then PreviousTagSize0
    tags = []
    while offset + 11 <= len(data):
        kind = data[offset] & 0x1F
        size = int.from_bytes(data[offset + 1:offset + 4], "big")
        ms = int.from_bytes(data[offset + 4:offset + 7], "big") | (data[offset + 7] << 24)
        body = data[offset + 11:offset + 11 + size]
        if kind in (AUDIO, VIDEO):
            tags.append((kind, ms, body))
        offset += 11 + size + 4
    return tags


def wire(tags: list[tuple[int, int, bytes]]) -> bytes:
    writer = ChunkWriter()
    writer.chunk_size = 4096
    return b"".join(writer.encode(4 if kind == AUDIO else 6, Message(kind, 1, ms, body)) for kind, ms, body in tags)


def one_round(stream: bytes) -> dict[str, float]:
    reader = ChunkReader()
    reader.chunk_size = 4096
    clock = RtmpClock()
    cutter = H264Cutter(102)
    opus: AacToOpus | None = None
    length_size = 4
    video_cpu = audio_cpu = 0.0
    packets = {"video": 0, "audio": 0}
    last_ms = 0
    start = time.process_time()
    for at in range(0, len(stream), 65536):  # as the socket hands it over
        for message in reader.feed(stream[at:at + 65536]):
            t0 = time.process_time()
            last_ms = message.timestamp
            if message.type_id == VIDEO:
                tag = video_tag(message.payload)
                if tag.packet == 0:
                    config = avc_config(tag.data)
                    cutter.parameter_sets, length_size = (*config.sps, *config.pps), config.length_size
                elif tag.packet == 1:
                    made = cutter.frame(nal_units(tag.data, length_size), clock.video(message.timestamp), tag.keyframe)
                    packets["video"] += len(made)
                video_cpu += time.process_time() - t0
            else:
                tag = audio_tag(message.payload)
                if tag.packet == 0:
                    opus = AacToOpus(aac_config(tag.data), bytes(tag.data), 111)
                elif opus is not None:
                    packets["audio"] += len(opus.unit(tag.data, message.timestamp, clock))
                audio_cpu += time.process_time() - t0
    total = time.process_time() - start
    media = last_ms / 1000
    return {"media_seconds": media, "chunks_and_tags_per_media_s": (total - video_cpu - audio_cpu) / media,
            "video_per_media_s": video_cpu / media, "aac_to_opus_per_media_s": audio_cpu / media,
            "video_packets": packets["video"], "opus_packets": packets["audio"]}


async def reencode_round(tags: list[tuple[int, int, bytes]]) -> dict[str, float]:
    """CPU per media second of re-encoding a B-frame stream's video (decode + libx264, both threads)."""
    out = [0]
    reencoder = WithoutBFrames(lambda data, pts, key: out.__setitem__(0, out[0] + 1), 100, 3000, "bench")
    parameter_sets = b""
    length_size, pushed, last_ms = 4, 0, 0
    start = time.process_time()
    for kind, ms, body in tags:
        if kind != VIDEO:
            continue
        tag = video_tag(body)
        if tag.packet == 0:
            config = avc_config(tag.data)
            parameter_sets = b"".join(b"\x00\x00\x00\x01" + p for p in (*config.sps, *config.pps))
            length_size = config.length_size
            continue
        if tag.packet != 1:
            continue  # the end of the sequence
        units = b"".join(b"\x00\x00\x00\x01" + bytes(u) for u in nal_units(tag.data, length_size))
        reencoder.push((parameter_sets if tag.keyframe else b"") + units, ms + tag.composition, ms, tag.keyframe)
        pushed, last_ms = pushed + 1, ms
        while pushed - out[0] > 20:  # as an encoder sends: never more queued than a live stream would
            await asyncio.sleep(0.002)
    while out[0] < pushed - 3:
        await asyncio.sleep(0.01)
    total = time.process_time() - start
    await reencoder.close()
    assert reencoder.dropped == 0 and reencoder.errors == 0, (reencoder.dropped, reencoder.errors, pushed, out[0])
    return {"media_seconds": last_ms / 1000, "reencode_per_media_s": total / (last_ms / 1000), "frames": out[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reencode", action="store_true", help="also time the re-encode of a B-frame stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "obs.flv"
        encode(args.seconds, path)
        tags = flv_tags(path)
        if args.reencode:
            encode(args.seconds, Path(folder) / "bframes.flv", bframes=2)
            b_tags = flv_tags(Path(folder) / "bframes.flv")
    stream = wire(tags)
    bitrate = len(stream) * 8 / (tags[-1][1] / 1000)
    rounds = [one_round(stream) for _ in range(args.rounds)]
    for figures in rounds:
        print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}))
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    per_stream = medians["chunks_and_tags_per_media_s"] + medians["video_per_media_s"]
    print(json.dumps({
        "ingest_kbit_s": round(bitrate / 1000),
        "median_core_share_pass_through": round(per_stream, 5),
        "median_core_share_aac_to_opus": round(medians["aac_to_opus_per_media_s"], 5),
        "median_core_share_total": round(per_stream + medians["aac_to_opus_per_media_s"], 5),
        "streams_per_core_at_70pct": round(0.7 / (per_stream + medians["aac_to_opus_per_media_s"]), 1),
    }))
    if args.reencode:
        reencodes = [asyncio.run(reencode_round(b_tags)) for _ in range(args.rounds)]
        for figures in reencodes:
            print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}))
        share = statistics.median(r["reencode_per_media_s"] for r in reencodes)
        print(json.dumps({"median_core_share_reencode_b_frames": round(share, 4),
                          "median_core_share_total_with_reencode": round(per_stream + medians["aac_to_opus_per_media_s"] + share, 4)}))


if __name__ == "__main__":
    main()
