"""The SFU node's and the chat hub's counters on /metrics, read when scraped (nothing on the hot paths)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from sfu.aiortc_internals import DatagramGuard
from sfu.node import SfuNode
from sfu.output import DROP_REASONS
from sfu.rtmp.ingest import RtmpPublisher
from sfu.rtmp.session import RtmpServer
from signaling.chat.hub import FANOUT_BUCKETS, ChatHub

_GAUGES = {
    "rooms": "streams live on this node",
    "publishers": "publishers connected",
    "viewers": "viewers connected",
    "pending": "WebRTC sessions negotiating or connecting (not viewers yet)",
}
_COUNTERS = {
    "packets_in": "RTP packets received from publishers",
    "packets_out": "RTP packets forwarded to viewers",
    "retransmitted": "RTP packets re-sent to viewers from the cache",
    "nacks_refused": "packets viewers asked for again that were not re-sent (retransmission budget, or already re-sent within a round trip)",
    "keyframe_waits": "times a slow viewer was sent back to wait for a keyframe",
    "sink_frames": "whole frames handed to the recorder, HLS and thumbnails",
    "sink_frames_skipped": "frames not handed on because a packet of them (or of one they depend on) never came",
    "sink_gaps": "times the frame sinks skipped to the next keyframe after a loss that was not repaired",
    "stock_decoders": "aiortc decoders created in this process (forwarding creates none)",
    "stock_encoders": "aiortc encoders created in this process (forwarding creates none)",
}


class SfuCollector(Collector):
    def __init__(self, node: SfuNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._node.stats()
        for name, help_text in _GAUGES.items():
            yield GaugeMetricFamily(f"tally_sfu_{name}", help_text, value=stats[name])
        for name, help_text in _COUNTERS.items():
            yield CounterMetricFamily(f"tally_sfu_{name}", help_text, value=stats[name])
        yield CounterMetricFamily("tally_sfu_sink_skipped_seconds", "media time the frame sinks skipped after losses",
                                  value=stats["sink_skipped_ms"] / 1000)
        dropped = CounterMetricFamily("tally_sfu_packets_dropped", "RTP packets for viewers that could not be sent, by reason",
                                      labels=["reason"])
        for reason in DROP_REASONS[1:]:
            dropped.add_metric([reason], stats[f"dropped_{reason}"])
        yield dropped
        refused = CounterMetricFamily(
            "tally_sfu_input_refused", "what peers and strangers sent that was dropped: malformed STUN, non-STUN "
            "datagrams not from the session's peer, packets inside a session that could not be handled", labels=["reason"])
        for reason in DatagramGuard.KINDS:
            refused.add_metric([reason], stats[reason])
        yield refused


def register_sfu_metrics(registry: CollectorRegistry, node: SfuNode) -> None:
    registry.register(SfuCollector(node))


class RtmpCollector(Collector):
    """RTMP ingest: connections and bytes on this process, and each live RTMP stream's health (labelled
    by channel: at most one series per live stream, gone when it ends)."""

    def __init__(self, server: RtmpServer, node: SfuNode) -> None:
        self._server = server
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        server = self._server
        yield GaugeMetricFamily("tally_rtmp_connections", "RTMP(S) connections open on this process",
                                value=len(server.connections))
        yield CounterMetricFamily("tally_rtmp_received_bytes", "bytes RTMP(S) encoders sent", value=server.received_bytes)
        yield CounterMetricFamily("tally_rtmp_connections_refused", "RTMP(S) connections turned away (too many, in all "
                                  "or from one address)", value=server.refused)
        bitrate = GaugeMetricFamily("tally_rtmp_ingest_bits_per_second", "what a live RTMP stream's encoder sends, "
                                    "over the last 5 s", labels=["channel"])
        fps = GaugeMetricFamily("tally_rtmp_ingest_frames_per_second", "video frames a live RTMP stream's encoder "
                                "sends, over the last 5 s", labels=["channel"])
        reencoded = GaugeMetricFamily("tally_rtmp_reencoded", "1 when a live RTMP stream's video is re-encoded "
                                      "(it has B-frames)", labels=["channel"])
        dropped = CounterMetricFamily("tally_rtmp_reencode_dropped_frames", "frames the re-encode of a live RTMP "
                                      "stream had no time for", labels=["channel"])
        for name, room in list(self._node.rooms.items()):
            publisher = room.publisher
            if isinstance(publisher, RtmpPublisher) and publisher.ready:
                bits, frames = publisher.ingest_rates()
                bitrate.add_metric([name], bits)
                fps.add_metric([name], frames)
                reencoded.add_metric([name], float(publisher.reencoded))
                dropped.add_metric([name], publisher.reencode_dropped)
        yield from (bitrate, fps, reencoded, dropped)


def register_rtmp_metrics(registry: CollectorRegistry, server: RtmpServer, node: SfuNode) -> None:
    registry.register(RtmpCollector(server, node))


class ChatCollector(Collector):
    def __init__(self, hub: ChatHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        fanout = self._hub.fanout
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, FANOUT_BUCKETS), "+Inf"), fanout.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("tally_chat_fanout_seconds", "time to hand one batch of chat frames to every connection of its channel",
                                    buckets=buckets, sum_value=fanout.total)
        yield GaugeMetricFamily("tally_chat_connections", "chat connections on this process", value=self._hub.connections)
        yield CounterMetricFamily("tally_chat_frames_delivered", "chat frames handed to connections", value=self._hub.delivered)
        yield CounterMetricFamily("tally_chat_slow_links_closed", "chat connections closed for falling behind",
                                  value=self._hub.dropped_links)


def register_chat_metrics(registry: CollectorRegistry, hub: ChatHub) -> None:
    registry.register(ChatCollector(hub))
