"""Chat against the real server: the WebSocket and the WebRTC data channel (real aiortc peers), history,
moderation rules with an injected clock, and the bad-input corpus on both transports; on SQLite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from bus import Message
from signaling.app import SERVICES
from signaling.chat.service import TOPIC
from support import Api
from webrtc_peer import Peer

SDP = "application/sdp"


@pytest.fixture
async def chat(app_factory: Callable[..., web.Application], clock: Any) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"])
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)
        await api.register()  # the first account is an admin (a site moderator): keep it out of the way
        yield api


class Client:
    """One chat connection, either transport, with the frames it has received."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def received(self, text: str) -> None:
        self.frames.append(json.loads(text))
        self._arrived.set()

    async def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            self._arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"no such frame; got {self.frames[-8:]}"
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    async def of_type(self, kind: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        return await self.expect(lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()), timeout)

    async def error(self, code: str) -> dict[str, Any]:
        return await self.of_type("error", code=code)


class WsClient(Client):
    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                self.received(message.data)

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def post(self, text: str, nonce: str = "n") -> dict[str, Any]:
        await self.send({"type": "send", "text": text, "nonce": nonce})
        return await self.expect(lambda f: f.get("nonce") == nonce and f["type"] in ("ack", "error"))

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def ws_join(api: Api, channel: str, token: str | None = None) -> WsClient:
    client = WsClient(await api.client.ws_connect(f"/ws?channel={channel}"))
    await client.of_type("welcome")
    if token is not None:
        await client.send({"type": "auth", "token": token})
        await client.expect(lambda f: f["type"] == "you" and f["username"] is not None)
    return client


async def chat_metrics(api: Api) -> dict[str, float]:
    _, text, _ = await api.call("GET", "/metrics")
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.decode().splitlines() if line.startswith("tally_chat_")}


async def chat_series(api: Api, *names: str) -> tuple[float, ...]:
    series = await chat_metrics(api)
    return tuple(series[name] for name in names)


async def test_websocket_chat_history_and_order(chat: Api) -> None:
    owner, owner_token = await chat.user()
    viewer, viewer_token = await chat.user("viewer")
    anonymous = await ws_join(chat, owner)
    you = await anonymous.of_type("you")
    assert you["username"] is None and you["can_post"] is False and "sign in" in you["reason"]
    member = await ws_join(chat, owner, viewer_token)
    assert (await member.of_type("you", username=viewer))["can_post"] is True
    await anonymous.of_type("presence", user=viewer, state="joined")

    ack = await member.post("hello <b>there</b>", "c1")
    assert ack["type"] == "ack"
    for client in (anonymous, member):
        message = await client.of_type("message", id=ack["id"])
        assert message["text"] == "hello <b>there</b>" and message["user"]["username"] == viewer
        assert message["user"]["badges"] == [] and message["at"].endswith("Z")
    assert (await anonymous.post("me too", "a1"))["code"] == "sign_in"

    broadcaster = await ws_join(chat, owner, owner_token)
    for i in range(3):
        chat.clock.advance(1)
        assert (await broadcaster.post(f"note {i}", f"b{i}"))["type"] == "ack"
    said = await anonymous.of_type("message", text="note 2")
    assert said["user"]["badges"] == ["broadcaster"]
    ids = [f["id"] for f in anonymous.frames if f["type"] == "message"]
    assert ids == sorted(ids) and len(ids) == 4

    # History: oldest first, paged backwards with before=; a newcomer's welcome carries it.
    status, page, _ = await chat.call("GET", f"/api/channels/{owner}/chat?limit=2")
    assert status == 200 and [m["text"] for m in page["messages"]] == ["note 1", "note 2"]
    status, older, _ = await chat.call("GET", f"/api/channels/{owner}/chat?limit=2&before={page['next_before']}")
    assert [m["text"] for m in older["messages"]] == ["hello <b>there</b>", "note 0"] and older["next_before"] is None
    late = WsClient(await chat.client.ws_connect(f"/ws?channel={owner}"))
    welcome = await late.of_type("welcome")
    assert [m["text"] for m in welcome["history"]] == ["hello <b>there</b>", "note 0", "note 1", "note 2"]
    assert welcome["settings"] == {"slow_mode": 0, "followers_only": False, "max_length": 500}
    for bad in ("limit=0", "limit=201", "before=x", "before=-1"):
        status, problem, _ = await chat.call("GET", f"/api/channels/{owner}/chat?{bad}")
        assert status == 422, bad
    assert (await chat.call("GET", "/api/channels/nobody/chat"))[0] == 404
    assert (await chat.call("GET", f"/api/channels/{owner}/chat?before=99999999999"))[0] == 422
    assert (await chat.call("GET", f"/api/channels/{owner}/chat?before=%C2%B2"))[0] == 422
    await member.close()
    await anonymous.of_type("presence", user=viewer, state="left")
    for client in (anonymous, broadcaster, late):
        await client.close()

    # /metrics: frames handed out, and how long each channel-wide fan-out took.
    series = await chat_metrics(chat)
    fanouts = series["tally_chat_fanout_seconds_count"]
    assert fanouts >= 6  # four messages and two presence notices, at least
    assert series['tally_chat_fanout_seconds_bucket{le="+Inf"}'] == fanouts and series["tally_chat_fanout_seconds_sum"] > 0
    assert series["tally_chat_frames_delivered_total"] >= 4 * 2 + 3


