"""Rows and views turned into response models, in one place."""

from __future__ import annotations

from urllib.parse import quote

from signaling.accounts.service import Tokens
from signaling.api.schemas import ChannelOut, ChannelUrls, StreamKeyOut, TokensOut, UserOut
from signaling.channels.service import ChannelView, StreamKey
from signaling.db.models import User


def user_out(user: User, *, private: bool) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        bio=user.bio,
        role=user.role,  # type: ignore[arg-type]
        created_at=user.created_at,
        email=user.email if private else None,
    )


def tokens_out(tokens: Tokens) -> TokensOut:
    return TokensOut(access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in)


def channel_out(view: ChannelView, base_url: str, hls_viewers: int = 0, playback: str = "webrtc,hls") -> ChannelOut:
    channel = view.channel
    name = quote(channel.name)
    return ChannelOut(
        name=channel.name,
        title=channel.title,
        description=channel.description,
        tags=list(channel.tags or []),
        avatar_url=channel.avatar_url,
        is_live=channel.is_live,
        live_since=channel.live_since,
        viewer_count=channel.viewer_count + hls_viewers,
        hls_viewers=hls_viewers,
        followers=view.followers,
        following=view.following,
        notify=view.bell,  # type: ignore[arg-type]
        owner=channel.name,
        display_name=view.display_name,
        record_streams=channel.record_streams,
        recording_retention_days=channel.recording_retention_days,
        urls=ChannelUrls(
            watch=f"{base_url}/watch/{name}",
            whep=f"{base_url}/whep/{name}",
            hls=f"{base_url}/hls/{name}/index.m3u8",
            dash=f"{base_url}/dash/{name}/manifest.mpd",
            recordings=f"{base_url}/api/channels/{name}/recordings",
            thumbnail=f"{base_url}/api/channels/{name}/thumbnail.jpg",
        ),
        playback=playback.split(","),  # type: ignore[arg-type]  # checked by the setting's validator
    )


def stream_key_out(key: StreamKey, whip_url: str, rtmp_url: str = "", rtmps_url: str = "") -> StreamKeyOut:
    return StreamKeyOut(key=key.key, hint=key.hint, created_at=key.created_at, whip_url=whip_url,
                        rtmp_url=rtmp_url or None, rtmps_url=rtmps_url or None)
