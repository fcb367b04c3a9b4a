"""How a live stream arrives, for its broadcaster while it is live: the node that takes the stream in
samples it every `every` seconds (video and audio bitrate, frame rate, keyframe interval, packets
missing on the way, viewers) and tells the bus (`stream.ingest`); every signaling instance keeps the
last minutes of each live stream, and says in plain words what looks wrong.

The samples come from counters the packet path keeps anyway (octets, marker bits, keyframe starts,
sequence gaps): nothing is added per packet but a bit test. A relay's room is not sampled (its
stream is sampled at its origin).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus.bus import Bus, Subscription
from bus.message import Message
from sfu.feed import Feed
from sfu.node import SfuNode
from lifecycle.tasks import Periodic, stop

TOPIC = "stream.ingest"
KEPT = 150  # samples kept per stream: five minutes at one every two seconds
MAX_STREAMS = 10_000  # live streams followed by one signaling instance


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # unix time
    video_kbps: float
    audio_kbps: float
    fps: float
    keyframe_interval: float  # seconds; 0 when not known yet
    loss_percent: float  # packets found missing on the way (before any repair)
    viewers: int


@dataclass(slots=True)
class _Mark:
    at: float
    frames: int
    packets: int
    gaps: int
    loss: object  # the feed's loss tracker (a new one after a takeover starts its counts again)
    feed: Feed  # (an id() may be reused by a new feed: the mark holds on to its own)


class IngestSampler:
    """On a media process: samples the streams that originate on its node."""

    def __init__(self, node: SfuNode, bus: Bus, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, every: float = 2.0) -> None:
        self._node = node
        self._bus = bus
        self._clock = clock
        self._monotonic = monotonic
        self._marks: dict[int, _Mark] = {}  # id(feed) -> the counts at the last sample
        self.latest: dict[str, Sample] = {}  # channel -> its stream's last sample (streams live here now)
        self._periodic = Periodic("ingest-sampler", every, self.sample)

    async def sample(self) -> None:
        now, mono = self._clock(), self._monotonic()
        marks: dict[int, _Mark] = {}
        latest: dict[str, Sample] = {}
        for room in list(self._node.rooms.values()):
            if room.relay_from is not None or room.publisher is None or not room.live:
                continue
            video, audio = room.feeds.get("video"), room.feeds.get("audio")
            fps = loss = 0.0
            if video is not None:
                fps, loss = self._rates(video, mono, marks)
            sample = Sample(at=now, video_kbps=round(video.bitrate / 1000, 1) if video else 0.0,
                            audio_kbps=round(audio.bitrate / 1000, 1) if audio else 0.0, fps=fps,
                            keyframe_interval=_keyframe_interval(video, mono) if video else 0.0,
                            loss_percent=loss, viewers=room.audience)
            latest[room.name] = sample
            await self._bus.publish(Message(TOPIC, {"channel": room.name, "stream": room.stream, **asdict(sample)}))
        self._marks, self.latest = marks, latest

    def _rates(self, feed: Feed, mono: float, marks: dict[int, _Mark]) -> tuple[float, float]:
        """(frames per second, percent of packets missing) since the last sample of `feed`."""
        mark = _Mark(mono, feed.frames_in, feed.packets_in, feed.loss.gaps, feed.loss, feed)
        marks[id(feed)] = mark
        last = self._marks.get(id(feed))
        if last is None or last.feed is not feed or mono <= last.at:
            return 0.0, 0.0
        gaps = mark.gaps - (last.gaps if last.loss is feed.loss else 0)
        packets = max(0, mark.packets - last.packets)
        fps = max(0, mark.frames - last.frames) / (mono - last.at)
        return round(fps, 1), round(100 * gaps / max(1, packets + gaps), 2)

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        await self._periodic.close()


class IngestCollector(Collector):
    """/metrics of a media process: each stream it takes in, as last sampled, labelled by channel (one
    series per live stream here, gone when it ends). WebRTC and RTMP streams alike."""

    def __init__(self, sampler: IngestSampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        bits = GaugeMetricFamily("tally_stream_ingest_bits_per_second", "What a live stream's publisher sends, "
                                 "by kind (video, audio)", labels=["channel", "kind"])
        fps = GaugeMetricFamily("tally_stream_ingest_frames_per_second", "Video frames a live stream's publisher "
                                "sends", labels=["channel"])
        keyframes = GaugeMetricFamily("tally_stream_keyframe_interval_seconds", "Seconds between a live stream's "
                                      "keyframes", labels=["channel"])
        loss = GaugeMetricFamily("tally_stream_ingest_loss_ratio", "Share of a live stream's video packets found "
                                 "missing on the way in (before repair)", labels=["channel"])
        viewers = GaugeMetricFamily("tally_stream_viewers", "WebRTC viewers of a live stream (its relays' "
                                    "included), on its origin", labels=["channel"])
        for channel, sample in list(self._sampler.latest.items()):
            bits.add_metric([channel, "video"], sample.video_kbps * 1000)
            bits.add_metric([channel, "audio"], sample.audio_kbps * 1000)
            fps.add_metric([channel], sample.fps)
            keyframes.add_metric([channel], sample.keyframe_interval)
            loss.add_metric([channel], sample.loss_percent / 100)
            viewers.add_metric([channel], sample.viewers)
        yield from (bits, fps, keyframes, loss, viewers)


def _keyframe_interval(feed: Feed, mono: float) -> float:
    """Seconds between keyframes: the last two's, or longer if the next is later than that already."""
    if not feed.last_keyframe_at:
        return 0.0
    return round(max(feed.keyframe_interval, mono - feed.last_keyframe_at), 2)


