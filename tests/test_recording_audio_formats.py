"""The recorder's writer waits for the first audio frame to learn the audio's format (Opus from WebRTC,
AAC from RTMP). A stream that says it has audio and sends none must still be written, and its end must
still end the writer, however short the stream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from media_clips import encode_video
from media_probe import probe

from recorder.recording import Recording, RecordingOptions
from recorder.storage import open_storage
from sfu.frame_sink import EncodedFrame, FrameSinks
from sfu.sender_reports import NTP_EPOCH_OFFSET, ClockMapping


async def test_a_short_stream_whose_audio_never_comes_is_written_and_its_end_ends_the_writer(tmp_path: Path) -> None:
    storage = open_storage(f"file://{tmp_path / 'store'}")
    recording = Recording("room", tmp_path / "spool", storage, "rec", FrameSinks(), RecordingOptions())
    await recording.start()
    now = time.time()
    mapping = ClockMapping(now + NTP_EPOCH_OFFSET, 0, 90_000, time.monotonic())
    frames = encode_video("h264", frames=150, width=320, height=240, gop=30)  # 5 s: past the timeline's hold
    for i, data in enumerate(frames):
        recording.on_frame("room", EncodedFrame("video", "H264", data, i * 3000, 90_000, i % 30 == 0, mapping,
                                                "publisher", ("audio", "video"), now + i / 30))
    await asyncio.wait_for(recording.stop(), timeout=20)  # the writer ends with the stream
    info = probe(recording.spool)
    assert info.codec("video") == "h264" and info.duration > 2.0, info
    await storage.close()