async def test_the_chatters_list_names_who_is_in_the_chat(chat: Api) -> None:
    owner, owner_token = await chat.user()
    fan, fan_token = await chat.user()
    path = f"/api/channels/{owner}/chat/chatters"

    async def listed(expected: list[str]) -> None:  # one answer serves everybody for up to 2 s
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            status, body, _ = await chat.call("GET", path)
            if status == 200 and body == {"items": sorted(expected), "count": len(expected)}:
                return
            assert asyncio.get_running_loop().time() < deadline, (expected, status, body)
            await asyncio.sleep(0.1)

    await listed([])
    anonymous = await ws_join(chat, owner)
    first = await ws_join(chat, owner, fan_token)
    second = await ws_join(chat, owner, fan_token)  # the same user in two tabs
    host = await ws_join(chat, owner, owner_token)
    await listed([owner, fan])  # readers are not listed
    await first.close()
    await asyncio.sleep(2.5)
    await listed([owner, fan])  # still in one tab
    await second.close()
    await listed([owner])
    assert (await chat.call("GET", "/api/channels/nobody_here/chat/chatters"))[0] == 404
    for client in (anonymous, host):
        await client.close()


async def test_websocket_refuses_what_is_not_a_chat(chat: Api) -> None:
    owner, _ = await chat.user()
    assert (await chat.call("GET", f"/ws?channel={owner}"))[0] == 400  # a plain GET, no upgrade
    assert (await chat.call("GET", "/ws"))[0] == 400
    assert (await chat.call("GET", "/ws?channel=nobody"))[0] == 404
    assert (await chat.call("GET", "/ws?channel=%00"))[0] == 404
    assert (await chat.call("GET", f"/ws?channel={owner}", token="not-a-token"))[0] == 401
    status, body, _ = await chat.call("GET", "/ws?channel=" + "x" * 300)
    assert status == 404 and body["status"] == 404


BAD_FRAMES: list[tuple[Any, str]] = [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('"text"', "bad_json"),
    ("{" * 5000, "too_large"),
    ("[" * 2000 + "]" * 2000, "bad_json"),
    ({"type": "shout", "text": "hi"}, "unknown_type"),
    ({"text": "no type"}, "unknown_type"),
    ({"type": "send"}, "bad_message"),
    ({"type": "send", "text": 42}, "bad_message"),
    ({"type": "send", "text": "hi", "nonce": 7}, "bad_message"),
    ('{"type": "ping", "nonce": "\\ud800"}', "bad_message"),  # a lone surrogate could not be echoed back
    ({"type": "send", "text": "   "}, "empty"),
    ({"type": "send", "text": "x" * 501}, "too_long"),
    ({"type": "send", "text": "bell \x07"}, "control_characters"),
    ({"type": "send", "text": "null \x00 byte"}, "control_characters"),
    ({"type": "send", "text": "evil \u202e txet"}, "control_characters"),
    ({"type": "auth", "token": ""}, "bad_message"),
    ({"type": "auth", "token": "forged.token.value"}, "bad_token"),
    (b"\xff\xfe not utf-8", "bad_encoding"),
]


