"""Viewing sessions: written by the node that serves a WebRTC viewer, by the players' quality beacons,
and for HLS players that say nothing, by their requests; summed per day; reported to the channel's
owner as sessions, unique viewers and quality of experience. Bad beacons change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from signaling.app import SERVICES
from signaling.db.models import ViewerSession, ViewingDay
from support import Api
from test_whip_whep import go_live, post_sdp, stream_key, until
from webrtc_peer import Peer

DAY = 86400.0


@pytest.fixture
async def rtc(app_factory: Callable[..., web.Application], clock: Any) -> AsyncIterator[Api]:
    app = app_factory(webrtc_host_addresses=["127.0.0.1"], viewer_session_retention_days=2)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def rows(api: Api) -> list[ViewerSession]:
    await api.services.viewing.flush()
    async with api.services.db.session() as session:
        return list((await session.scalars(select(ViewerSession).order_by(ViewerSession.started_at))).all())


def beacon(session: str, **figures: Any) -> dict[str, Any]:
    return {"session": session, "viewer": "page-0123456789abcdef", **figures}


async def report(api: Api, name: str, days: int = 7) -> dict[str, Any]:
    token = (await api.login(name))["access_token"]  # the test's clock may have moved past the last one
    status, body, _ = await api.call("GET", f"/api/channels/{name}/analytics?days={days}", token=token)
    assert status == 200, body
    return dict(body["viewing"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_webrtc_viewing_is_written_by_its_node_and_told_by_its_player(rtc: Api) -> None:
    name, token = await rtc.user("broadcaster")
    fan, fan_token = await rtc.user("viewer")
    publisher, _ = await go_live(rtc, name, await stream_key(rtc, token))
    viewer = Peer.viewer()
    status, answer, whep = await post_sdp(rtc, f"/whep/{name}", await viewer.offer(), fan_token)
    assert status == 201
    await viewer.answer(answer.decode())
    await viewer.wait_frames(5)
    node_viewings = rtc.services.node_viewings
    assert node_viewings is not None
    await node_viewings.scan()
    await rtc.services.viewing.flush()  # the node's row first; the player's figures join it
    whep_session = whep["Location"].rsplit("/", 1)[1]

    # The watch page's player tells its figures for that session (it knows it by its Location).
    rtc.clock.advance(10)
    status, _, _ = await rtc.call("POST", f"/api/channels/{name}/watching", beacon(
        "viewing-0123456789abcdef", transport="webrtc", whep_session=whep_session, watch_seconds=9.5,
        startup_ms=420, latency_ms=180, dropped_frames=3, renditions={"360p": 9.5}))
    assert status == 200
    [row] = await rows(rtc)
    assert (row.id, row.transport, row.source, row.viewer) == (whep_session, "webrtc", "node", f"u:{fan}")
    assert (row.startup_ms, row.latency_ms, row.dropped_frames, row.renditions) == (420, 180, 3, {"360p": 9.5})
    assert row.ended_at is None

    # The viewer leaves: the node's next look ends the session (the player's figures stay).
    status, _, _ = await rtc.call("DELETE", whep["Location"])
    assert status == 200
    rtc.clock.advance(5)
    await until(lambda: _no_viewers(rtc))
    await node_viewings.scan()
    [row] = await rows(rtc)
    assert row.ended_at is not None and row.seconds >= 15 and row.startup_ms == 420

    viewing = await report(rtc, name)
    assert viewing["sessions"] == {"webrtc": 1, "hls": 0} and viewing["unique_viewers"] == 1
    assert viewing["startup_ms"] == {"webrtc": 420, "hls": None} and viewing["latency_ms"]["webrtc"] == 180
    assert viewing["rebuffering_ratio"] == 0
    assert viewing["renditions"] == {"360p": 1.0} and viewing["dropped_frames"] == 3
    await viewer.close()
    await publisher.close()


async def _no_viewers(api: Api) -> bool:
    return api.services.node.viewers() == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_hls_players_tell_their_viewings_and_silent_ones_are_seen_by_their_requests(api: Api) -> None:
    name, token = await api.user("broadcaster")
    await api.services.streams.stream_started(name, "s1", name, [])
    requests = api.services.hls_requests
    player = {"User-Agent": "Chromium (the watch page)"}

    # A playlist that is not served (no media in this test: 404) is no sighting.
    assert (await api.call("GET", f"/hls/{name}/s0/720p/index.m3u8", headers=player))[0] == 404
    # The watch page: beacons from its first frame, which claim its address for the channel (its
    # requests, whatever their agent: it may fall back to the browser's own HLS player).
    first = beacon("viewing-hls-0123456789", startup_ms=1500, watch_seconds=0.5)
    assert (await api.call("POST", f"/api/channels/{name}/watching", first, headers=player))[0] == 200
    for _ in range(7):  # playlists served for 30 s: to the page's address, and to Safari elsewhere
        requests.request(name, "127.0.0.1", "AppleCoreMedia (the page's fallback)")
        requests.request(name, "2001:db8:1:2::10", "Safari (its own player)")
        requests.request(name, "2001:db8:1:2::11", "Safari (its own player)")  # the same home: one player
        api.clock.advance(5)
        await requests.tick()
    middle = beacon("viewing-hls-0123456789", watch_seconds=18, stalls=1, stall_seconds=2, latency_ms=1800,
                    renditions={"720p": 12, "360p": 6})
    assert (await api.call("POST", f"/api/channels/{name}/watching", middle, headers=player))[0] == 200
    status, channel, _ = await api.call("GET", f"/api/channels/{name}")
    assert channel["hls_viewers"] == 2  # the watch page and Safari

    got = {row.source: row for row in await rows(api)}
    assert set(got) == {"player", "requests"}  # the watch page's requests are not a third
    told, seen = got["player"], got["requests"]
    assert (told.watch_seconds, told.stalls, told.stall_seconds, told.latency_ms) == (18, 1, 2, 1800)
    assert told.viewer == "a:page-0123456789abcdef" and told.stream_id == "s1" and told.ended_at is None
    assert seen.viewer.startswith("r:r-") and seen.seconds == 30 and seen.stream_id == "s1"
    assert "Safari" not in seen.viewer and "2001" not in seen.viewer  # nothing of the player stored

    # Both stop: the page says so; Safari's requests stop, and after 30 s it is over (the stream too).
    leave = beacon("viewing-hls-0123456789", leaving=True, watch_seconds=20, stalls=1, stall_seconds=2,
                   renditions={"720p": 14, "360p": 6})
    assert (await api.call("POST", f"/api/channels/{name}/watching", leave, headers=player))[0] == 200
    await api.services.streams.stream_ended(name, "s1", "over", 0)
    api.clock.advance(31)
    await requests.tick()
    got = {row.source: row for row in await rows(api)}
    assert got["player"].ended_at is not None and got["requests"].ended_at is not None

    viewing = await report(api, name)
    assert viewing["sessions"] == {"webrtc": 0, "hls": 2} and viewing["unique_viewers"] == 2
    assert viewing["startup_ms"] == {"webrtc": None, "hls": 1500} and viewing["latency_ms"]["hls"] == 1800
    assert viewing["rebuffering_ratio"] == round(2 / 22, 4)
    assert viewing["renditions"] == {"360p": 0.3, "720p": 0.7}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_days_are_summed_and_sessions_past_their_retention_leave_their_sums(rtc: Api) -> None:
    name, token = await rtc.user("broadcaster")
    await rtc.services.streams.stream_started(name, "s1", name, [])
    book, clock = rtc.services.viewing, rtc.clock
    found = await book.stream_of(name)
    assert found is not None
    channel_id = found[0]
    for day in range(4):  # three viewers a day, one of them every day; 300 s each
        for who in ("regular", f"day{day}a", f"day{day}b"):
            book.node_session(f"{day}-{who}", channel_id, "s1", f"u:{who}", clock() - 300, clock(), ended=True)
        await book.flush()
        assert await book.roll_days() >= 1
        clock.advance(DAY)
    viewing = await report(rtc, name)
    assert viewing["sessions"]["webrtc"] == 12 and viewing["unique_viewers"] == 9
    assert viewing["average_session_seconds"] == 300

    # Sessions older than two days go; their days' sums stay (distinct viewers per day, then).
    assert await book.purge() == 9
    async with rtc.services.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(ViewerSession)) == 3
        assert await session.scalar(select(func.count()).select_from(ViewingDay)) == 4
    viewing = await report(rtc, name)
    assert viewing["sessions"]["webrtc"] == 12 and viewing["average_session_seconds"] == 300
    assert viewing["unique_viewers"] == 9  # from the days' sketches: "regular" still counts once
    assert (await report(rtc, name, days=28))["sessions"]["webrtc"] == 12


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_beacons_are_refused_and_change_nothing(api: Api) -> None:
    name, _ = await api.user("broadcaster")
    await api.services.streams.stream_started(name, "s1", name, [])
    path = f"/api/channels/{name}/watching"
    for bad in (
        beacon("short"),
        beacon("viewing-0123456789abcdef", watch_seconds=-1),
        beacon("viewing-0123456789abcdef", watch_seconds="lots"),
        beacon("viewing-0123456789abcdef", startup_ms=10**9),
        beacon("viewing-0123456789abcdef", transport="carrier-pigeon"),
        beacon("viewing-0123456789abcdef", renditions={"<script>": 1}),
        beacon("viewing-0123456789abcdef", renditions={f"{n}p": 1 for n in range(13)}),
        beacon("viewing-0123456789abcdef", renditions={"720p": 10**9}),
        beacon("viewing-0123456789abcdef", whep_session="../../etc"),
        beacon("viewing-0123456789abcdef", transport="webrtc", whep_session="a" * 100),  # longer than an id
        beacon("viewing-0123456789abcdef", watch_seconds=10, dropped_frames=10**8),  # more than it could show
        beacon("viewing-0123456789abcdef", watch_seconds=10, stalls=10**5),
        beacon("viewing-0123456789abcdef", extra="field"),
        [1, 2, 3],
    ):
        status, problem, _ = await api.call("POST", path, bad)
        assert status == 422, (bad, status, problem)
    status, _, _ = await api.call("POST", path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert status in (400, 422)
    status, _, _ = await api.call("POST", path, data=b"x" * 100_000, headers={"Content-Type": "application/json"})
    assert status == 413
    status, _, _ = await api.call("POST", "/api/channels/nobody_here/watching", beacon("viewing-0123456789abcdef"))
    assert status == 404
    assert await rows(api) == []

    # A flood from one address: a player beats every 10 s, so 12 a minute per viewing, 600 per address.
    statuses = [(await api.call("POST", path, beacon("viewing-flood-0123456789")))[0] for _ in range(20)]
    assert statuses.count(200) == 12 and statuses[12:] == [429] * 8
    await asyncio.sleep(0)
    assert len(await rows(api)) == 1  # the twelve allowed beacons are one session


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_row_the_database_refuses_does_not_hold_back_the_others(api: Api) -> None:
    name, _ = await api.user("broadcaster")
    await api.services.streams.stream_started(name, "s1", name, [])
    book, clock = api.services.viewing, api.clock
    found = await book.stream_of(name)
    assert found is not None
    book.node_session("x" * 100, found[0], "s1", None, clock() - 10, clock(), ended=False)  # too long for its column
    book.node_session("good-session-0123456789", found[0], "s1", None, clock() - 10, clock(), ended=False)
    await book.flush()
    assert [row.id for row in await rows(api)] == ["good-session-0123456789"]
    assert book.pending == 0 and book.dropped == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_unique_viewers_over_many_days_come_from_the_days_sketches(api: Api) -> None:
    """Three whole days of 4,000 viewers each, half of them every day: 8,000 distinct viewers, counted
    by the union of the days' HyperLogLog sketches within its error (about 1.6 %), and exactly for the
    viewers of today (raw sessions)."""
    name, _ = await api.user("broadcaster")
    await api.services.streams.stream_started(name, "s1", name, [])
    book, clock = api.services.viewing, api.clock
    found = await book.stream_of(name)
    assert found is not None
    for day in range(3):
        for n in range(4000):
            who = f"u:regular{n}" if n < 2000 else f"u:day{day}-{n}"
            book.node_session(f"{day}-{n}", found[0], "s1", who, clock() - 60, clock(), ended=True)
        await book.flush()
        clock.advance(DAY)
    book.node_session("today-1", found[0], "s1", "u:regular1", clock() - 60, clock(), ended=True)
    book.node_session("today-2", found[0], "s1", "u:newcomer", clock() - 60, clock(), ended=True)
    await book.flush()
    assert await book.roll_days() >= 3
    viewing = await report(api, name)
    assert viewing["sessions"]["webrtc"] == 12_002
    assert abs(viewing["unique_viewers"] - 8_001) <= 0.05 * 8_001, viewing["unique_viewers"]
    async with api.services.db.session() as session:
        sketches = (await session.scalars(select(ViewingDay.viewer_sketch))).all()
    assert all(sketch and len(sketch) <= 2100 for sketch in sketches)  # a sketch stays small however many
