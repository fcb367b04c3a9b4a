"""Request and response bodies. Requests are strict: unknown fields, wrong types and odd text are 422."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from signaling.accounts.names import username_problem
from signaling.auth.roles import ROLE_LABELS

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
# Characters that reorder or hide text (bidi overrides, zero-width) are refused in names and titles.
_INVISIBLE = frozenset("\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def _no_controls(value: str, *, multiline: bool) -> str:
    value = unicodedata.normalize("NFC", value)
    for char in value:
        if multiline and char in "\n\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") or char in _INVISIBLE:
            raise ValueError("must not contain control or invisible characters")
    return value


def _line(value: str) -> str:
    return _no_controls(value, multiline=False).strip()


def _text(value: str) -> str:
    return _no_controls(value, multiline=True).strip()


def _lower_ascii(value: object) -> object:
    return value.lower() if isinstance(value, str) and value.isascii() else value


def _username(value: str) -> str:
    problem = username_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _email(value: str) -> str:
    value = _line(value)
    if not EMAIL_RE.match(value):
        raise ValueError("not an email address")
    return value.lower()


def _password(value: str) -> str:
    # Any printable text is a fine password (NIST SP 800-63B); control characters are typing accidents.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValueError("must not contain control characters")
    return value


def _avatar(value: str) -> str:
    value = _line(value)
    if value and not re.match(r"^https?://[^\s<>\"']+$", value):
        raise ValueError("must be an http(s) URL")
    return value


def _tags(values: list[str]) -> list[str]:
    seen: list[str] = []
    for tag in values:
        if not TAG_RE.match(tag):
            raise ValueError("tags are 1 to 24 lowercase letters, digits and dashes")
        if tag not in seen:
            seen.append(tag)
    return seen


Username = Annotated[str, BeforeValidator(_lower_ascii), Field(min_length=1, max_length=64), AfterValidator(_username)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
Password = Annotated[str, Field(min_length=8, max_length=256), AfterValidator(_password)]
Line = Annotated[str, AfterValidator(_line)]
Text = Annotated[str, AfterValidator(_text)]
RoleLabel = Literal["viewer", "broadcaster", "moderator", "admin"]
assert set(RoleLabel.__args__) == set(ROLE_LABELS)  # type: ignore[attr-defined]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_max_length=10_000)


# Requests


class RegisterIn(Strict):
    username: Username
    email: Email
    password: Password


class LoginIn(Strict):
    username: Annotated[str, Field(min_length=1, max_length=254), BeforeValidator(_lower_ascii), AfterValidator(_line)] = (
        Field(description="Username or email address.")
    )
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RefreshIn(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class ProfileIn(Strict):
    display_name: Annotated[Line, Field(max_length=64)] | None = None
    bio: Annotated[Text, Field(max_length=500)] | None = None
    email: Email | None = None
    current_password: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    new_password: Password | None = None


class ChannelIn(Strict):
    title: Annotated[Line, Field(max_length=140)] | None = None
    description: Annotated[Text, Field(max_length=2000)] | None = None
    tags: Annotated[list[Annotated[str, BeforeValidator(_lower_ascii)]], Field(max_length=10), AfterValidator(_tags)] | None = None
    avatar_url: Annotated[str, Field(max_length=512), AfterValidator(_avatar)] | None = None
    record_streams: bool | None = Field(default=None, description="Record every stream of the channel from its start.")
    recording_retention_days: Annotated[int, Field(ge=0, le=3650)] | None = Field(
        default=None, description="Delete recordings older than this many days; 0 keeps them."
    )


class RoleIn(Strict):
    role: RoleLabel


# Responses


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    bio: str
    role: RoleLabel
    created_at: datetime
    email: str | None = Field(default=None, description="Only shown to the user and to admins.")


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class ChannelUrls(BaseModel):
    watch: str
    whep: str
    hls: str
    dash: str = Field(description="The same live ladder as low-latency DASH.")
    recordings: str
    thumbnail: str = Field(description="A picture of the live stream, refreshed every few seconds while live.")


class ChannelOut(BaseModel):
    name: str
    title: str
    description: str
    tags: list[str]
    avatar_url: str
    is_live: bool
    live_since: datetime | None
    viewer_count: int = Field(description="WebRTC and HLS viewers together.")
    hls_viewers: int = Field(0, description="Of them, the HLS viewers (players that said so in the last 25 s).")
    followers: int
    following: bool | None = Field(description="Whether the caller follows it; null when anonymous.")
    notify: Literal["all", "live", "none"] | None = Field(
        None, description="The caller's bell for it when following: all (go-live and reminders), live, or none.")
    owner: str
    display_name: str
    record_streams: bool
    recording_retention_days: int
    urls: ChannelUrls
    playback: list[Literal["webrtc", "hls", "dash"]] = Field(
        ["webrtc", "hls"], description="What the watch page plays, in order (the server's PLAYBACK_ORDER).")


class ScheduledIn(Strict):
    title: Annotated[str, Field(max_length=140)] = ""
    starts_at: datetime = Field(strict=False, description="ISO 8601 with a time zone, from now to a year ahead")
    expected_minutes: Annotated[int, Field(ge=1, le=1440)] = 60


class ScheduledOut(BaseModel):
    id: int
    channel: str
    display_name: str
    title: str
    starts_at: datetime
    ends_at: datetime
    expected_minutes: int
    stream_id: str | None = Field(description="The stream that went live in this entry's window, once one has")
    watch_url: str


class ScheduledListOut(BaseModel):
    items: list[ScheduledOut]


class StreamOut(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime | None = Field(description="null while live")
    duration: float = Field(description="Seconds (so far, while live)")
    peak_viewers: int = Field(description="The most viewers at once, WebRTC and HLS")
    video_codec: str
    audio_codec: str


class StreamListOut(BaseModel):
    items: list[StreamOut]


class ChattersOut(BaseModel):
    items: list[str] = Field(description="Usernames of the signed-in users in the chat now, sorted (at most 500)")
    count: int = Field(description="How many signed-in users are in the chat (anonymous readers are not listed)")


class LayerIn(Strict):
    layer: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^(auto|source|[0-9]{2,4}p)$",
                                description='"auto", "source", or a layer such as "360p"')]


class IceServerOut(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServersOut(BaseModel):
    ice_servers: list[IceServerOut] = Field(description="RTCConfiguration.iceServers")
    ice_transport_policy: str = Field(description='RTCConfiguration.iceTransportPolicy: "all" or "relay"')
    expires_in: int | None = Field(
        description="Seconds the TURN credentials may start a relay; ask again for a new connection after that")


class LayersOut(BaseModel):
    choices: list[str] = Field(description='"source" first, then the encoded layers, highest first')
    current: str = Field(description="The layer the viewer is on (or moving to, at its next keyframe)")
    auto: bool = Field(description="Whether the server picks the layer from the viewer's loss")


WEEK_SECONDS = 7 * 24 * 3600.0
RENDITION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,24}$")


def _renditions(value: dict[str, float]) -> dict[str, float]:
    if len(value) > 12:
        raise ValueError("at most 12 renditions")
    for name, seconds in value.items():
        if not RENDITION_RE.match(name):
            raise ValueError("a rendition's name is 1-24 letters, digits, '_', '.' or '-'")
        if not 0 <= seconds <= WEEK_SECONDS:
            raise ValueError("a rendition's seconds are between 0 and a week")
    return value


class WatchingIn(Strict):
    """A player's beacon, every 10 s while it plays and once when it stops (`navigator.sendBeacon`):
    it counts the player among an HLS stream's viewers, and tells how the viewing goes. The figures
    are the viewing's totals so far."""

    session: Annotated[str, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="A random id for this viewing (a new one for each HLS start)")]
    leaving: bool = Field(False, description="The player stops (or moves to WebRTC): count it no longer")
    transport: Literal["hls", "webrtc"] = Field("hls", description="How this viewing plays")
    whep_session: Annotated[str | None, Field(max_length=200, pattern=r"^([A-Za-z0-9_.%-]+\.)?[A-Za-z0-9_-]{16,64}$",
                                              description="WebRTC: the session's id (the last part of its Location)")] = None
    viewer: Annotated[str | None, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                        description="A random id the player keeps for the page (its viewings' viewer)")] = None
    watch_seconds: Annotated[float, Field(ge=0, le=WEEK_SECONDS, description="Seconds the picture moved")] = 0.0
    startup_ms: Annotated[int | None, Field(ge=0, le=600_000, description="From asking to the first frame")] = None
    stalls: Annotated[int, Field(ge=0, le=1_000_000, description="Times playback stopped to wait for data")] = 0
    stall_seconds: Annotated[float, Field(ge=0, le=WEEK_SECONDS, description="Seconds spent waiting")] = 0.0
    latency_ms: Annotated[int | None, Field(ge=0, le=600_000, description="Behind the broadcaster, now")] = None
    dropped_frames: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    renditions: Annotated[dict[str, float], AfterValidator(_renditions),
                          Field(description="Seconds shown per rendition (its height, as '720p')")] = {}

    @model_validator(mode="after")
    def _plausible(self) -> WatchingIn:
        # Counts the viewing's length allows: 240 frames a second, a stall every half second.
        seconds = self.watch_seconds + self.stall_seconds + 10
        if self.dropped_frames > 240 * seconds:
            raise ValueError("dropped_frames is more than the viewing could have shown")
        if self.stalls > 2 * seconds:
            raise ValueError("stalls is more than the viewing could have had")
        return self


