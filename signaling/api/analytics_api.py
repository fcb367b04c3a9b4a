"""A channel's analytics for its owner (or an admin): JSON for its page, CSV for a spreadsheet."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from signaling.analytics.ingest_health import IngestHistory, warnings
from signaling.analytics.report import PERIODS, ChannelAnalytics, Report
from signaling.api.endpoint import Access, Call, Endpoint, int_query, json_response, name_param
from signaling.api.schemas import (
    AnalyticsOut, AudienceMinuteOut, BusyChannelOut, IngestOut, IngestSampleOut, SiteAnalyticsOut, ViewingOut,
    WatchTimeOut,
)
from signaling.auth.roles import Role
from signaling.errors import Invalid, NotFound

OWNER = Access(Role.BROADCASTER, "the channel's owner, or an admin")
ADMIN = Access(Role.ADMIN)
DAYS = (("days", "integer", "7, 28 or 90 (default 7): the period, up to now"),)


PRIVATE = {"Cache-Control": "private, no-store"}
STALE_AFTER = 6.0  # seconds without a sample: the stream is not arriving (or is over)


def _days(call: Call[None]) -> int:
    days = int_query(call.request, "days", 7, 1, 90)
    if days not in PERIODS:
        raise Invalid("days must be 7, 28 or 90", errors=[{"field": "days", "message": "not 7, 28 or 90"}])
    return days


def _fields(report: Report) -> dict[str, Any]:
    live_minutes = report.live_seconds / 60
    v = report.viewing
    return dict(
        channel=report.channel, days=report.days, since=report.since, stream=report.stream, until=report.until,
        streams=report.streams,
        live_seconds=report.live_seconds, peak_concurrent=report.peak_concurrent,
        average_concurrent=report.average_concurrent, watch_seconds=WatchTimeOut(**report.watch_seconds),
        average_watch_per_live_minute=round(report.watch_seconds["total"] / live_minutes, 1) if live_minutes else 0.0,
        chat_messages=report.chat_messages, chatters=report.chatters, new_followers=report.new_followers,
        viewing=ViewingOut(sessions=v.sessions, unique_viewers=v.viewers, average_session_seconds=v.average_session_seconds,
                           startup_ms=v.startup_ms, rebuffering_ratio=v.rebuffering, latency_ms=v.latency_ms,
                           dropped_frames=v.dropped_frames, renditions=v.renditions),
        resolution="day" if report.by_day else "minute",
        minutes=[AudienceMinuteOut(minute=m.minute, webrtc=m.webrtc, hls=m.hls) for m in report.minutes])


class AnalyticsApi:
    def __init__(self, analytics: ChannelAnalytics, ingest: IngestHistory, clock: Callable[[], float] = time.time) -> None:
        self._analytics = analytics
        self._ingest = ingest
        self._clock = clock

    async def ingest(self, call: Call[None]) -> web.StreamResponse:
        channel = await self._analytics.owned(name_param(call.request, "name"), call.user)
        samples = self._ingest.samples(channel)
        live = bool(samples) and self._clock() - samples[-1].at < STALE_AFTER
        return json_response(IngestOut(
            channel=channel, live=live, warnings=warnings(samples) if live else [],
            samples=[IngestSampleOut(at=datetime.fromtimestamp(s.at, UTC), video_kbps=s.video_kbps,
                                     audio_kbps=s.audio_kbps, fps=s.fps, keyframe_interval=s.keyframe_interval,
                                     loss_percent=s.loss_percent, viewers=s.viewers) for s in samples]),
            headers=PRIVATE)

    async def _report(self, call: Call[None]) -> Report:
        return await self._analytics.report(name_param(call.request, "name"), call.user, _days(call))

    async def show(self, call: Call[None]) -> web.StreamResponse:
        return json_response(AnalyticsOut(**_fields(await self._report(call))), headers=PRIVATE)

    async def stream(self, call: Call[None]) -> web.StreamResponse:
        stream = call.request.match_info["stream"]
        if len(stream) > 32:
            raise NotFound("there is no such stream")
        report = await self._analytics.stream_report(name_param(call.request, "name"), call.user, stream)
        return json_response(AnalyticsOut(**_fields(report)), headers=PRIVATE)

    async def site(self, call: Call[None]) -> web.StreamResponse:
        report, busiest = await self._analytics.site(_days(call))
        return json_response(SiteAnalyticsOut(
            **_fields(report), busiest=[BusyChannelOut(channel=name, watch_seconds=seconds, peak_concurrent=peak)
                                        for name, seconds, peak in busiest]), headers=PRIVATE)

    async def csv(self, call: Call[None]) -> web.StreamResponse:
        days = _days(call)
        channel, minutes = await self._analytics.minutes(name_param(call.request, "name"), call.user, days)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["minute", "webrtc_viewers", "hls_viewers", "webrtc_seconds_watched", "hls_seconds_watched"])
        for m in minutes:
            writer.writerow([m.minute.isoformat(), m.webrtc, m.hls, round(m.webrtc_seconds, 1), round(m.hls_seconds, 1)])
        filename = f"{channel}-analytics-{days}d.csv"
        return web.Response(text=out.getvalue(), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{filename}"', **PRIVATE})

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("GET", "/api/channels/{name}/analytics", self.show,
                     "The channel's audience, streams, chat and followers over the last 7, 28 or 90 days", OWNER,
                     "analytics", response=AnalyticsOut, errors=(401, 403, 404, 422), query=DAYS),
            Endpoint("GET", "/api/channels/{name}/streams/{stream}/analytics", self.stream,
                     "One stream's audience, sessions, chat and new followers (its id from the channel's streams)",
                     OWNER, "analytics", response=AnalyticsOut, errors=(401, 403, 404)),
            Endpoint("GET", "/api/analytics", self.site,
                     "The whole site's audience, streams, chat and followers, with its busiest channels", ADMIN,
                     "analytics", response=SiteAnalyticsOut, errors=(401, 403, 422), query=DAYS),
            Endpoint("GET", "/api/channels/{name}/ingest", self.ingest,
                     "How the live stream arrives: the last minutes of bitrate, frame rate, keyframe interval, "
                     "loss and viewers, and what looks wrong in plain words", OWNER, "analytics",
                     response=IngestOut, errors=(401, 403, 404)),
            Endpoint("GET", "/api/channels/{name}/analytics.csv", self.csv,
                     "The same period's concurrent viewers and watch time per minute, as CSV", OWNER, "analytics",
                     errors=(401, 403, 404, 422), query=DAYS, extra={"produces": "text/csv"}),
        ]
