"""A channel's analytics: the audience rolled up per minute from the counts a stream's node tells (WebRTC)
and the HLS players' beats, with the stream's chat and new followers, reported to its owner as JSON and
CSV over 7, 28 or 90 days. Time is the test's own clock, so every figure is exact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import Api

START = 1_800_000_000.0  # the FakeClock's start: a whole minute


async def _call(api: Api, path: str, token: str) -> tuple[int, Any, Any]:
    return await api.call("GET", path, token=token)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_the_audience_is_rolled_up_per_minute_and_reported_to_the_owner(api: Api, database_url: str) -> None:
    name, token = await api.user("broadcaster")
    fan, fan_token = await api.user("viewer")
    other, other_token = await api.user("broadcaster")
    streams, audience, clock = api.services.streams, api.services.audience, api.clock
    assert clock() == START

    await streams.stream_started(name, "s1", name, [])
    clock.advance(10)
    await streams.viewers_changed(name, "s1", 3)  # three WebRTC viewers from 0:10
    for n in range(2):  # two HLS players from 0:20
        status, _, _ = await api.call("POST", f"/api/channels/{name}/watching", {"session": f"player-{n}-0123456789ab"})
        assert status == 200
    clock.advance(10)
    await audience.sample_hls()
    assert (await api.call("PUT", f"/api/channels/{name}/follow", token=fan_token))[0] == 200
    await api.services.chat.post(name, await api.services.accounts.authenticate(fan_token), "hello")
    clock.advance(50)
    await streams.viewers_changed(name, "s1", 1)  # one left at 1:10
    clock.advance(60)
    await streams.stream_ended(name, "s1", "the publisher left", 3)  # at 2:10

    status, report, _ = await _call(api, f"/api/channels/{name}/analytics", token)
    assert status == 200, report
    # WebRTC: 3 x 50 s in the first minute, 3 x 10 + 1 x 50 in the second, 1 x 10 in the third.
    # HLS: 2 x 40 s, 2 x 60 s (the players' beats hold for 25 s: the rollup took 2 until the end), 2 x 10 s.
    assert [(m["webrtc"], m["hls"]) for m in report["minutes"]] == [(3, 2), (3, 2), (1, 2)]
    assert report["watch_seconds"] == {"webrtc": 240.0, "hls": 220.0, "total": 460.0}
    assert report["streams"] == 1 and report["live_seconds"] == 130.0
    assert report["peak_concurrent"] == 5 and report["average_concurrent"] == round(460 / 130, 2)
    assert report["chat_messages"] == 1 and report["chatters"] == 1 and report["new_followers"] == 1
    assert report["days"] == 7 and report["resolution"] == "minute"

    status, text, headers = await api.call("GET", f"/api/channels/{name}/analytics.csv?days=28", token=token)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = text.decode().splitlines()
    assert lines[0] == "minute,webrtc_viewers,hls_viewers,webrtc_seconds_watched,hls_seconds_watched"
    assert lines[1] == "2027-01-15T08:00:00+00:00,3,2,150.0,80.0" and len(lines) == 4

    # Only the owner (or an admin); 7, 28 or 90 days.
    assert (await _call(api, f"/api/channels/{name}/analytics", other_token))[0] == 403
    assert (await api.call("GET", f"/api/channels/{name}/analytics"))[0] == 401
    assert (await _call(api, f"/api/channels/{name}/analytics?days=5", token))[0] == 422
    assert (await _call(api, f"/api/channels/{name}/analytics?days=lots", token))[0] == 422
    assert (await _call(api, "/api/channels/nobody_here/analytics", token))[0] == 404
    # A stream older than the period is left out.
    clock.advance(8 * 86400)
    _, login, _ = await api.call("POST", "/api/auth/login", {"username": name, "password": "correct horse"})
    token = login["access_token"]  # the old one ran out meanwhile
    status, report, _ = await _call(api, f"/api/channels/{name}/analytics", token)
    assert report["minutes"] == [] and report["streams"] == 0 and report["watch_seconds"]["total"] == 0
    assert await api.services.viewing.roll_days() == 9  # as every 10 minutes: the days summed, that one on
    status, report, _ = await _call(api, f"/api/channels/{name}/analytics?days=28", token)
    assert report["watch_seconds"]["total"] == 460.0
    assert report["resolution"] == "day"  # longer periods are drawn per day: that day's peaks
    assert [(m["minute"][:10], m["webrtc"], m["hls"]) for m in report["minutes"]] == [("2027-01-15", 3, 2)]
    assert report["peak_concurrent"] == 5 and report["streams"] == 1
    del fan, other


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_minute_under_way_is_written_as_it_grows(api: Api) -> None:
    name, token = await api.user("broadcaster")
    streams, audience, clock = api.services.streams, api.services.audience, api.clock
    await streams.stream_started(name, "s2", name, [])
    await streams.viewers_changed(name, "s2", 4)
    clock.advance(30)
    await audience.flush()
    report = (await _call(api, f"/api/channels/{name}/analytics", token))[1]
    assert report["watch_seconds"]["webrtc"] == 120.0  # live: half a minute so far
    clock.advance(15)
    await audience.flush()
    report = (await _call(api, f"/api/channels/{name}/analytics", token))[1]
    assert report["watch_seconds"]["webrtc"] == 180.0 and len(report["minutes"]) == 1  # the same row, replaced
    await streams.stream_ended(name, "s2", "over", 4)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_steady_audience_across_minutes_counts_every_second_of_each(api: Api) -> None:
    """No count changes at the minute's end: the flush that crosses it closes the minute whole."""
    name, token = await api.user("broadcaster")
    streams, audience, clock = api.services.streams, api.services.audience, api.clock
    await streams.stream_started(name, "s3", name, [])
    await streams.viewers_changed(name, "s3", 4)
    for _ in range(5):
        clock.advance(10)
        await audience.flush()  # :10 … :50
    clock.advance(15)
    await audience.flush()  # 1:05
    clock.advance(10)
    await asyncio.gather(audience.flush(), audience.flush())  # 1:15, twice at once
    report = (await _call(api, f"/api/channels/{name}/analytics", token))[1]
    assert [m["webrtc"] for m in report["minutes"]] == [4, 4]
    assert report["watch_seconds"]["webrtc"] == 4 * 75.0
    await streams.stream_ended(name, "s3", "over", 4)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_count_told_before_the_stream_is_known_here_is_kept_for_it(api: Api) -> None:
    """A node tells a moved stream's audience at once, maybe before the rollup has looked the stream up."""
    name, token = await api.user("broadcaster")
    streams, audience, clock = api.services.streams, api.services.audience, api.clock
    audience.observe("s4", "webrtc", 5)
    await streams.stream_started(name, "s4", name, [])
    clock.advance(30)
    await streams.stream_ended(name, "s4", "over", 5)
    report = (await _call(api, f"/api/channels/{name}/analytics", token))[1]
    assert report["watch_seconds"]["webrtc"] == 150.0 and report["peak_concurrent"] == 5


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_admins_see_the_whole_site_and_its_busiest_channels(api: Api) -> None:
    _, admin = await api.user("admin")
    first, token = await api.user("broadcaster")
    second, _ = await api.user("broadcaster")
    streams, clock = api.services.streams, api.clock
    await streams.stream_started(first, "a1", first, [])
    await streams.stream_started(second, "b1", second, [])
    await streams.viewers_changed(first, "a1", 2)
    await streams.viewers_changed(second, "b1", 6)
    clock.advance(30)
    await streams.stream_ended(first, "a1", "over", 2)
    await streams.stream_ended(second, "b1", "over", 6)

    status, site, _ = await api.call("GET", "/api/analytics?days=28", token=admin)
    assert status == 200, site
    assert site["streams"] == 2 and site["watch_seconds"]["webrtc"] == 240.0 and site["peak_concurrent"] == 8
    assert [(b["channel"], b["watch_seconds"], b["peak_concurrent"]) for b in site["busiest"]] == [
        (second, 180.0, 6), (first, 60.0, 2)]
    assert (await api.call("GET", "/api/analytics", token=token))[0] == 403  # a broadcaster sees only their own
    assert (await api.call("GET", "/api/analytics?days=3", token=admin))[0] == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_each_past_stream_has_its_own_report(api: Api) -> None:
    name, token = await api.user("broadcaster")
    fan, fan_token = await api.user("viewer")
    other, other_token = await api.user("broadcaster")
    streams, book, clock = api.services.streams, api.services.viewing, api.clock
    found = await book.stream_of(name)
    assert found is not None
    for stream, viewers, seconds in (("p1", 2, 120), ("p2", 5, 60)):
        await streams.stream_started(name, stream, name, [])
        await streams.viewers_changed(name, stream, viewers)
        for n in range(viewers):
            book.node_session(f"{stream}-{n}", found[0], stream, f"u:v{n}", clock(), clock() + seconds, ended=True)
        if stream == "p1":
            await api.services.chat.post(name, await api.services.accounts.authenticate(fan_token), "first!")
            assert (await api.call("PUT", f"/api/channels/{name}/follow", token=fan_token))[0] == 200
        clock.advance(seconds)
        await streams.stream_ended(name, stream, "over", viewers)
        clock.advance(120)
    await book.flush()
    token, other_token = (await api.login(name))["access_token"], (await api.login(other))["access_token"]

    status, report, _ = await _call(api, f"/api/channels/{name}/streams/p1/analytics", token)
    assert status == 200, report
    assert (report["stream"], report["days"], report["streams"], report["live_seconds"]) == ("p1", 0, 1, 120.0)
    assert report["until"] is not None and report["peak_concurrent"] == 2
    assert report["watch_seconds"]["webrtc"] == 240.0 and report["resolution"] == "minute"
    assert report["chat_messages"] == 1 and report["new_followers"] == 1
    assert report["viewing"]["sessions"] == {"webrtc": 2, "hls": 0} and report["viewing"]["unique_viewers"] == 2
    assert report["viewing"]["average_session_seconds"] == 120
    status, report, _ = await _call(api, f"/api/channels/{name}/streams/p2/analytics", token)
    assert report["peak_concurrent"] == 5 and report["chat_messages"] == 0 and report["new_followers"] == 0
    assert report["viewing"]["sessions"]["webrtc"] == 5

    assert (await _call(api, f"/api/channels/{name}/streams/p1/analytics", other_token))[0] == 403
    assert (await _call(api, f"/api/channels/{other}/streams/p1/analytics", other_token))[0] == 404  # not theirs
    assert (await _call(api, f"/api/channels/{name}/streams/{'x' * 40}/analytics", token))[0] == 404
    assert (await api.call("GET", f"/api/channels/{name}/streams/p1/analytics"))[0] == 401
    del fan