class WatchingOut(BaseModel):
    hls_viewers: int = Field(description="The channel's HLS viewers now, this one included.")


class ChannelListOut(BaseModel):
    items: list[ChannelOut]
    next_cursor: str | None


class FollowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notify: Literal["all", "live", "none"] = Field(
        description="What to hear of: all (go-live and reminders of scheduled streams), live (go-live only), none.")


class FollowOut(BaseModel):
    channel: str
    following: bool
    followers: int
    notify: Literal["all", "live", "none"] | None = None


class StreamKeyOut(BaseModel):
    key: str | None = Field(description="The key itself: present only right after it was created.")
    hint: str
    created_at: datetime | None
    whip_url: str
    rtmp_url: str | None = Field(
        default=None, description="The RTMP server for encoders (the key is the stream name); null: RTMP is off."
    )
    rtmps_url: str | None = Field(default=None, description="The same over TLS; null: RTMPS is off.")


class UserListOut(BaseModel):
    items: list[UserOut]


class ProviderOut(BaseModel):
    name: str
    display_name: str
    login_url: str


class ProviderListOut(BaseModel):
    items: list[ProviderOut]


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, object]] | None = None


# --- chat ---


class ChatUserOut(BaseModel):
    username: str
    display_name: str
    badges: list[str] = Field(description="broadcaster or moderator, when the author is one")


