"""The HLS ladder: which renditions a live stream is offered in.

Written as a comma-separated list, like the default `source,360p@800,180p@250`: `source` is the
publisher's own resolution (its H.264 passed through untouched; VP8 is encoded once to H.264), and
`<height>p@<kbit/s>` an H.264 rendition encoded from the source. Renditions at or above the source's
height are left out, so a 360p camera is not upscaled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_LADDER = "source,360p@800,180p@250"
_RUNG = re.compile(r"^(\d{2,4})p@(\d{2,5})$")


@dataclass(frozen=True, slots=True)
class RenditionSpec:
    name: str
    height: int | None  # None: the source's
    kbps: int  # video bit rate when encoded here; for `source`, used only when the source is transcoded


@dataclass(frozen=True, slots=True)
class Rendition:
    """A rendition as encoded for one stream."""

    name: str
    width: int
    height: int
    kbps: int
    passthrough: bool  # the publisher's own H.264, not re-encoded


class LadderError(ValueError):
    pass


def parse_ladder(text: str, source_kbps: int = 2500) -> tuple[RenditionSpec, ...]:
    rungs: list[RenditionSpec] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "source":
            rungs.append(RenditionSpec("source", None, source_kbps))
            continue
        match = _RUNG.match(item)
        if match is None:
            raise LadderError(f"{raw.strip()!r} is not 'source' or '<height>p@<kbit/s>' (like 360p@800)")
        height, kbps = int(match[1]), int(match[2])
        if height % 2 or not 90 <= height <= 2160:
            raise LadderError(f"{raw.strip()!r}: the height must be even, from 90 to 2160")
        rungs.append(RenditionSpec(f"{height}p", height, kbps))
    if not rungs:
        raise LadderError("the ladder needs at least one rendition")
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise LadderError("a rendition is listed twice")
    return tuple(rungs)


def plan(specs: tuple[RenditionSpec, ...], codec: str, width: int, height: int) -> list[Rendition]:
    """The renditions for a source of `codec` at `width`×`height`, highest first. A rung names the short
    side, as players do: a portrait phone camera's "360p" is 360 wide (not a 202×360 sliver)."""
    out: list[Rendition] = []
    short, long = min(width, height), max(width, height)
    for spec in specs:
        if spec.height is None:
            out.append(Rendition("source", width, height, spec.kbps, passthrough=codec == "H264"))
        elif spec.height < short:
            other = max(2, round(long * spec.height / short / 2) * 2)
            scaled_w, scaled_h = (other, spec.height) if width >= height else (spec.height, other)
            out.append(Rendition(spec.name, scaled_w, scaled_h, spec.kbps, passthrough=False))
    if not out:  # every rung was above the source: offer the source itself
        out.append(Rendition("source", width, height, specs[0].kbps, passthrough=codec == "H264"))
    out.sort(key=lambda r: -min(r.width, r.height))
    return out
