"""ffprobe and ffmpeg as checkers of what the recorder wrote."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    duration: float
    streams: dict[str, dict[str, object]]  # by codec_type
    format_name: str

    def start(self, kind: str) -> float:
        return float(str(self.streams[kind]["start_time"]))

    def codec(self, kind: str) -> str:
        return str(self.streams[kind]["codec_name"])


def probe(path: Path | str) -> Probe:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    data = json.loads(out.stdout)
    return Probe(
        float(data["format"]["duration"]),
        {s["codec_type"]: s for s in data["streams"]},
        data["format"]["format_name"],
    )


def decode_errors(path: Path | str) -> str:
    """What ffmpeg reports decoding every frame of every stream ('' when it decodes cleanly).

    Frames keep their own times (`-fps_mode passthrough`) in the file's own time base (`-enc_time_base
    -1`): live timing follows the publisher's sender reports and is not a fixed rate (Chromium under
    load sends 15 fps with frames 20-110 ms apart), and rounding it to one makes ffmpeg's null muxer
    complain about repeated timestamps, which says nothing about decoding."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-enc_time_base", "-1",
                          "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    return out.stderr.strip() if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()}"


def moov_before_mdat(path: Path) -> bool:
    """A faststart MP4: the index comes before the media."""
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")
