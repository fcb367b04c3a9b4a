"""Channels: one per user, the directory, settings, follows and stream keys."""

from __future__ import annotations

import pytest

from support import Api


async def test_every_user_owns_a_channel_named_after_them(api: Api) -> None:
    name, _ = await api.user()
    status, channel, _ = await api.call("GET", f"/api/channels/{name}")
    assert status == 200
    assert channel["name"] == channel["owner"] == name
    assert channel["is_live"] is False and channel["viewer_count"] == 0 and channel["followers"] == 0
    assert channel["following"] is None  # anonymous
    assert channel["urls"] == {
        "watch": f"http://tally.test/watch/{name}",
        "whep": f"http://tally.test/whep/{name}",
        "hls": f"http://tally.test/hls/{name}/index.m3u8",
        "dash": f"http://tally.test/dash/{name}/manifest.mpd",
        "recordings": f"http://tally.test/api/channels/{name}/recordings",
        "thumbnail": f"http://tally.test/api/channels/{name}/thumbnail.jpg",
    }
    assert channel["playback"] == ["webrtc", "hls"]  # PLAYBACK_ORDER: what the watch page plays, in order
    assert channel["record_streams"] is False and channel["recording_retention_days"] == 0
    assert (await api.call("GET", "/api/channels/nobody_here"))[0] == 404


def test_the_playback_order_is_checked() -> None:
    from pydantic import ValidationError

    from signaling.settings import Settings

    assert Settings(playback_order=" DASH , webrtc").playback_order == "dash,webrtc"
    for bad in ("", "webrtc,webrtc", "rtmp", "hls,,flv"):
        with pytest.raises(ValidationError, match="webrtc, hls and dash"):
            Settings(playback_order=bad)


async def test_owner_edits_channel_others_cannot_admin_can(api: Api) -> None:
    _, admin = await api.user("admin")
    owner, token = await api.user()
    _, stranger = await api.user()
    change = {"title": "  Speedrunning  ", "description": "Any%\nno glitches", "tags": ["Games", "speedrun", "games"],
              "avatar_url": "https://cdn.example.com/a.png"}
    status, channel, _ = await api.call("PATCH", f"/api/channels/{owner}", change, token)
    assert status == 200
    assert channel["title"] == "Speedrunning" and channel["tags"] == ["games", "speedrun"]
    assert channel["description"] == "Any%\nno glitches"

    status, _, _ = await api.call("PATCH", f"/api/channels/{owner}", {"title": "mine now"}, stranger)
    assert status == 403
    status, channel, _ = await api.call("PATCH", f"/api/channels/{owner}", {"title": "moderated"}, admin)
    assert status == 200 and channel["title"] == "moderated"


async def test_directory_filters_searches_and_pages(api: Api) -> None:
    names = [(await api.user())[0] for _ in range(5)]
    async with api.services.db.session() as session:
        from sqlalchemy import update

        from signaling.db.models import Channel

        await session.execute(update(Channel).where(Channel.name == names[2]).values(is_live=True, viewer_count=7))
    status, page, _ = await api.call("GET", "/api/channels?live=true")
    assert status == 200 and [c["name"] for c in page["items"]] == [names[2]]
    status, page, _ = await api.call("GET", "/api/channels?limit=2")
    assert page["items"][0]["name"] == names[2]  # live first
    seen = [c["name"] for c in page["items"]]
    while page["next_cursor"]:
        status, page, _ = await api.call("GET", f"/api/channels?limit=2&cursor={page['next_cursor']}")
        seen += [c["name"] for c in page["items"]]
    assert sorted(seen) == sorted(names)
    status, page, _ = await api.call("GET", f"/api/channels?q={names[3][-4:]}")
    assert [c["name"] for c in page["items"]] == [names[3]]
    status, page, _ = await api.call("GET", "/api/channels?q=%25")  # a literal %, not a wildcard
    assert status == 200 and page["items"] == []


async def test_follow_unfollow_and_following_list(api: Api) -> None:
    star, star_token = await api.user()
    fan, fan_token = await api.user()
    status, body, _ = await api.call("PUT", f"/api/channels/{star}/follow", token=fan_token)
    assert status == 200 and body == {"channel": star, "following": True, "followers": 1, "notify": "all"}
    status, body, _ = await api.call("PUT", f"/api/channels/{star}/follow", token=fan_token)  # idempotent
    assert body["followers"] == 1

    status, channel, _ = await api.call("GET", f"/api/channels/{star}", token=fan_token)
    assert channel["following"] is True and channel["followers"] == 1
    status, mine, _ = await api.call("GET", "/api/me/following", token=fan_token)
    assert [c["name"] for c in mine["items"]] == [star]

    status, body, _ = await api.call("PUT", f"/api/channels/{star}/follow", token=star_token)
    assert status == 422  # not your own channel
    status, body, _ = await api.call("DELETE", f"/api/channels/{star}/follow", token=fan_token)
    assert status == 200 and body == {"channel": star, "following": False, "followers": 0, "notify": None}
    status, mine, _ = await api.call("GET", "/api/me/following", token=fan_token)
    assert mine["items"] == []
    assert (await api.call("PUT", "/api/channels/ghost_channel/follow", token=fan_token))[0] == 404


async def test_stream_key_is_shown_once_stored_hashed_and_rotates(api: Api) -> None:
    name, token = await api.user()
    status, first, headers = await api.call("GET", "/api/me/stream-key", token=token)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    key = first["key"]
    assert key.startswith("tlsk_") and len(key) > 40 and first["hint"].endswith(key[-4:])
    assert first["whip_url"] == f"http://tally.test/whip/{name}" and first["rtmp_url"] is None  # RTMP is off

    status, again, _ = await api.call("GET", "/api/me/stream-key", token=token)
    assert again["key"] is None and again["hint"] == first["hint"]

    async with api.services.db.session() as session:
        from sqlalchemy import select

        from signaling.db.models import Channel

        stored = await session.scalar(select(Channel.stream_key_hash).where(Channel.name == name))
    assert stored is not None and key not in stored  # only a digest is kept

    channel = await api.services.channels.channel_for_stream_key(key)
    assert channel is not None and channel.name == name

    status, rotated, _ = await api.call("POST", "/api/me/stream-key", token=token)
    assert status == 201 and rotated["key"] != key
    assert await api.services.channels.channel_for_stream_key(key) is None
    assert (await api.services.channels.channel_for_stream_key(rotated["key"])).name == name  # type: ignore[union-attr]
    assert await api.services.channels.channel_for_stream_key("tlsk_" + "A" * 43) is None


async def test_stream_keys_are_rate_limited(api: Api) -> None:
    _, token = await api.user()
    statuses = [(await api.call("POST", "/api/me/stream-key", token=token))[0] for _ in range(31)]
    assert statuses[:30] == [201] * 30
    status, body, headers = await api.call("POST", "/api/me/stream-key", token=token)
    assert status == 429 and int(headers["Retry-After"]) > 0
    api.clock.advance(120)  # 30 an hour: one more every two minutes
    assert (await api.call("POST", "/api/me/stream-key", token=token))[0] == 201
    assert (await api.call("POST", "/api/me/stream-key", token=token))[0] == 429
