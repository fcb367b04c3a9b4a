"""Who may publish: the one check WHIP and RTMP share, from a stream key to its channel's owner."""

from __future__ import annotations

from signaling.accounts.service import AccountService
from signaling.auth import secrets
from signaling.auth.roles import Principal, Role
from signaling.channels.service import ChannelService
from signaling.db.models import Channel
from signaling.errors import Forbidden, Unauthorized


async def stream_key_owner(channels: ChannelService, accounts: AccountService, key: str) -> tuple[Channel, Principal]:
    """The channel `key` publishes to and its owner, who must be a broadcaster; 401 or 403 otherwise."""
    channel = await channels.channel_for_stream_key(key) if key.startswith(secrets.STREAM_KEY_PREFIX) else None
    if channel is None:
        raise Unauthorized("the stream key is not valid (it may have been rotated)")
    user = await accounts.get_user(channel.owner_id)
    owner = Principal(user_id=user.id, username=user.username, role=Role.parse(user.role), session_id="stream-key")
    if not owner.at_least(Role.BROADCASTER):
        raise Forbidden("publishing needs the broadcaster role")
    return channel, owner
