"""CMAF (fragmented MP4) for HLS: init segments and fragments, built box by box.

A part of an LL-HLS playlist is one fragment (`moof` + `mdat`) holding a third of a second of one
track (a rendition's video, or the audio all renditions share); a segment is its parts one after the
other, and the same bytes are a DASH segment of CMAF chunks. Building the boxes here
(rather than through a muxer that decides by itself when to cut) puts every cut exactly where the
packager wants it, with nothing buffered in between.

H.264 arrives in Annex B (start codes, parameter sets in band) and is stored length-prefixed, as
`avc1` wants; the parameter sets also go into the init segment's `avcC`. AAC is raw access units with
its AudioSpecificConfig in `esds`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

VIDEO_TIMESCALE = 90000
AUDIO_TIMESCALE = 48000
VIDEO_TRACK = 1
AUDIO_TRACK = 2

_SYNC = 0x02000000  # sample_depends_on = 2: a sync sample
_NON_SYNC = 0x01010000  # depends on others, sample_is_non_sync_sample
_MATRIX = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_NAL_SPS, _NAL_PPS, _NAL_AUD = 7, 8, 9


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# --- H.264 bitstream ---


def nal_units(annex_b: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, without start codes (trailing zero bytes dropped)."""
    units = []
    for piece in annex_b.split(b"\x00\x00\x01"):
        piece = piece.rstrip(b"\x00")
        if piece:
            units.append(piece)
    return units


def length_prefixed(units: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(u)) + u for u in units if u[0] & 0x1F != _NAL_AUD)


@dataclass(frozen=True, slots=True)
class ParameterSets:
    sps: bytes
    pps: bytes

    @property
    def codec(self) -> str:
        """The RFC 6381 codec string, like `avc1.42e01f`."""
        return "avc1." + self.sps[1:4].hex()


def parameter_sets(units: Iterable[bytes]) -> ParameterSets | None:
    sps = pps = None
    for unit in units:
        kind = unit[0] & 0x1F
        if kind == _NAL_SPS and sps is None:
            sps = unit
        elif kind == _NAL_PPS and pps is None:
            pps = unit
    return ParameterSets(sps, pps) if sps is not None and pps is not None and len(sps) >= 4 else None


# --- init segment ---


@dataclass(frozen=True, slots=True)
class VideoTrack:
    width: int
    height: int
    parameter_sets: ParameterSets


@dataclass(frozen=True, slots=True)
class AudioTrack:
    config: bytes  # AudioSpecificConfig
    channels: int = 2
    sample_rate: int = AUDIO_TIMESCALE
    bitrate: int = 128_000


def init_segment(video: VideoTrack | None, audio: AudioTrack | None) -> bytes:
    traks = []
    trexs = []
    if video is not None:
        traks.append(_video_trak(video))
        trexs.append(_trex(VIDEO_TRACK))
    if audio is not None:
        traks.append(_audio_trak(audio))
        trexs.append(_trex(AUDIO_TRACK))
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100), bytes(10), _MATRIX, bytes(24),
        struct.pack(">I", AUDIO_TRACK + 1),
    )
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    return ftyp + box(b"moov", mvhd, *traks, box(b"mvex", *trexs))


def _trex(track: int) -> bytes:
    return full_box(b"trex", 0, 0, struct.pack(">IIIII", track, 1, 0, 0, 0))


def _trak(track: int, timescale: int, handler: bytes, name: bytes, media_header: bytes, sample_entry: bytes,
          width: int = 0, height: int = 0, volume: int = 0) -> bytes:
    tkhd = full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, track, 0, 0), bytes(8),
        struct.pack(">hhhH", 0, 0, volume, 0), _MATRIX, struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, bytes(12), name + b"\x00")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def _video_trak(video: VideoTrack) -> bytes:
    ps = video.parameter_sets
    profile = ps.sps[1]
    avcc = bytes([1, ps.sps[1], ps.sps[2], ps.sps[3], 0xFF, 0xE1]) + struct.pack(">H", len(ps.sps)) + ps.sps
    avcc += bytes([1]) + struct.pack(">H", len(ps.pps)) + ps.pps
    if profile in (100, 110, 122, 144):  # High profiles carry chroma format and bit depths (4:2:0, 8 bit)
        avcc += bytes([0xFD, 0xF8, 0xF8, 0])
    entry = box(
        b"avc1",
        bytes(6), struct.pack(">H", 1), bytes(16),
        struct.pack(">HHIIIH", video.width, video.height, 0x00480000, 0x00480000, 0, 1),
        bytes(32), struct.pack(">Hh", 0x0018, -1),
        box(b"avcC", avcc),
    )
    vmhd = full_box(b"vmhd", 0, 1, bytes(8))
    return _trak(VIDEO_TRACK, VIDEO_TIMESCALE, b"vide", b"Video", vmhd, entry, video.width, video.height)


def _descriptor(tag: int, payload: bytes) -> bytes:
    size = len(payload)
    encoded = bytes([0x80 | (size >> 21 & 0x7F), 0x80 | (size >> 14 & 0x7F), 0x80 | (size >> 7 & 0x7F), size & 0x7F])
    return bytes([tag]) + encoded + payload


def _audio_trak(audio: AudioTrack) -> bytes:
    decoder_config = _descriptor(
        4, bytes([0x40, 0x15]) + struct.pack(">I", 0)[1:] + struct.pack(">II", audio.bitrate, audio.bitrate)
        + _descriptor(5, audio.config)
    )
    es = _descriptor(3, struct.pack(">HB", AUDIO_TRACK, 0) + decoder_config + _descriptor(6, b"\x02"))
    entry = box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1), bytes(8),
        struct.pack(">HHHHI", audio.channels, 16, 0, 0, audio.sample_rate << 16),
        full_box(b"esds", 0, 0, es),
    )
    smhd = full_box(b"smhd", 0, 0, bytes(4))
    return _trak(AUDIO_TRACK, AUDIO_TIMESCALE, b"soun", b"Audio", smhd, entry, volume=0x0100)


# --- fragments ---


@dataclass(slots=True)
class Sample:
    data: bytes  # length-prefixed NAL units for video, one access unit for audio
    time: int  # decode (= presentation) time in the track's timescale
    duration: int
    sync: bool


def fragment(sequence: int, video: list[Sample], audio: list[Sample]) -> bytes:
    """One `moof` + `mdat` with the given samples of each track (either list may be empty)."""
    tracks = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)]
    tracks = [(t, s) for t, s in tracks if s]
    # Build once with placeholder offsets to learn the moof size, then again with the real offsets.
    moof_size = len(_moof(sequence, tracks, [0] * len(tracks)))
    offsets = []
    offset = moof_size + 8
    for _, samples in tracks:
        offsets.append(offset)
        offset += sum(len(s.data) for s in samples)
    moof = _moof(sequence, tracks, offsets)
    payload = b"".join(s.data for _, samples in tracks for s in samples)
    return moof + struct.pack(">I", 8 + len(payload)) + b"mdat" + payload


def _moof(sequence: int, tracks: list[tuple[int, list[Sample]]], offsets: list[int]) -> bytes:
    trafs = []
    for (track, samples), data_offset in zip(tracks, offsets):
        tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track))
        tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", samples[0].time))
        entries = b"".join(
            struct.pack(">III", s.duration, len(s.data), _SYNC if s.sync else _NON_SYNC) for s in samples
        )
        trun = full_box(b"trun", 0, 0x000701, struct.pack(">Ii", len(samples), data_offset), entries)
        trafs.append(box(b"traf", tfhd, tfdt, trun))
    return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), *trafs)
