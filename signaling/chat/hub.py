"""This process's chat connections, by channel, and the relay from the bus to them.

A connection is a `Link` (a WebSocket or a WebRTC data channel); the hub does not care which. Frames
from the bus are serialised once into an `Outbound` and handed to every link of the channel with a
synchronous `send`: no await per client, so one slow client never delays the others (a link that
falls too far behind closes itself, and its client reconnects and reads the history).

Frames for a channel wait in an outbox until the loop is next free (`call_soon`), and go out together
as one `Batch`: one socket write per WebSocket client however many frames it holds. An idle node sends
each frame alone, as soon as it arrives; a busy one, whose fan-outs take long enough for more frames to
arrive meanwhile, sends fewer, larger writes, so its cost per frame falls as its load rises instead of
its queues growing.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus import Bus, Message
from bus.follow import follow
from lifecycle.tasks import cancelling, stop
from signaling.accounts.service import AccountService
from signaling.auth.roles import Principal
from signaling.chat import protocol
from signaling.chat.presence import REFRESH, ChatPresence

PRESENCE_TIMEOUT = 2.0  # seconds the list of who is here may take, per arrival or departure
from signaling.chat.protocol import Auth, ChatProblem, Ping, Send
from signaling.chat.service import TOPIC, ChatService
from signaling.errors import AppError

log = logging.getLogger(__name__)

STREAM_TOPICS = ("stream.viewers", "stream.started", "stream.ended")
NOTIFICATIONS = "notifications"  # {"recipients": [[user, notification id]], "notification": {...}}: to their connections


class Outbound:
    """One frame for many clients: its JSON text, and its WebSocket encoding made on first use."""

    __slots__ = ("text", "message_id", "_ws_frame")

    def __init__(self, text: str, message_id: int = 0) -> None:
        self.text = text
        self.message_id = message_id  # for a `message` frame: its id
        self._ws_frame: bytes | None = None

    def ws_frame(self) -> bytes:
        if self._ws_frame is None:
            self._ws_frame = websocket_text_frame(self.text.encode("utf-8"))
        return self._ws_frame


class Batch:
    """Frames for one channel's links, in order; their WebSocket bytes joined, and their texts encoded
    for data channels, once each, on first use."""

    __slots__ = ("frames", "_ws_bytes", "_utf8")

    def __init__(self, frames: list[Outbound]) -> None:
        self.frames = frames
        self._ws_bytes: bytes | None = None
        self._utf8: list[bytes] | None = None

    def utf8(self) -> list[bytes]:
        if self._utf8 is None:
            self._utf8 = [frame.text.encode("utf-8") for frame in self.frames]
        return self._utf8

    def ws_bytes(self) -> bytes:
        if self._ws_bytes is None:
            frames = self.frames
            self._ws_bytes = frames[0].ws_frame() if len(frames) == 1 else b"".join(f.ws_frame() for f in frames)
        return self._ws_bytes


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server-to-client text frame (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class Link(Protocol):
    """One client connection."""

    label: str  # "websocket" or "datachannel", for metrics and logs

    def send(self, batch: Batch) -> bool:
        """Queue `batch` without waiting; False when the link is closed or too far behind (it then closes)."""

    def close(self, reason: str) -> None: ...


FRAME_BURST = 20  # frames a client may send at once...
FRAME_RATE = 2.0  # ...and per second after that; more get `rate_limited` before any work is done
MAX_PENDING = 500  # frames held for a client while its welcome is being prepared
MAX_BATCH = 100  # frames in one batch: a burst from the bus goes out in slices, each checked against a link's buffer
FANOUT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds, for /metrics


class FanoutTimes:
    """How long handing one batch to every link of a channel took: a histogram, one bisect per batch."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(FANOUT_BUCKETS) + 1)  # the last one is over the largest bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(FANOUT_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(eq=False, slots=True)
class Chatter:
    link: Link
    channel: str
    principal: Principal | None
    # Frames that arrive while the welcome is prepared; None once it has been sent.
    pending: list[Outbound] | None = field(default_factory=list)
    budget: float = FRAME_BURST
    budget_at: float = 0.0

    def reply(self, frame: dict[str, Any]) -> None:
        self.say(Outbound(protocol.encode(frame)))

    def say(self, frame: Outbound) -> None:
        self.link.send(Batch([frame]))

    def spend(self, now: float) -> bool:
        """Take one frame from the client's budget; False when it is sending too fast."""
        if not self.budget_at:
            self.budget_at = now
        self.budget = min(FRAME_BURST, self.budget + (now - self.budget_at) * FRAME_RATE)
        self.budget_at = now
        if self.budget < 1:
            return False
        self.budget -= 1
        return True


