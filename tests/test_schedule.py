"""Scheduled streams with the real server and database: a broadcaster schedules, everyone sees what
is coming (the channel, the directory's Upcoming, an iCalendar feed that icalendar reads back), bad
input changes nothing, and a stream that goes live in an entry's window is linked to it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from icalendar import Calendar

from support import Api
from test_whip_whep import go_live, rtc, stream_key, until  # noqa: F401 - rtc is a fixture



def at(api: Api, minutes: float) -> str:
    """The fake clock's now plus `minutes`, as ISO 8601 with a zone."""
    return (datetime.fromtimestamp(api.clock(), UTC) + timedelta(minutes=minutes)).isoformat()


async def test_a_broadcaster_schedules_and_everyone_sees_what_is_coming(rtc: Api) -> None:
    name, token = await rtc.user()
    other, other_token = await rtc.user()
    path = f"/api/channels/{name}/schedule"
    status, first, _ = await rtc.call("POST", path, {"title": "Late show", "starts_at": at(rtc, 180), "expected_minutes": 90},
                                      token=token)
    assert status == 201, first
    assert first["title"] == "Late show" and first["expected_minutes"] == 90 and first["stream_id"] is None
    assert first["watch_url"].endswith(f"/watch/{name}")
    status, second, _ = await rtc.call("POST", path, {"starts_at": at(rtc, 60)}, token=token)
    assert status == 201 and second["expected_minutes"] == 60 and second["title"]  # the channel's title by default
    status, theirs, _ = await rtc.call("POST", f"/api/channels/{other}/schedule", {"title": "Other", "starts_at": at(rtc, 30)},
                                       token=other_token)
    assert status == 201

    status, listed, _ = await rtc.call("GET", path)
    assert status == 200 and [e["id"] for e in listed["items"]] == [second["id"], first["id"]]  # soonest first
    status, upcoming, _ = await rtc.call("GET", "/api/schedule")
    assert [e["id"] for e in upcoming["items"]] == [theirs["id"], second["id"], first["id"]]

    # Nobody else changes it, and bad input changes nothing.
    assert (await rtc.call("POST", path, {"starts_at": at(rtc, 10)}))[0] == 401
    assert (await rtc.call("POST", path, {"starts_at": at(rtc, 10)}, token=other_token))[0] == 403
    assert (await rtc.call("DELETE", f"{path}/{first['id']}", token=other_token))[0] == 403
    assert (await rtc.call("DELETE", f"/api/channels/{other}/schedule/{first['id']}", token=other_token))[0] == 404
    bad: list[dict[str, Any]] = [
        {"starts_at": at(rtc, -60)},  # the past
        {"starts_at": at(rtc, 60 * 24 * 400)},  # more than a year ahead
        {"starts_at": (datetime.fromtimestamp(rtc.clock()) + timedelta(hours=1)).replace(tzinfo=None).isoformat()},  # no zone
        {"starts_at": at(rtc, 60), "expected_minutes": 0},
        {"starts_at": at(rtc, 60), "expected_minutes": 1441},
        {"starts_at": at(rtc, 60), "title": "x" * 141},
        {"starts_at": "tomorrow"},
        {"title": "no start"},
        {"starts_at": at(rtc, 60), "surprise": True},
    ]
    for body in bad:
        status, problem, _ = await rtc.call("POST", path, body, token=token)
        assert status == 422, (body, problem)
        assert problem["errors"], problem
    assert len((await rtc.call("GET", path))[1]["items"]) == 2
    for n in range(48):  # 50 coming at once at the most
        assert (await rtc.call("POST", path, {"starts_at": at(rtc, 300 + n)}, token=token))[0] == 201
    status, problem, _ = await rtc.call("POST", path, {"starts_at": at(rtc, 999)}, token=token)
    assert status == 409 and "delete one" in problem["detail"]

    # The calendar feed, read back with icalendar.
    status, ics, headers = await rtc.call("GET", f"/channels/{name}/schedule.ics")
    assert status == 200 and headers["Content-Type"].startswith("text/calendar")
    feed = Calendar.from_ical(ics)
    events = feed.walk("VEVENT")
    assert len(events) == 50
    late = next(e for e in events if str(e["SUMMARY"]) == "Late show")
    assert late.decoded("DTSTART") == datetime.fromisoformat(first["starts_at"])
    assert late.decoded("DTEND") - late.decoded("DTSTART") == timedelta(minutes=90)
    assert str(late["URL"]).endswith(f"/watch/{name}") and str(late["UID"]) == f"scheduled-{first['id']}@tallylight"
    assert (await rtc.call("GET", "/channels/nobody_here/schedule.ics"))[0] == 404

    assert (await rtc.call("DELETE", f"{path}/{first['id']}", token=token))[0] == 204
    assert first["id"] not in [e["id"] for e in (await rtc.call("GET", path, token=token))[1]["items"]]
    assert (await rtc.call("DELETE", f"{path}/{first['id']}", token=token))[0] == 404


async def test_going_live_in_the_window_links_the_stream_to_its_entry(rtc: Api) -> None:
    name, token = await rtc.user()
    path = f"/api/channels/{name}/schedule"
    soon = (await rtc.call("POST", path, {"title": "Soon", "starts_at": at(rtc, 20), "expected_minutes": 30}, token=token))[1]
    later = (await rtc.call("POST", path, {"title": "Later", "starts_at": at(rtc, 240)}, token=token))[1]
    publisher, _ = await go_live(rtc, name, await stream_key(rtc, token))

    async def linked() -> bool:
        items = (await rtc.call("GET", path))[1]["items"]
        return any(e["id"] == soon["id"] and e["stream_id"] for e in items)

    await until(linked)
    status, streams, _ = await rtc.call("GET", f"/api/channels/{name}/streams?limit=1")
    items = (await rtc.call("GET", path))[1]["items"]
    assert [e["stream_id"] for e in items if e["id"] == soon["id"]] == [streams["items"][0]["id"]]
    assert [e["stream_id"] for e in items if e["id"] == later["id"]] == [None]  # not its window
    # A live channel's entries are not "Upcoming" in the directory: it is on now.
    assert name not in [e["channel"] for e in (await rtc.call("GET", "/api/schedule"))[1]["items"]]
    await publisher.close()
    await asyncio.sleep(0)