class IngestHistory:
    """On every signaling instance: the last minutes of each live stream's samples."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._streams: dict[str, tuple[str, deque[Sample]]] = {}  # channel -> (stream, samples)
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def samples(self, channel: str) -> list[Sample]:
        held = self._streams.get(channel)
        return list(held[1]) if held is not None else []

    def add(self, channel: str, stream: str, sample: Sample) -> None:
        held = self._streams.get(channel)
        if held is None or held[0] != stream:  # a new stream starts its history afresh
            if held is None and len(self._streams) >= MAX_STREAMS:
                self._streams.pop(next(iter(self._streams)))
            held = self._streams[channel] = (stream, deque(maxlen=KEPT))
        held[1].append(sample)

    def ended(self, channel: str) -> None:
        self._streams.pop(channel, None)

    async def _listen(self, subscription: Subscription) -> None:
        while not self._closed:
            message = await subscription.get()
            payload = message.payload
            try:
                if message.topic == TOPIC:
                    self.add(str(payload["channel"]), str(payload["stream"]), Sample(
                        at=float(payload["at"]), video_kbps=float(payload["video_kbps"]),
                        audio_kbps=float(payload["audio_kbps"]), fps=float(payload["fps"]),
                        keyframe_interval=float(payload["keyframe_interval"]),
                        loss_percent=float(payload["loss_percent"]), viewers=int(payload["viewers"])))
                elif message.topic == "stream.ended":
                    self.ended(str(payload["channel"]))
            except (KeyError, TypeError, ValueError):
                continue  # not a sample this version reads

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(TOPIC, "stream.ended")
        self._task = asyncio.get_running_loop().create_task(self._listen(self._subscription), name="ingest-history")

    async def close(self) -> None:
        self._closed = True
        await stop([self._task], "the ingest history")
        self._task = None
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None


def warnings(samples: list[Sample], window: float = 10.0) -> list[str]:
    """What looks wrong in the last `window` seconds of samples, in words a broadcaster can act on."""
    if not samples:
        return []
    recent = [s for s in samples if s.at >= samples[-1].at - window]
    said: list[str] = []
    video = [s.video_kbps for s in recent]
    if max(video) == 0:
        said.append("No video is arriving: check that your camera or encoder is sending.")
    else:
        kbps = sum(video) / len(video)
        if kbps < 300:
            said.append(f"Video arrives at only {kbps:.0f} kbit/s: the picture will look blurry. "
                        "Raise your encoder's bitrate, or check your upload speed.")
        fps = sum(s.fps for s in recent) / len(recent)
        if 0 < fps < 20:
            said.append(f"Only {fps:.0f} frames per second arrive: motion will stutter. Lower the resolution, "
                        "or free your computer's processor.")
    keyframes = recent[-1].keyframe_interval
    if keyframes > 4.5:
        said.append(f"Keyframes every {keyframes:.0f} s: set 2 s in your encoder (keyframe interval), "
                    "or new viewers wait that long for a picture.")
    loss = max(s.loss_percent for s in recent)
    if loss >= 2:
        said.append(f"Your upload is dropping packets ({loss:.0f} % go missing): use a wired connection, "
                    "or lower your bitrate.")
    return said