class ChatHub:
    def __init__(self, chat: ChatService, accounts: AccountService, bus: Bus, clock: Callable[[], float] = time.time,
                 presence: ChatPresence | None = None) -> None:
        self._chat = chat
        self.presence = presence or ChatPresence.in_memory(clock)
        self._presence_task: asyncio.Task[None] | None = None
        self._clock = clock
        self._accounts = accounts
        self._bus = bus
        self._rooms: dict[str, set[Chatter]] = {}
        self._outbox: dict[str, list[Outbound]] = {}  # frames for each channel's next batch
        self._flush_soon: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None
        self._served: dict[str, asyncio.Task[None]] = {}  # connections this hub runs itself (data channels), by key
        self._closed = False
        self._closing = False  # disconnecting everyone at shutdown
        self._signed_in: dict[tuple[str, int], int] = {}  # (channel, user id) -> its connections here
        self._users: dict[int, set[Chatter]] = {}  # each signed-in user's connections here, for notifications
        self._personal: set[Chatter] = set()  # connections to no channel (notifications only)
        self.delivered = 0  # frames handed to links, for /metrics
        self.dropped_links = 0
        self.fanout = FanoutTimes()

    @property
    def connections(self) -> int:
        return sum(len(room) for room in self._rooms.values()) + len(self._personal)

    # --- lifecycle ---

    async def start(self) -> None:
        topics = (TOPIC, *STREAM_TOPICS, NOTIFICATIONS)
        subscription = await self._bus.subscribe(*topics)  # first one now: fail at start, not later
        self._task = asyncio.create_task(
            follow(self._bus, topics, self._deliver, "the chat relay", subscription), name="chat-relay")
        self._presence_task = asyncio.create_task(self._still_here(), name="chat-presence")

    def adopt(self, key: str, link: Link, channel: str, principal: Principal | None, frames: AsyncIterator[str | bytes]) -> None:
        """Serve a connection in a task the hub owns (cancelled when it closes); one per `key` (a session)."""
        if self._closed or key in self._served:
            link.close("one chat connection per session")
            return
        task = asyncio.create_task(self.serve(Chatter(link, channel, principal), frames), name=f"chat:{link.label}")
        self._served[key] = task
        task.add_done_callback(lambda _: self._served.pop(key, None))

    def disconnect_all(self, reason: str = "the server is shutting down") -> None:
        """Close every connection (at shutdown, before the server waits for its handlers to finish)."""
        self._closing = True
        for room in list(self._rooms.values()):
            for chatter in list(room):
                chatter.link.close(reason)
        for chatter in list(self._personal):
            chatter.link.close(reason)

    async def close(self) -> None:
        self._closed = True
        self.disconnect_all()
        await stop([*self._served.values(), self._task, self._presence_task], "the chat hub")
        self._task = self._presence_task = None
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        self._outbox.clear()
        self._rooms.clear()

    def _deliver(self, message: Message) -> None:
        payload = message.payload
        if message.topic == NOTIFICATIONS:
            self._notify(payload)
            return
        channel = str(payload.get("channel", ""))
        if channel not in self._rooms:
            return
        message_id = 0
        if message.topic == TOPIC:
            frame = payload.get("frame")
            if isinstance(frame, dict) and frame.get("type") == "message" and isinstance(frame.get("id"), int):
                message_id = frame["id"]
        elif message.topic == "stream.viewers":
            frame = {"type": "viewers", "count": payload.get("viewers", 0)}
        else:
            frame = {"type": "live", "live": message.topic == "stream.started"}
        if not isinstance(frame, dict):
            return
        waiting = self._outbox.setdefault(channel, [])
        waiting.append(Outbound(protocol.encode(frame), message_id))
        if len(waiting) >= MAX_BATCH:
            self._flush()
        elif self._flush_soon is None:
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send every channel's waiting frames as one batch (also called early, see `serve`)."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()  # a no-op when this is that call
            self._flush_soon = None
        outbox, self._outbox = self._outbox, {}
        for channel, frames in outbox.items():
            room = self._rooms.get(channel)
            if room:
                try:
                    self.broadcast(room, Batch(frames))
                except Exception:  # never leave the other channels' frames unsent
                    log.exception("could not send chat frames to %s", channel)

    def broadcast(self, room: set[Chatter], batch: Batch) -> None:
        started = time.perf_counter()
        count = len(batch.frames)
        for chatter in list(room):  # a send may close a link, which leaves the room
            if chatter.pending is not None:
                chatter.pending.extend(batch.frames[: MAX_PENDING - len(chatter.pending)])
                continue
            if chatter.link.send(batch):
                self.delivered += count
            else:
                self.dropped_links += 1
                self._leave(chatter)
        self.fanout.observe(time.perf_counter() - started)

    def _notify(self, payload: dict[str, Any]) -> None:
        recipients, note = payload.get("recipients"), payload.get("notification")
        if not isinstance(recipients, list) or not isinstance(note, dict):
            return
        for recipient in recipients:
            if not (isinstance(recipient, list) and len(recipient) == 2 and isinstance(recipient[0], int)):
                continue
            mine = self._users.get(recipient[0])
            if mine:
                frame = Outbound(protocol.encode({**note, "type": "notification", "id": recipient[1]}))
                for chatter in list(mine):
                    chatter.say(frame)

    def _sign(self, chatter: Chatter, before: Principal | None) -> None:
        """Keep the user index right after `chatter` signed in (as someone else than `before`)."""
        if before is not None:
            self._unsign(chatter, before)
        if chatter.principal is not None:
            self._users.setdefault(chatter.principal.user_id, set()).add(chatter)

    def _unsign(self, chatter: Chatter, who: Principal) -> None:
        mine = self._users.get(who.user_id)
        if mine is not None:
            mine.discard(chatter)
            if not mine:
                del self._users[who.user_id]

    # --- one connection ---

    async def serve_personal(self, chatter: Chatter, frames: AsyncIterator[str | bytes]) -> None:
        """A connection to no channel: it signs in and hears its user's notifications (any page of the
        site keeps one open); `send` is refused."""
        self._personal.add(chatter)
        self._sign(chatter, None)
        chatter.pending = None
        try:
            chatter.reply(self._personal_you(chatter))
            async for raw in frames:
                await self._handle(chatter, raw)
        finally:
            self._personal.discard(chatter)
            if chatter.principal is not None:
                self._unsign(chatter, chatter.principal)

    def _personal_you(self, chatter: Chatter) -> dict[str, Any]:
        who = chatter.principal
        return {"type": "you", "username": who.username if who else None, "can_post": False, "can_moderate": False,
                "reason": "this connection is to no channel: join one with ?channel=<name> to chat"}

    async def serve(self, chatter: Chatter, frames: AsyncIterator[str | bytes]) -> None:
        """Welcome the client, then answer its frames in order until they end.

        The client is in the room from the start, so nothing said while its history is read is lost:
        those frames wait in `pending` and follow the welcome (minus messages the history holds).
        """
        self._rooms.setdefault(chatter.channel, set()).add(chatter)
        self._sign(chatter, None)
        try:
            try:
                newest = await self._welcome(chatter)
            except Exception as exc:  # the channel vanished, or the database is down: tell this client only
                detail = exc.detail if isinstance(exc, AppError) else "the chat is unavailable right now; try again shortly"
                if not isinstance(exc, AppError):
                    log.exception("could not welcome a chat client to %s", chatter.channel)
                chatter.reply({"type": "error", "code": "unavailable", "detail": detail})
                chatter.link.close(detail)
                return
            self._flush()  # frames still in the outbox may be in the history too: filter them as pending
            pending, chatter.pending = chatter.pending or [], None
            fresh = [frame for frame in pending if frame.message_id == 0 or frame.message_id > newest]
            if fresh:
                chatter.link.send(Batch(fresh))
            if chatter.principal is not None:
                await self._presence(chatter.channel, chatter.principal, True)
            async for raw in frames:
                await self._handle(chatter, raw)
        finally:
            self._leave(chatter)
            if chatter.principal is not None and chatter.pending is None and not self._closed:
                await self._presence(chatter.channel, chatter.principal, False)

    async def _presence(self, channel: str, who: Principal, joined: bool) -> None:
        # Each user's connections to each channel here, counted (not found by scanning a room of
        # thousands on every departure).
        key = (channel, who.user_id)
        connections = self._signed_in.get(key, 0) + (1 if joined else -1)
        if connections > 0:
            self._signed_in[key] = connections
        else:
            self._signed_in.pop(key, None)
        if self._closing:
            return  # shutting down: the names go with this hub's refreshes, nobody need hear of each
        try:
            async with asyncio.timeout(PRESENCE_TIMEOUT):  # a stuck Redis must not stop this client's frames
                if joined:
                    await self.presence.here(channel, (who.username,))
                elif connections <= 0:
                    await self.presence.gone(channel, who.username)  # its last connection here
                await self._chat.announce_presence(channel, who.username, joined)
        except Exception as exc:  # presence is a courtesy: never let it end a connection
            log.warning("could not announce presence in %s: %s", channel, exc)

    async def _still_here(self) -> None:
        """Every REFRESH seconds, the signed-in users this hub holds, so the list outlives no process."""
        while not cancelling():
            await asyncio.sleep(REFRESH)
            for channel, room in list(self._rooms.items()):
                names = {c.principal.username for c in room if c.principal is not None and c.pending is None}
                try:
                    await self.presence.here(channel, names)
                except Exception as exc:  # noqa: BLE001 - Redis is down: the list is a courtesy; try again
                    log.warning("could not refresh who is in %s's chat: %s", channel, exc)
                    break

    def _leave(self, chatter: Chatter) -> None:
        if chatter.principal is not None:
            self._unsign(chatter, chatter.principal)
        room = self._rooms.get(chatter.channel)
        if room is not None:
            room.discard(chatter)
            if not room:
                del self._rooms[chatter.channel]

    async def _welcome(self, chatter: Chatter) -> int:
        """Send `welcome` and `you`; the id of the newest message in the history (0 if none)."""
        history, _ = await self._chat.history(chatter.channel, None, self._chat.rules.history_on_join)
        settings = await self._chat.settings(chatter.channel)
        you = await self._you(chatter)
        chatter.reply({
            "type": "welcome",
            "channel": chatter.channel,
            "settings": settings.frame(self._chat.rules.max_length),
            "history": history,
        })
        chatter.reply(you)
        return int(history[-1]["id"]) if history else 0

    async def _you(self, chatter: Chatter) -> dict[str, Any]:
        standing = await self._chat.standing(chatter.channel, chatter.principal)
        who = chatter.principal
        return {
            "type": "you",
            "username": who.username if who else None,
            "can_post": standing.can_post,
            "can_moderate": standing.can_moderate,
            "reason": standing.reason,
        }

    async def _handle(self, chatter: Chatter, raw: str | bytes) -> None:
        nonce = None
        try:
            if not chatter.spend(self._clock()):
                raise ChatProblem("rate_limited", "you are sending frames too fast; slow down", retry_after=1)
            command = protocol.parse(raw, self._chat.rules.max_length)
            if isinstance(command, Send):
                nonce = command.nonce
                if chatter in self._personal:
                    raise ChatProblem("bad_message", "this connection is to no channel: join one with ?channel=<name> to chat")
                posted = await self._chat.post(chatter.channel, chatter.principal, command.text)
                if nonce is not None:
                    chatter.reply({"type": "ack", "nonce": nonce, "id": posted["id"]})
            elif isinstance(command, Auth):
                before = chatter.principal
                chatter.principal = await self._authenticate(command.token)
                self._sign(chatter, before)
                if chatter in self._personal:
                    chatter.reply(self._personal_you(chatter))
                    return
                chatter.reply(await self._you(chatter))
                if before is None or before.user_id != chatter.principal.user_id:
                    if before is not None:
                        await self._presence(chatter.channel, before, False)  # signed in as someone else
                    await self._presence(chatter.channel, chatter.principal, True)
            elif isinstance(command, Ping):
                chatter.reply({"type": "pong", **({"nonce": command.nonce} if command.nonce else {})})
        except ChatProblem as problem:
            chatter.say(Outbound(protocol.error(problem, nonce or problem.nonce)))
        except AppError as exc:
            chatter.say(Outbound(protocol.error(ChatProblem("unavailable", exc.detail), nonce)))
        except Exception:  # the database or the bus failed under us: say so, keep the link and the node
            log.exception("chat frame from %s in %s failed", chatter.principal and chatter.principal.username, chatter.channel)
            trouble = ChatProblem("unavailable", "that did not go through: the chat is having trouble; try again shortly")
            chatter.say(Outbound(protocol.error(trouble, nonce)))

    async def _authenticate(self, token: str) -> Principal:
        try:
            return await self._accounts.authenticate(token)
        except AppError:
            raise ChatProblem("bad_token", "the access token is invalid or expired; sign in again") from None