class ChatMessageOut(BaseModel):
    type: Literal["message"]
    id: int = Field(description="Orders the conversation: a later message has a larger id.")
    user: ChatUserOut
    text: str
    at: str


class ChatHistoryOut(BaseModel):
    messages: list[ChatMessageOut] = Field(description="Oldest first.")
    next_before: int | None = Field(description="Pass as `before` for older messages; null at the start.")


class ChatSettingsIn(Strict):
    slow_mode: int | None = Field(default=None, description="Seconds between a user's posts; 0 turns it off.")
    followers_only: bool | None = None


class ChatSettingsOut(BaseModel):
    slow_mode: int
    followers_only: bool
    max_length: int


class BanIn(Strict):
    seconds: int | None = Field(default=None, description="A time-out of this many seconds; omit or null to ban.")
    reason: Line = Field(default="", max_length=200)


class BanOut(BaseModel):
    username: str
    until: datetime | None = Field(description="When a time-out ends; null for a ban.")
    reason: str


class BanListOut(BaseModel):
    items: list[BanOut]


class ModeratorListOut(BaseModel):
    items: list[str]


class RecordingOut(BaseModel):
    id: int
    channel: str
    stream_id: str
    state: Literal["recording", "processing", "ready", "failed"]
    title: str
    started_at: datetime
    ended_at: datetime | None
    duration: float = Field(description="Seconds.")
    size: int = Field(description="Bytes of the MP4.")
    video_codec: str
    audio_codec: str
    width: int
    height: int
    playback_url: str | None = Field(description="The MP4 (HTTP ranges work); null until ready.")
    thumbnail_url: str | None
    page_url: str
    error: str = ""