async def test_bad_frames_get_errors_and_harm_nobody(chat: Api) -> None:
    owner, _ = await chat.user()
    _, token = await chat.user("viewer")
    offender = await ws_join(chat, owner, token)
    bystander = await ws_join(chat, owner)
    for frame, code in BAD_FRAMES:
        chat.clock.advance(1)  # within the frame budget
        await offender.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
        error = await offender.error(code)
        assert error["detail"], frame
        offender.frames.clear()
    # A refused post says which one it was.
    await offender.send({"type": "send", "text": "y" * 501, "nonce": "long"})
    assert (await offender.error("too_long"))["nonce"] == "long"
    # A flood of frames is cut off before it costs anything.
    for _ in range(30):
        await offender.send({"type": "ping"})
    await offender.error("rate_limited")
    chat.clock.advance(10)
    offender.frames.clear()
    # Still connected and still signed in; the bystander saw nothing but the one good post.
    await offender.send({"type": "ping", "nonce": "p"})
    await offender.of_type("pong", nonce="p")
    assert (await offender.post("still here", "ok"))["type"] == "ack"
    await bystander.of_type("message", text="still here")
    assert [f["type"] for f in bystander.frames] == ["welcome", "you", "message"]

    # Invalid UTF-8 in a *text* frame fails that connection (RFC 6455 8.1), and only that one.
    raw = await chat.client.ws_connect(f"/ws?channel={owner}")
    await raw.receive()
    await raw.send_frame(b"{\"type\": \"send\", \"text\": \"\xff\"}", WSMsgType.TEXT)
    while (message := await raw.receive()).type == WSMsgType.TEXT:
        pass
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert raw.close_code == 1007
    assert (await offender.post("after that", "ok2"))["type"] == "ack"
    await bystander.of_type("message", text="after that")

    # The database failing under a post: an error for that client, no crash, and it works again after.
    await rename_table(chat, "chat_messages", "chat_messages_away")
    try:
        trouble = await offender.post("into the void", "db")
    finally:
        await rename_table(chat, "chat_messages_away", "chat_messages")
    assert trouble["code"] == "unavailable"
    assert (await offender.post("back again", "ok3"))["type"] == "ack"
    await bystander.of_type("message", text="back again")
    for client in (offender, bystander):
        await client.close()


async def rename_table(api: Api, old: str, new: str) -> None:
    from sqlalchemy import text

    async with api.services.db.session() as session:
        await session.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
        await session.commit()


