"""A room: one channel's stream on this node, its publisher (at most one), its feeds and subscribers."""

from __future__ import annotations

import time
from collections.abc import Callable

from sfu.feed import Feed
from sfu.layers import LayerFeed
from sfu.media_format import MediaFormat
from sfu.publisher import Publisher
from sfu.subscriber import Subscriber


class Room:
    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self.feeds: dict[str, Feed] = {}
        self.layers: dict[str, LayerFeed] = {}  # the HLS ladder's encoded renditions (server-side simulcast)
        self.publisher: Publisher | None = None
        self.subscribers: dict[str, Subscriber] = {}
        self.peak_viewers = 0

    @property
    def live(self) -> bool:
        return self.publisher is not None

    @property
    def viewers(self) -> int:
        return len(self.subscribers)

    def formats_match(self, formats: dict[str, MediaFormat]) -> bool:
        """Can the current subscribers keep watching a publisher sending `formats`?"""
        return set(formats) == set(self.feeds) and all(
            formats[kind].same_stream_as(feed.format) for kind, feed in self.feeds.items()
        )

    def install(self, publisher: Publisher) -> list[Subscriber]:
        """Make `publisher` the room's source; the subscribers that cannot follow are returned to close."""
        dropped: list[Subscriber] = []
        if not self.formats_match(publisher.formats):
            dropped = list(self.subscribers.values())
            for subscriber in dropped:
                subscriber.leave()
            self.subscribers.clear()
            self.feeds = {kind: Feed(fmt, self._clock) for kind, fmt in publisher.formats.items()}
            self.layers = {}
        if self.publisher is not None and self.publisher is not publisher:
            self.publisher.detach()
        self.publisher = publisher
        publisher.bind(self.feeds)
        return dropped

    def video_choices(self) -> list[Feed]:
        """The source video and its layers, highest first."""
        source = self.feeds.get("video")
        if source is None:
            return []
        return [source, *sorted(self.layers.values(), key=lambda layer: -layer.height)]

    def add_subscriber(self, subscriber: Subscriber) -> None:
        self.subscribers[subscriber.id] = subscriber
        self.peak_viewers = max(self.peak_viewers, len(self.subscribers))

    def remove_subscriber(self, subscriber: Subscriber) -> bool:
        subscriber.leave()
        return self.subscribers.pop(subscriber.id, None) is not None
