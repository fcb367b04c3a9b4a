"""HLS viewing sessions of players that say nothing (Safari's own player, VLC, ffplay, a TV app), seen
by their media playlist requests: the address, the user agent and the channel make one player.

A player that tells its own session (the watch page's beacons) claims its address for the channel,
whatever the agent, and is not seen twice. A sighting becomes a session only once it has lasted
`confirm_after` seconds — the watch page says who it is at its first frame, well before that — and
then counts as an HLS viewer too; it ends after `idle` seconds without a request. What is stored is a random id: the address and agent stay in memory while
the session lasts, never in the database.

Behind a CDN the origin sees the edge's requests, not the players'; there only the players that tell
their sessions are counted. Each signaling instance sees the requests it serves: a player whose
requests are spread over several instances (a load balancer without affinity) is seen by each.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from lifecycle.tasks import Periodic
from signaling.analytics.viewing import ViewingBook
from signaling.db.database import Database
from signaling.db.models import Channel, StreamSession
from signaling.streams.hls_audience import HlsAudience

MAX_TRACKED = 100_000  # players seen at once; beyond it the longest-silent is forgotten
WRITE_EVERY = 30.0  # seconds between two writes of a session that goes on
MAX_AGENT = 256  # characters of a user agent kept to tell players apart
MAX_PER_ADDRESS = 32  # players seen at once behind one address (a household, a small NAT); more are not


@dataclass(slots=True)
class _Sighting:
    channel: str
    first: float
    last: float
    session: str = ""  # the random id, once it is a session
    stream: tuple[int, str] = (0, "")  # ...and its (channel id, stream id)
    written: float = float("-inf")  # when its row was last written


class HlsRequestViewers:
    def __init__(self, book: ViewingBook, audience: HlsAudience, db: Database, clock: Callable[[], float] = time.time,
                 confirm_after: float = 30.0, idle: float = 30.0, claim_for: float = 180.0, every: float = 5.0) -> None:
        self._book = book
        self._audience = audience
        self._db = db
        self._clock = clock
        self._confirm_after = confirm_after
        self._idle = idle
        self._claim_for = claim_for
        self._seen: dict[tuple[str, str, str], _Sighting] = {}  # least recently asked first
        self._by_address: dict[str, set[tuple[str, str, str]]] = {}  # the sightings behind each address
        self._claimed: dict[tuple[str, str], float] = {}  # (channel, address) -> when a player there said who it is
        self._periodic = Periodic("hls-request-viewers", every, self.tick)

    def request(self, channel: str, address: str, agent: str) -> None:
        """A media playlist of `channel` was served (called per request: no I/O here)."""
        address = _household(address)
        if (channel, address) in self._claimed:
            return
        key = (channel, address, agent[:MAX_AGENT])
        now = self._clock()
        seen = self._seen.pop(key, None)
        if seen is not None:
            seen.last = now
            self._seen[key] = seen  # to the end: the least recently asked go first when full
            return
        behind = self._by_address.get(address)
        if behind is not None and len(behind) >= MAX_PER_ADDRESS:
            return  # one address making up players by their user agents: not counted
        if len(self._seen) >= MAX_TRACKED:
            self._forget(next(iter(self._seen)))  # (a session it was goes uncounted from now; not ended)
        self._seen[key] = _Sighting(channel, now, now)
        self._by_address.setdefault(address, set()).add(key)

    def _forget(self, key: tuple[str, str, str]) -> _Sighting | None:
        seen = self._seen.pop(key, None)
        if seen is not None:
            behind = self._by_address[key[1]]
            behind.discard(key)
            if not behind:
                del self._by_address[key[1]]
        return seen

    def claim(self, channel: str, address: str) -> None:
        """A player at `address` tells its own session of `channel`: the requests from there are not
        counted apart for a while, whatever their agent (a watch page may fall back to the browser's
        own HLS player, whose requests carry another agent). A silent player in the same household is
        missed meanwhile: better than counting the page twice."""
        address = _household(address)
        if (channel, address) not in self._claimed and len(self._claimed) >= MAX_TRACKED:
            self._claimed.pop(next(iter(self._claimed)))
        self._claimed[(channel, address)] = self._clock()
        for key in [k for k in self._by_address.get(address, ()) if k[0] == channel]:
            self._forget(key)  # a session already written stays: it was one until now

    async def tick(self) -> None:
        now = self._clock()
        for claim in [c for c, at in self._claimed.items() if now - at > self._claim_for]:
            del self._claimed[claim]
        streams: dict[str, tuple[int, str] | None] = {}
        for key, seen in list(self._seen.items()):
            over = now - seen.last > self._idle
            if not seen.session:
                if over or seen.last - seen.first < self._confirm_after:
                    if over:
                        self._forget(key)
                    continue
                if seen.channel not in streams:
                    streams[seen.channel] = await self._live_stream(seen.channel)
                live = streams[seen.channel]
                if live is None:
                    self._forget(key)
                    continue
                seen.session, seen.stream = f"r-{secrets.token_urlsafe(16)}", live
            if over or now - seen.written >= WRITE_EVERY:
                seen.written = now
                self._book.request_session(seen.session, *seen.stream, seen.first, seen.last, ended=over)
            if over:
                self._forget(key)
                await self._audience.leave(seen.channel, seen.session)
            else:
                await self._audience.beat(seen.channel, seen.session)

    async def _live_stream(self, channel: str) -> tuple[int, str] | None:
        """(channel id, stream id) of `channel`'s stream now, if it is live."""
        async with self._db.session() as session:
            found = (await session.execute(
                select(Channel.id, StreamSession.id).join(StreamSession, StreamSession.channel_id == Channel.id)
                .where(Channel.name == channel, StreamSession.ended_at.is_(None))
                .order_by(StreamSession.started_at.desc()).limit(1))).first()
        return (found[0], found[1]) if found is not None else None

    def start(self) -> None:
        self._periodic.start()

    async def close(self) -> None:
        """Stop; the sessions under way end now (this process no longer sees their requests)."""
        await self._periodic.close()
        now = self._clock()
        for key, seen in list(self._seen.items()):
            if seen.session:
                self._book.request_session(seen.session, *seen.stream, seen.first, min(seen.last, now), ended=True)
            self._forget(key)


def _household(address: str) -> str:
    """The address players behind one connection share: an IPv4 address, or an IPv6 /64 (a home's
    whole prefix; one host can hold billions of its addresses)."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address)
    except ValueError:
        return address