async def test_moderation(chat: Api) -> None:
    owner, owner_token = await chat.user()
    mod, mod_token = await chat.user("viewer")
    troll, troll_token = await chat.user("viewer")
    fan, fan_token = await chat.user("viewer")
    base = f"/api/channels/{owner}"

    # Only the owner (or an admin) appoints moderators.
    assert (await chat.call("PUT", f"{base}/moderators/{mod}", token=troll_token))[0] == 403
    status, mods, _ = await chat.call("PUT", f"{base}/moderators/{mod}", token=owner_token)
    assert status == 200 and mods["items"] == [mod]
    assert (await chat.call("PUT", f"{base}/moderators/{owner}", token=owner_token))[0] == 422
    assert (await chat.call("PUT", f"{base}/moderators/nobody", token=owner_token))[0] == 404
    assert (await chat.call("GET", f"{base}/moderators"))[2] is not None

    watcher = await ws_join(chat, owner)
    trolling = await ws_join(chat, owner, troll_token)
    moderating = await ws_join(chat, owner, mod_token)
    assert (await moderating.of_type("you", username=mod))["can_moderate"] is True
    bad = await trolling.post("something awful", "t1")

    # Deleting: gone for everyone live, and from the history; not for ordinary users to do.
    assert (await chat.call("DELETE", f"{base}/chat/{bad['id']}", token=troll_token))[0] == 403
    assert (await chat.call("DELETE", f"{base}/chat/{bad['id']}", token=mod_token))[0] == 204
    for client in (watcher, trolling, moderating):
        assert (await client.of_type("deleted", id=bad["id"]))["by"] == mod
    assert (await chat.call("GET", f"{base}/chat"))[1]["messages"] == []
    assert (await chat.call("DELETE", f"{base}/chat/{bad['id']}", token=mod_token))[0] == 404
    assert (await chat.call("DELETE", f"{base}/chat/999999", token=mod_token))[0] == 404
    for bad_id in ("abc", "%C2%B2", str(2**31), "9" * 40):
        assert (await chat.call("DELETE", f"{base}/chat/{bad_id}", token=mod_token))[0] == 404, bad_id

    # A time-out: refused while it lasts (the clock is injected), lifted by time.
    status, ban, _ = await chat.call("PUT", f"{base}/chat/bans/{troll}", {"seconds": 600, "reason": "spam"}, token=mod_token)
    assert status == 200 and ban["until"] is not None
    assert "timed out for 10 min" in (await watcher.of_type("notice", action="timeout"))["text"]
    refused = await trolling.post("let me speak", "t2")
    assert refused["code"] == "banned" and "timed out" in refused["detail"]
    assert [b["username"] for b in (await chat.call("GET", f"{base}/chat/bans", token=mod_token))[1]["items"]] == [troll]
    assert (await chat.call("GET", f"{base}/chat/bans", token=troll_token))[0] == 403
    chat.clock.advance(601)
    assert (await trolling.post("I am back", "t3"))["type"] == "ack"

    # A ban lasts until lifted; moderators and the owner cannot be banned; bad durations are 422.
    assert (await chat.call("PUT", f"{base}/chat/bans/{troll}", {"reason": "again"}, token=owner_token))[0] == 200
    await watcher.of_type("notice", action="ban")
    chat.clock.advance(10**6)
    assert (await trolling.post("please", "t4"))["code"] == "banned"
    owner_token, mod_token, troll_token, fan_token = [(await chat.login(u))["access_token"] for u in (owner, mod, troll, fan)]
    assert (await chat.call("PUT", f"{base}/chat/bans/{mod}", {}, token=owner_token))[0] == 403
    assert (await chat.call("PUT", f"{base}/chat/bans/{owner}", {}, token=mod_token))[0] == 403
    for body in ({"seconds": 0}, {"seconds": -5}, {"seconds": 10**9}, {"seconds": "10"}, {"until": 5}):
        assert (await chat.call("PUT", f"{base}/chat/bans/{troll}", body, token=mod_token))[0] == 422, body
    assert (await chat.call("PUT", f"{base}/chat/bans/{troll}", {}, token=troll_token))[0] == 403
    assert (await chat.call("DELETE", f"{base}/chat/bans/{troll}", token=mod_token))[0] == 204
    await watcher.of_type("notice", action="unban")
    assert (await trolling.post("thank you", "t5"))["type"] == "ack"

    # Slow mode: one post per user per N seconds; moderators are exempt.
    status, settings, _ = await chat.call("PATCH", f"{base}/chat/settings", {"slow_mode": 30}, token=mod_token)
    assert status == 200 and settings["slow_mode"] == 30
    await watcher.of_type("settings", slow_mode=30)
    chat.clock.advance(31)
    assert (await trolling.post("one", "s1"))["type"] == "ack"
    chat.clock.advance(10)
    slow = await trolling.post("two", "s2")
    assert slow["code"] == "slow_mode" and slow["retry_after"] == 20
    for i in range(2):
        assert (await moderating.post(f"mod {i}", f"m{i}"))["type"] == "ack"
    assert (await watcher.of_type("message", text="mod 1"))["user"]["badges"] == ["moderator"]
    assert (await watcher.of_type("message", text="one"))["user"]["badges"] == []
    chat.clock.advance(21)
    assert (await trolling.post("three", "s3"))["type"] == "ack"
    for body in ({"slow_mode": -1}, {"slow_mode": 86400}, {"followers_only": "yes"}, {"other": 1}):
        assert (await chat.call("PATCH", f"{base}/chat/settings", body, token=mod_token))[0] == 422, body
    assert (await chat.call("PATCH", f"{base}/chat/settings", {"slow_mode": 0}, token=troll_token))[0] == 403

    # Followers-only: a follower posts, others are told to follow first.
    await chat.call("PATCH", f"{base}/chat/settings", {"slow_mode": 0, "followers_only": True}, token=owner_token)
    fans = await ws_join(chat, owner, fan_token)
    assert "followers" in (await fans.of_type("you", username=fan))["reason"]
    assert (await fans.post("hi", "f1"))["code"] == "followers_only"
    assert (await chat.call("PUT", f"{base}/follow", token=fan_token))[0] == 200
    assert (await fans.post("hi", "f2"))["type"] == "ack"
    status, settings, _ = await chat.call("GET", f"{base}/chat/settings")
    assert settings == {"slow_mode": 0, "followers_only": True, "max_length": 500}

    # The per-user rate limit as PROTOCOL.md words it: a burst of 5, then an error with the wait, then
    # one more every 2 s.
    await chat.call("PATCH", f"{base}/chat/settings", {"followers_only": False}, token=owner_token)
    chat.clock.advance(60)
    answers = [await trolling.post(f"flood {i}", f"r{i}") for i in range(7)]
    assert [a["type"] for a in answers[:5]] == ["ack"] * 5
    assert answers[5]["code"] == "rate_limited" and answers[5]["retry_after"] >= 1
    assert answers[5]["nonce"] == "r5"  # so the page can give the refused text back
    chat.clock.advance(2)
    assert (await trolling.post("after 2 s", "r7"))["type"] == "ack"
    assert (await trolling.post("too soon", "r8"))["code"] == "rate_limited"
    for client in (watcher, trolling, moderating, fans):
        await client.close()


# --- the data channel ----------------------------------------------------------------------------