class RecordingListOut(BaseModel):
    items: list[RecordingOut]
    next_cursor: str | None


class RecordingControlIn(Strict):
    active: bool = Field(description="true starts recording the live stream now, false stops it.")


class RecordingControlOut(BaseModel):
    channel: str
    active: bool
    recording: RecordingOut | None


class NodeLoadOut(BaseModel):
    cpu: float = Field(description="CPU seconds per second of the node's process, every thread (1.0: one core).")
    loop: float = Field(description="The same, of its event loop's thread alone: forwarding stalls as it nears 1.0.")
    cores: int = Field(description="Cores the node's process may use.")
    viewers: int = Field(description="Connected WebRTC viewers.")
    pending: int = Field(description="Sessions offered but not connected yet.")
    pending_viewers: int = Field(description="...of them viewers' (each holds a viewer place).")
    publishers: int
    packets_out_per_s: float
    relays: int = Field(description="Streams relayed to the node from other nodes.")
    ladders: int = Field(description="HLS ladders encoding.")


class NodeStreamOut(BaseModel):
    channel: str
    stream: str
    viewers: int = Field(description="Its viewers on this node.")
    relay_from: str = Field(description="The node it is relayed from; empty where it is published (its origin).")


class NodeOut(BaseModel):
    id: str
    http_url: str = Field(description="Where other Tallylight processes reach the node over HTTP.")
    media_addresses: list[str] = Field(description="The addresses its ICE candidates announce.")
    max_viewers: int
    started_at: datetime
    last_seen_ms: int = Field(description="Milliseconds since the registry last heard from the node, at most 3,000.")
    draining: bool = Field(description="It takes no new sessions (it is shutting down).")
    version: str
    load: NodeLoadOut
    streams: list[NodeStreamOut]


class ClusterOut(BaseModel):
    nodes: list[NodeOut] = Field(description="The live nodes: those heard from within the last 3 seconds, by id.")


class NotificationOut(BaseModel):
    id: int
    kind: Literal["live", "reminder"]
    channel: str | None
    title: str
    body: str
    url: str = Field(description="Where it leads, relative to the site (the channel's watch page).")
    created_at: datetime
    read: bool


class NotificationListOut(BaseModel):
    items: list[NotificationOut]
    unread: int
    next_before: int | None = Field(description="Pass as `before` for older ones; null at the end.")


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(None, max_length=200, description="These; leave out for all.")


class UnreadOut(BaseModel):
    unread: int


class NotificationSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    in_app: bool | None = None
    push: bool | None = None
    email: bool | None = None


class NotificationSettingsOut(BaseModel):
    in_app: bool = Field(description="The bell in the site's navigation.")
    push: bool = Field(description="Browser push, on the devices where you allowed it.")
    email: bool = Field(description="Email, to a verified address.")
    email_verified: bool = Field(False, description="Whether your address is verified (email goes only to verified ones).")
    email_available: bool = Field(False, description="Whether this site sends email at all.")


class VerifySentOut(BaseModel):
    sent: bool


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=512)
    events: list[Literal["live", "ended", "follow"]] = Field(min_length=1, max_length=3)
    format: Literal["json", "discord"] = "json"


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    format: str
    created_at: datetime
    last_status: int = Field(description="The HTTP status of the last delivery; 0 before the first, or when none came.")
    last_error: str
    last_attempt_at: datetime | None
    secret: str | None = Field(None, description="The signing secret: only in the answer that creates the webhook.")


