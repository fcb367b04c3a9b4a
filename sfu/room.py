"""A room: one channel's stream on this node, its publisher (at most one), its feeds and subscribers.

A room's publisher is the broadcaster's connection on the stream's origin node, or a relay from the
node upstream on any other node carrying it (`relay_from`). Relays to nodes downstream are subscribers
of the room but not viewers: the viewers they carry (`relayed`) count in the room's `audience`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sfu.feed import Feed
from sfu.layers import LayerFeed
from sfu.media_format import MediaFormat
from sfu.publisher import Publisher
from sfu.subscriber import Subscriber


class Room:
    def __init__(self, name: str, stream: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.stream = stream  # this stream's id: a new one each time the room goes live (or changes format)
        self._clock = clock
        self.feeds: dict[str, Feed] = {}
        self.layers: dict[str, LayerFeed] = {}  # the HLS ladder's encoded renditions (server-side simulcast)
        self.publisher: Publisher | None = None
        self.subscribers: dict[str, Subscriber] = {}  # connected or still connecting
        self.viewers = 0  # the connected ones, relays to other nodes left out
        self.relayed = 0  # viewers on nodes downstream, as their relays last said
        self.peak_viewers = 0  # of the audience
        self.reported_viewers = 0  # the audience last told to the node's events
        self.relay_from: str | None = None  # the node upstream, when this room is a relay's
        self.relay_path: tuple[str, ...] = ()  # ...and every node up to the origin, nearest first (sfu.relay)
        self.idle_since = clock()  # when the last subscriber left (a relay's room ends after a while)
        self.joining = 0  # subscribers negotiating (not in `subscribers` yet): the room is not idle

    @property
    def audience(self) -> int:
        """Everyone watching the stream through this room: its viewers and those relayed onwards."""
        return self.viewers + self.relayed

    @property
    def live(self) -> bool:
        return self.publisher is not None

    def formats_match(self, formats: dict[str, MediaFormat]) -> bool:
        """Can the current subscribers keep watching a publisher sending `formats`?"""
        return set(formats) == set(self.feeds) and all(
            formats[kind].same_stream_as(feed.format) for kind, feed in self.feeds.items()
        )

    def install(self, publisher: Publisher) -> None:
        """Make `publisher` the room's source (its formats match the feeds, or the room is new)."""
        if not self.feeds:
            self.feeds = {kind: Feed(fmt, self._clock) for kind, fmt in publisher.formats.items()}
        if self.publisher is not None and self.publisher is not publisher:
            self.publisher.detach()
        self.publisher = publisher
        publisher.bind(self.feeds)

    def video_choices(self) -> list[Feed]:
        """The source video and its layers, highest first."""
        source = self.feeds.get("video")
        if source is None:
            return []
        return [source, *sorted(self.layers.values(), key=lambda layer: -layer.height)]

    def drop_layers(self) -> None:
        """The layers stop (the HLS ladder ended): their viewers go back to the source at its next keyframe."""
        source = self.feeds.get("video")
        for layer in self.layers.values():
            for down in (*layer.downtracks, *layer.switching):
                down.cancel_switch()
                if down.feed is layer and source is not None:
                    down.switch_to(source)
        self.layers = {}

    def add_subscriber(self, subscriber: Subscriber) -> None:
        """A session that is connecting (not a viewer yet)."""
        self.subscribers[subscriber.id] = subscriber

    def connect(self, subscriber: Subscriber) -> None:
        """The session came up: it is a viewer now."""
        if subscriber.id in self.subscribers and not subscriber.connected:
            subscriber.start()
            if not subscriber.relay:
                self.viewers += 1
            self.peak_viewers = max(self.peak_viewers, self.audience)

    def set_relayed(self, subscriber: Subscriber, viewers: int) -> None:
        """A relay to another node says how many watch through it (its own and those further on)."""
        if subscriber.relay and subscriber.id in self.subscribers:
            self.relayed += viewers - subscriber.relayed_viewers
            subscriber.relayed_viewers = viewers
            self.peak_viewers = max(self.peak_viewers, self.audience)

    def remove_subscriber(self, subscriber: Subscriber) -> bool:
        """Remove the session; True if it was a viewer (its leaving changes the count)."""
        subscriber.leave()
        if self.subscribers.pop(subscriber.id, None) is None:
            return False
        if not self.subscribers:
            self.idle_since = self._clock()
        if subscriber.relay:
            self.relayed -= subscriber.relayed_viewers
            subscriber.relayed_viewers = 0
            return False
        if subscriber.connected:
            self.viewers -= 1
            return True
        return False