class DcClient(Client):
    def __init__(self, channel: Any) -> None:
        super().__init__()
        self.channel = channel
        channel.on("message", lambda data: self.received(data) if isinstance(data, str) else None)


async def watch_with_chat(api: Api, channel: str, token: str | None) -> tuple[Peer, DcClient]:
    peer = Peer.viewer()
    client = DcClient(peer.pc.createDataChannel("chat"))
    status, body, _ = await api.call("POST", f"/whep/{channel}", data=(await peer.offer()).encode(), token=token,
                                     headers={"Content-Type": SDP})
    assert status == 201, body
    await peer.answer(body.decode())
    await client.of_type("welcome", timeout=10)
    return peer, client


async def test_data_channel_and_websocket_share_one_conversation(chat: Api) -> None:
    owner, owner_token = await chat.user()
    viewer, viewer_token = await chat.user("viewer")
    status, key, _ = await chat.call("GET", "/api/me/stream-key", token=owner_token)
    publisher = Peer.publisher("h264")
    status, answer, _ = await chat.call("POST", f"/whip/{owner}", data=(await publisher.offer()).encode(),
                                        token=key["key"], headers={"Content-Type": SDP})
    assert status == 201, answer
    await publisher.answer(answer.decode())

    peer, rtc = await watch_with_chat(chat, owner, viewer_token)
    assert (await rtc.of_type("you"))["username"] == viewer
    for _ in range(100):  # the viewer count (told at most once a second) is out before the burst below
        if (await chat.call("GET", f"/api/channels/{owner}"))[1]["viewer_count"] == 1:
            break
        await asyncio.sleep(0.05)
    socket = await ws_join(chat, owner, owner_token)
    rtc.channel.send(json.dumps({"type": "send", "text": "from the data channel", "nonce": "d1"}))
    await rtc.of_type("ack", nonce="d1")
    await socket.of_type("message", text="from the data channel")
    await socket.post("from the websocket", "w1")
    await rtc.of_type("message", text="from the websocket")

    # Garbage on the data channel: errors for the sender, nothing for anyone else, the session lives on.
    for frame, code in BAD_FRAMES:
        chat.clock.advance(1)
        rtc.channel.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
        await rtc.error(code)
    transport = rtc.channel.transport  # a text message that is not UTF-8 (no browser can send one)
    transport._data_channel_queue.append((rtc.channel, 51, b"{\"type\": \"send\", \"text\": \"\xff\"}"))
    await transport._data_channel_flush()
    await rtc.error("bad_encoding")
    rtc.channel.send(json.dumps({"type": "send", "text": "still fine", "nonce": "d2"}))
    await rtc.of_type("ack", nonce="d2")
    assert [f["text"] for f in socket.frames if f["type"] == "message"] == ["from the data channel", "from the websocket", "still fine"]
    assert peer.pc.connectionState == "connected"

    # A burst (frames that reach the hub before it is next free) goes out in batches of up to 100
    # frames: one fan-out each, one socket write per WebSocket, yet each frame its own message, in
    # order, on both transports.
    fanouts, delivered = await chat_series(chat, "tally_chat_fanout_seconds_count", "tally_chat_frames_delivered_total")
    for i in range(250):
        await chat.services.bus.publish(Message(TOPIC, {"channel": owner, "frame": {"type": "message", "id": 10_000 + i, "text": f"burst {i}"}}))
    for client in (rtc, socket):
        await client.of_type("message", text="burst 249")
        assert [f["text"] for f in client.frames if f.get("text", "").startswith("burst")] == [f"burst {i}" for i in range(250)]
    assert await chat_series(chat, "tally_chat_fanout_seconds_count", "tally_chat_frames_delivered_total") == (fanouts + 3, delivered + 2 * 250)

    # One chat channel per session: a second is closed at once.
    extra = peer.pc.createDataChannel("chat")
    closed = asyncio.Event()
    extra.on("close", closed.set)
    await asyncio.wait_for(closed.wait(), 10)
    assert rtc.channel.readyState == "open"

    # An anonymous viewer's data channel reads but cannot post.
    other, anonymous = await watch_with_chat(chat, owner, None)
    assert [m["text"] for m in (await anonymous.of_type("welcome"))["history"]][-1] == "still fine"
    anonymous.channel.send(json.dumps({"type": "send", "text": "hi", "nonce": "x"}))
    assert (await anonymous.error("sign_in"))["nonce"] == "x"

    # The viewer count arrives on both transports.
    await socket.expect(lambda f: f["type"] == "viewers" and f["count"] == 2)
    await socket.close()
    for p in (other, peer, publisher):
        await p.close()
