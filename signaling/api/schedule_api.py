"""Scheduled streams: a channel's schedule (and its iCalendar feed), and what is coming across the site."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import web
from icalendar import Calendar, Event

from signaling.api.endpoint import ANYONE, Access, Call, Endpoint, id_param, int_query, json_response, name_param
from signaling.api.schemas import ScheduledIn, ScheduledListOut, ScheduledOut
from signaling.auth.roles import Role
from signaling.schedule.service import Entry, ScheduleService
from signaling.settings import Settings

OWNER = Access(Role.BROADCASTER, "the channel's owner, or an admin")


class ScheduleApi:
    def __init__(self, schedule: ScheduleService, settings: Settings) -> None:
        self._schedule = schedule
        self._base = settings.resolved_public_url

    def _out(self, entry: Entry) -> ScheduledOut:
        return ScheduledOut(id=entry.id, channel=entry.channel, display_name=entry.display_name, title=entry.title,
                            starts_at=entry.starts_at, ends_at=entry.ends_at, expected_minutes=entry.expected_minutes,
                            stream_id=entry.stream_id, watch_url=f"{self._base}/watch/{quote(entry.channel)}")

    async def of_channel(self, call: Call[None]) -> web.StreamResponse:
        entries = await self._schedule.of_channel(name_param(call.request, "name"), int_query(call.request, "limit", 20, 1, 50))
        return json_response(ScheduledListOut(items=[self._out(e) for e in entries]))

    async def add(self, call: Call[ScheduledIn]) -> web.StreamResponse:
        b = call.body
        entry = await self._schedule.add(name_param(call.request, "name"), call.user, b.title, b.starts_at, b.expected_minutes)
        return json_response(self._out(entry), status=201)

    async def remove(self, call: Call[None]) -> web.StreamResponse:
        await self._schedule.remove(name_param(call.request, "name"), id_param(call.request, "id", "scheduled stream"),
                                    call.user)
        return web.Response(status=204)

    async def upcoming(self, call: Call[None]) -> web.StreamResponse:
        entries = await self._schedule.upcoming(int_query(call.request, "limit", 12, 1, 50))
        return json_response(ScheduledListOut(items=[self._out(e) for e in entries]))

    async def calendar(self, call: Call[None]) -> web.StreamResponse:
        """The channel's schedule as iCalendar (RFC 5545), for a calendar app to subscribe to."""
        name = name_param(call.request, "name")
        entries = await self._schedule.of_channel(name, 100, past=True)
        feed = Calendar()
        feed.add("prodid", "-//Tallylight//Schedule//EN")
        feed.add("version", "2.0")
        feed.add("x-wr-calname", f"{name} on Tallylight")
        feed.add("refresh-interval;value=duration", "PT1H")
        stamp = datetime.now(UTC)
        for entry in entries:
            event = Event()
            event.add("uid", f"scheduled-{entry.id}@tallylight")
            event.add("dtstamp", stamp)
            event.add("dtstart", entry.starts_at)
            event.add("dtend", entry.ends_at)
            event.add("summary", entry.title)
            event.add("url", f"{self._base}/watch/{quote(entry.channel)}")
            event.add("description", f"{entry.display_name} streams live on Tallylight: {self._base}/watch/{quote(entry.channel)}")
            feed.add_component(event)
        return web.Response(body=feed.to_ical(), content_type="text/calendar", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300",
                                     "Content-Disposition": f'inline; filename="{name}.ics"'})

    def endpoints(self) -> list[Endpoint]:
        path = "/api/channels/{name}/schedule"
        return [
            Endpoint("GET", path, self.of_channel, "A channel's coming streams, soonest first", ANYONE, "schedule",
                     response=ScheduledListOut, errors=(404, 422), query=(("limit", "integer", "1 to 50, default 20"),)),
            Endpoint("POST", path, self.add, "Schedule a stream (title, start, expected length)", OWNER, "schedule",
                     body=ScheduledIn, response=ScheduledOut, status=201, errors=(401, 403, 404, 409, 422)),
            Endpoint("DELETE", path + "/{id}", self.remove, "Take a stream off the schedule", OWNER, "schedule",
                     status=204, errors=(401, 403, 404)),
            Endpoint("GET", "/api/schedule", self.upcoming, "Streams coming on every channel, soonest first", ANYONE,
                     "schedule", response=ScheduledListOut, errors=(422,), query=(("limit", "integer", "1 to 50, default 12"),)),
            Endpoint("GET", "/channels/{name}/schedule.ics", self.calendar, "A channel's schedule as an iCalendar feed",
                     ANYONE, "schedule", errors=(404,), extra={"produces": "text/calendar"}),
        ]