class WebhookListOut(BaseModel):
    items: list[WebhookOut]


class PushKeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p256dh: str = Field(max_length=128)
    auth: str = Field(max_length=64)


class PushSubscriptionIn(BaseModel):
    """A browser's PushSubscription as its toJSON() gives it."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(max_length=1024)
    keys: PushKeysIn
    expirationTime: int | None = Field(None, description="Ignored: a subscription is dropped when its push service says it is gone.")


class PushEndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(max_length=1024)


class PushSubscribedOut(BaseModel):
    subscribed: bool
    devices: int = Field(description="Your browsers that receive push.")


class PushKeyOut(BaseModel):
    public_key: str = Field(description="The VAPID public key (base64url, uncompressed P-256 point): PushManager.subscribe's applicationServerKey.")


class AudienceMinuteOut(BaseModel):
    minute: datetime
    webrtc: int = Field(description="Peak WebRTC viewers in the minute.")
    hls: int = Field(description="Peak HLS viewers in the minute.")


class WatchTimeOut(BaseModel):
    total: float = Field(description="Seconds watched, all viewers together.")
    webrtc: float
    hls: float


class ViewingOut(BaseModel):
    sessions: dict[str, int] = Field(description="Viewing sessions started in the period, by transport (webrtc, hls).")
    unique_viewers: int = Field(description="Distinct viewers: signed-in users, and anonymous players by their page's random id.")
    average_session_seconds: float
    startup_ms: dict[str, float | None] = Field(
        description="Average time from asking to the first frame, by transport (players that tell it).")
    rebuffering_ratio: float | None = Field(description="Share of viewing time spent waiting for data.")
    latency_ms: dict[str, float | None] = Field(
        description="Average delay behind the broadcaster, by transport, as the players measured it.")
    dropped_frames: int
    renditions: dict[str, float] = Field(description="Share of viewing time per rendition (by picture height).")


class AnalyticsOut(BaseModel):
    channel: str
    days: int = Field(description="The period: 7, 28 or 90 days up to now; 0 for one stream's report.")
    since: datetime
    stream: str | None = Field(None, description="One stream's report: its id (`since` is its start).")
    until: datetime | None = Field(None, description="One stream's report: its end (null while it is live).")
    streams: int = Field(description="Streams live at some time in the period.")
    live_seconds: float
    peak_concurrent: int = Field(description="The largest minute's viewers (WebRTC and HLS peaks added).")
    average_concurrent: float = Field(description="Seconds watched over seconds live.")
    watch_seconds: WatchTimeOut
    average_watch_per_live_minute: float = Field(description="Seconds watched per minute live.")
    chat_messages: int
    chatters: int
    new_followers: int
    viewing: ViewingOut
    resolution: Literal["minute", "day"] = Field(
        description="What each point of `minutes` spans: a minute (7 days), or a UTC day (28 and 90 days).")
    minutes: list[AudienceMinuteOut] = Field(
        description="Concurrent viewers (each point's peak) per minute live, or per day, oldest first.")


class IngestSampleOut(BaseModel):
    at: datetime
    video_kbps: float
    audio_kbps: float
    fps: float = Field(description="Video frames per second arriving.")
    keyframe_interval: float = Field(description="Seconds between keyframes (0: not known yet).")
    loss_percent: float = Field(description="Packets found missing on the way, before any repair.")
    viewers: int


class IngestOut(BaseModel):
    channel: str
    live: bool = Field(description="Samples are arriving (one every 2 s while the stream is live).")
    samples: list[IngestSampleOut] = Field(description="The last five minutes, oldest first.")
    warnings: list[str] = Field(description="What looks wrong in the last 10 s, in plain words.")


class BusyChannelOut(BaseModel):
    channel: str
    watch_seconds: float
    peak_concurrent: int


class SiteAnalyticsOut(AnalyticsOut):
    busiest: list[BusyChannelOut] = Field(description="The channels watched most in the period (up to 10).")
