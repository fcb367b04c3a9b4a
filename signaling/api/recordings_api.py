"""Recordings: listing, one, deleting, starting and stopping while live, and the media itself.

With S3 storage the media and thumbnails are presigned URLs the browser fetches from the bucket (or
its CDN) directly; with file storage they are served here, with HTTP ranges, so seeking works.
"""

from __future__ import annotations

from aiohttp import web

from recorder.live_thumbnails import live_key
from signaling.api.endpoint import ANYONE, MAX_ID, Access, Call, Endpoint, id_param, int_query, json_response, name_param
from signaling.api.schemas import RecordingControlIn, RecordingControlOut, RecordingListOut, RecordingOut
from signaling.auth.roles import Role
from signaling.errors import NotFound
from signaling.recordings.service import RecordingService, RecordingView
from signaling.settings import Settings

OWNER = Access(Role.BROADCASTER, "the channel's owner, or an admin")


class RecordingsApi:
    def __init__(self, recordings: RecordingService, settings: Settings) -> None:
        self._recordings = recordings
        self._base = settings.resolved_public_url
        self._expires = settings.recording_url_ttl

    def _out(self, view: RecordingView) -> RecordingOut:
        row = view.row
        return RecordingOut(
            id=row.id,
            channel=view.channel,
            stream_id=row.stream_id,
            state=row.state,  # type: ignore[arg-type]
            title=row.title,
            started_at=row.started_at,
            ended_at=row.ended_at,
            duration=row.duration,
            size=row.size,
            video_codec=row.video_codec,
            audio_codec=row.audio_codec,
            width=row.width,
            height=row.height,
            playback_url=self._recordings.playback_url(row, self._base, self._expires),
            thumbnail_url=self._recordings.thumbnail_url(row, self._base, self._expires),
            page_url=f"{self._base}/recordings/{row.id}",
            error=row.error,
        )

    async def listing(self, call: Call[None]) -> web.StreamResponse:
        before = int_query(call.request, "before", 0, 1, MAX_ID) or None
        limit = int_query(call.request, "limit", 20, 1, 100)
        views, next_before = await self._recordings.of_channel(name_param(call.request, "name"), before, limit)
        return json_response(
            RecordingListOut(items=[self._out(v) for v in views], next_cursor=None if next_before is None else str(next_before))
        )

    async def show(self, call: Call[None]) -> web.StreamResponse:
        return json_response(self._out(await self._recordings.get(id_param(call.request, "id", "recording"))))

    async def delete(self, call: Call[None]) -> web.StreamResponse:
        await self._recordings.delete(id_param(call.request, "id", "recording"), call.user)
        return web.Response(status=204)

    async def control(self, call: Call[RecordingControlIn]) -> web.StreamResponse:
        name = name_param(call.request, "name")
        view = await self._recordings.control(name, call.user, call.body.active)
        return json_response(
            RecordingControlOut(
                channel=name, active=self._recordings.is_recording(name), recording=None if view is None else self._out(view)
            )
        )

    async def media(self, call: Call[None]) -> web.StreamResponse:
        view = await self._recordings.get(id_param(call.request, "id", "recording"))
        if view.row.state != "ready":
            raise NotFound(f"recording {view.row.id} is not ready yet")
        return await self._object(call.request, view.row.storage_key, "video/mp4", "public, max-age=3600")

    async def thumbnail(self, call: Call[None]) -> web.StreamResponse:
        view = await self._recordings.get(id_param(call.request, "id", "recording"))
        if not view.row.thumbnail_key:
            raise NotFound(f"recording {view.row.id} has no thumbnail")
        return await self._object(call.request, view.row.thumbnail_key, "image/jpeg", "public, max-age=3600")

    async def live_thumbnail(self, call: Call[None]) -> web.StreamResponse:
        name = name_param(call.request, "name")
        return await self._object(call.request, live_key(name), "image/jpeg", "public, max-age=5", what=f"{name} live")

    async def _object(
        self, request: web.Request, key: str, content_type: str, cache: str, what: str = "media"
    ) -> web.StreamResponse:
        storage = self._recordings.storage
        path = storage.local_path(key)
        if path is None:
            url = storage.presigned_url(key, self._expires)
            assert url is not None
            raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})
        if not path.is_file():
            raise NotFound(f"there is no {what} picture or file yet")
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": cache})

    def endpoints(self) -> list[Endpoint]:
        one = "/api/recordings/{id}"
        return [
            Endpoint("GET", "/api/channels/{name}/recordings", self.listing, "A channel's recordings, newest first", ANYONE,
                     "recordings", response=RecordingListOut, errors=(404, 422),
                     query=(("before", "integer", "only recordings with a smaller id (next_cursor of the previous page)"),
                            ("limit", "integer", "1 to 100, default 20"))),
            Endpoint("PUT", "/api/channels/{name}/recording", self.control,
                     "Start (active: true) or stop recording the live stream", OWNER, "recordings",
                     body=RecordingControlIn, response=RecordingControlOut, errors=(401, 403, 404, 409, 422)),
            Endpoint("GET", "/api/channels/{name}/thumbnail.jpg", self.live_thumbnail,
                     "A picture of the live stream, refreshed every few seconds", ANYONE, "recordings",
                     errors=(404,), extra={"produces": "image/jpeg"}),
            Endpoint("GET", one, self.show, "One recording, with its playback URL once ready", ANYONE, "recordings",
                     response=RecordingOut, errors=(404,)),
            Endpoint("DELETE", one, self.delete, "Delete a recording and its files", OWNER, "recordings", status=204,
                     errors=(401, 403, 404, 409)),
            Endpoint("GET", one + "/media", self.media, "The MP4 (HTTP range requests work; a redirect with S3 storage)",
                     ANYONE, "recordings", errors=(404,), extra={"produces": "video/mp4"}),
            Endpoint("GET", one + "/thumbnail.jpg", self.thumbnail, "The recording's thumbnail", ANYONE, "recordings",
                     errors=(404,), extra={"produces": "image/jpeg"}),
        ]

