"""The composition root: builds the object graph for one signaling process from its settings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from bus import Bus, is_shared, open_bus
from cluster import Announcer, NodeRegistry, RegistryError, open_origin_locks, open_registry
from recorder.hls.ladder import Rendition, parse_ladder
from recorder.hls.transcoder import LadderOptions
from recorder.live_thumbnails import LiveThumbnails
from recorder.recording import RecordingOptions
from recorder.storage import S3Options, open_storage
from signaling.accounts.service import AccountService
from signaling.api.auth_api import AuthApi
from signaling.api.channels_api import ChannelsApi
from signaling.api.cluster_api import ClusterApi
from signaling.api.chat_api import ChatApi
from signaling.api.dash_api import DashApi
from signaling.api.hls_api import HlsApi
from signaling.api.ladder_requests import LadderRequests
from signaling.api.client_address import client_address
from signaling.api.endpoint import MAX_BODY, Authenticator, Endpoint, route
from signaling.api.me_api import MeApi
from signaling.analytics.audience import AudienceRollup
from signaling.analytics.hls_requests import HlsRequestViewers
from signaling.analytics.ingest_health import IngestCollector, IngestHistory, IngestSampler
from signaling.analytics.node_viewings import NodeViewings
from signaling.analytics.viewing import ViewingBook, ViewingCollector
from signaling.analytics.report import ChannelAnalytics
from signaling.api.analytics_api import AnalyticsApi
from signaling.api.metrics import HttpMetrics, register_spool_metrics
from signaling.api.request_ids import answer_with_request_id, request_ids
from signaling.api.oidc_api import OidcApi
from signaling.api.openapi import build_openapi
from signaling.api.ops_api import OpsApi
from signaling.api.problems import problems_middleware
from signaling.api.recordings_api import RecordingsApi
from signaling.api.sfu_metrics import register_chat_metrics, register_rtmp_metrics, register_sfu_metrics
from signaling.api.users_api import UsersApi
from signaling.api.webrtc_api import WebRtcApi, cors_middleware
from signaling.auth.access_tokens import AccessTokens, load_or_create_secret
from signaling.auth.oidc import FlowSealer, OidcProviders
from signaling.auth.passwords import Passwords
from signaling.auth.rate_limit import RateLimiter, open_rate_limiter
from signaling.auth.sealing import Sealer, sealer_for
from signaling.auth.roles import Principal, Role
from signaling.internal_surface import internal_only
from signaling.channels.service import ChannelService
from signaling.cluster.directory import FRESH as DIRECTORY_FRESH, NodeDirectory
from signaling.cluster.origin_keeper import OriginKeeper
from signaling.cluster.node_record import AnnounceOnChange, NodeDescriber
from signaling.media.cluster import ClusterPlane
from signaling.media.control import NodeControl
from signaling.media.drain import hand_over
from signaling.media.claiming import ClaimingPlane
from signaling.media.plane import MediaPlane
from signaling.media.relays import Relays
from signaling.media.rtmp_gate import RtmpGate
from signaling.chat.hub import ChatHub
from signaling.chat.links import DataChannelLink
from signaling.chat.service import ChatRules, ChatService
from signaling.db.database import Database
from signaling.db.sealed_columns import SealedColumns
from signaling.migrations.runner import upgrade
from signaling.settings import OidcProviderSettings, Settings
from signaling.shutdown_steps import ShutdownSteps
from signaling.hls.relay import HlsRelay
from signaling.hls.service import HlsService
from signaling.recordings.adoption import RecordingAdopter
from signaling.recordings.service import RecordingService
from signaling.api.schedule_api import ScheduleApi
from signaling.api.notifications_api import NotificationsApi
from signaling.notifications.parts import notification_parts
from signaling.notifications.service import NotificationService
from signaling.notifications.worker import Worker
from signaling.chat.presence import open_chat_presence
from signaling.schedule.service import ScheduleService
from signaling.streams.hls_audience import open_hls_audience
from signaling.streams.reaper import StreamReaper
from signaling.streams.service import StreamService
from sfu import aiortc_internals
from sfu.node import NodeSettings, SfuNode
from sfu.rtmp.session import Limits as RtmpLimits, RtmpServer
from sfu.session import Session
from signaling.auth.turn_credentials import IceServers
from signaling.web_pages import add_web_routes, not_found_pages, security_headers

log = logging.getLogger(__name__)


class Api(Protocol):
    """A group of handlers that declares its endpoints."""

    def endpoints(self) -> list[Endpoint]: ...


@dataclass(frozen=True, slots=True)
class Services:
    """What one process holds; tests reach in through `app[SERVICES]`."""

    settings: Settings
    db: Database
    bus: Bus
    limiter: RateLimiter
    accounts: AccountService
    channels: ChannelService
    oidc: OidcProviders
    metrics: HttpMetrics
    endpoints: list[Endpoint]
    node: SfuNode
    streams: StreamService
    chat: ChatService
    hub: ChatHub
    recordings: RecordingService
    hls: HlsService
    notifications: NotificationService
    worker: Worker | None
    audience: AudienceRollup
    viewing: ViewingBook
    node_viewings: NodeViewings | None
    hls_requests: HlsRequestViewers


SERVICES = web.AppKey("services", Services)


class PortTaken(Exception):
    """A port the settings name cannot be listened on (the words say which and why)."""


async def _start_rtmp(rtmp: RtmpServer, settings: Settings) -> bool:
    """RTMP and RTMPS listeners. The default RTMP port may be taken by another program on a laptop:
    then RTMP stays off, said in the log (False); a port the operator chose must be had."""
    listening = True
    if settings.rtmp_port:
        try:
            await rtmp.start(settings.host, settings.rtmp_port, reuse_port=settings.rtmp_reuse_port)
            log.info("RTMP ingest on rtmp://%s:%d/live", settings.host, settings.rtmp_port)
        except OSError as exc:
            if "rtmp_port" in settings.model_fields_set:
                raise PortTaken(f"RTMP_PORT {settings.rtmp_port} cannot be listened on: {exc.strerror}") from None
            log.warning("RTMP ingest is off: port %d cannot be had (%s); set RTMP_PORT", settings.rtmp_port, exc)
            listening = False
    if settings.rtmps_port:
        try:
            await rtmp.start(settings.host, settings.rtmps_port, settings.rtmps_tls(), settings.rtmp_reuse_port)
        except OSError as exc:
            raise PortTaken(f"RTMPS_PORT {settings.rtmps_port} cannot be listened on: {exc.strerror}") from None
        log.info("RTMPS ingest on rtmps://%s:%d/live", settings.host, settings.rtmps_port)
    return listening


async def _nothing() -> None:
    return None


def _version() -> str:
    try:
        return version("tallylight")
    except PackageNotFoundError:
        return "0.0.0"


async def _others_open(registry: NodeRegistry, node_id: str) -> bool:
    """Does another live node take sessions (so this one has somewhere to hand its own over to)?"""
    try:
        async with asyncio.timeout(2):
            return any(n.record.id != node_id and not n.record.draining for n in await registry.live())
    except (RegistryError, OSError, TimeoutError):
        return False


def _media_origins(settings: Settings) -> tuple[str, ...]:
    """Where browsers fetch recordings from besides this service: a self-hosted S3 API endpoint."""
    if not settings.resolved_storage_url.startswith("s3://") or not settings.s3_endpoint_url:
        return ()
    endpoint = urlsplit(settings.s3_endpoint_url)
    return (f"{endpoint.scheme}://{endpoint.netloc}",)


def _ice_servers(settings: Settings, sealer: Sealer) -> IceServers:
    """The ICE servers clients are told about, with TURN_SECRET and static credentials opened (they may
    be given sealed)."""
    static = [server.model_copy(update={"credential": sealer.open_setting(server.credential, f"the credential of "
                                                                          f"ICE_SERVERS' {server.urls}")})
              if server.credential else server for server in settings.ice_servers]
    return IceServers(static, settings.turn_urls, sealer.open_setting(settings.turn_secret, "TURN_SECRET"),
                      settings.turn_credential_ttl)


def _opened_providers(settings: Settings, sealer: Sealer) -> dict[str, OidcProviderSettings]:
    """OIDC_PROVIDERS with each client secret opened (it may be given sealed)."""
    return {name: provider.model_copy(update={"client_secret": sealer.open_setting(
                provider.client_secret, f"the client_secret of OIDC_PROVIDERS' {name}")})
            for name, provider in settings.oidc_providers.items()}


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> web.Application:
    """The aiohttp application for `settings`.

    Objects are built here; none of them connects before first use. Startup applies migrations,
    cleanup closes every resource (in reverse order of need).
    """
    # Secrets first: keys that do not open the sealed settings stop it before anything is opened.
    sealer = sealer_for(settings)  # (SecretsKeysError; also processes sharing a bus without SECRETS_KEYS)
    providers = _opened_providers(settings, sealer)
    secret = load_or_create_secret(sealer.open_setting(settings.jwt_secret, "JWT_SECRET"), settings.data_dir)
    metrics = HttpMetrics(CollectorRegistry())
    surface = [] if settings.public_http else [internal_only()]  # a node behind doors: what they ask of it
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_ids, metrics.middleware, cors_middleware, not_found_pages(settings.web_root, _media_origins(settings)),
                     problems_middleware, security_headers, *surface],
    )
    app[MAX_BODY] = settings.max_body_bytes
    app.on_response_prepare.append(answer_with_request_id)
    db = Database(settings.resolved_database_url)
    bus = open_bus(settings.bus_url)
    limiter = open_rate_limiter(settings.bus_url, clock)
    oidc = OidcProviders(providers, settings.resolved_public_url)
    accounts = AccountService(
        db,
        Passwords(settings.argon2_time_cost, settings.argon2_memory_cost),
        AccessTokens(secret, settings.access_token_ttl, clock),
        settings.refresh_token_ttl,
        Role.parse(settings.default_role),
        clock,
    )
    channels = ChannelService(db, clock)
    notifications = notification_parts(settings, db, bus, secret, sealer, clock)
    worker = notifications.worker(clock, name=f"{settings.resolved_node_id}:worker") if settings.resolved_run_worker else None
    streams = StreamService(db, bus, settings.resolved_node_id, clock, open_hls_audience(settings.bus_url, clock),
                            notifications.rules)
    audience = AudienceRollup(db, streams.hls_audience, clock)
    viewing = ViewingBook(db, settings.viewer_session_retention_days, clock)
    hls_requests = HlsRequestViewers(viewing, streams.hls_audience, db, clock)
    if settings.media:  # a stream's origin rolls its audience up
        streams.watchers.append(audience)
        streams.on_viewers = audience.observe
    ice = aiortc_internals.IcePlan(
        tuple(settings.webrtc_host_addresses), tuple(settings.webrtc_announced_addresses), settings.udp_port_range
    )
    node = SfuNode(
        NodeSettings(
            ice=ice,
            max_viewers=settings.max_viewers_per_node,
            max_relays=settings.max_relays_per_node,
            relay_linger=settings.relay_linger_seconds,
            max_pending=settings.max_pending_sessions,
            max_pending_per_client=settings.max_pending_per_client,
            connect_timeout=settings.session_connect_timeout,
            max_publish_bitrate=settings.max_publish_bitrate,
            publisher_timeout=settings.publisher_timeout,
            publisher_connect_timeout=settings.publisher_connect_timeout,
        ),
        streams,
    )
    register_sfu_metrics(metrics.registry, node)
    metrics.registry.register(ViewingCollector(viewing))
    node_viewings = NodeViewings(node, viewing, clock) if settings.media else None
    ingest_sampler = IngestSampler(node, bus, clock) if settings.media else None
    if ingest_sampler is not None:
        metrics.registry.register(IngestCollector(ingest_sampler))
    ingest_history = IngestHistory(bus)
    if settings.media:  # a front door writes no recordings
        register_spool_metrics(metrics.registry, settings.resolved_spool_dir)
    chat = ChatService(
        db, bus, limiter, ChatRules(max_length=settings.chat_max_length, posts_per_period=settings.chat_posts_per_10s), clock
    )
    hub = ChatHub(chat, accounts, bus, clock, open_chat_presence(settings.bus_url, clock))
    register_chat_metrics(metrics.registry, hub)
    storage = open_storage(
        settings.resolved_storage_url,
        S3Options(settings.s3_endpoint_url or None, settings.s3_region or None, settings.s3_path_style),
    )
    recordings = RecordingService(
        db,
        storage,
        node.sinks,
        settings.resolved_spool_dir,
        settings.resolved_node_id,
        RecordingOptions(
            keyframe_interval=settings.recording_keyframe_interval, fragment=settings.recording_fragment_seconds
        ),
        LiveThumbnails(node.sinks, storage, settings.live_thumbnail_interval),
        clock,
    )
    streams.watchers.append(recordings)
    hls = HlsService(
        node.sinks,
        parse_ladder(settings.hls_ladder),
        LadderOptions(segment=settings.hls_segment_seconds, part=settings.hls_part_seconds,
                      threads=settings.hls_encoder_threads),
        settings.hls_window_segments,
        storage if settings.hls_persist else None,
        settings.hls_linger_seconds,
        always=settings.hls_persist,
        idle=settings.hls_idle_seconds,
        max_ladders=settings.hls_max_ladders,
    )
    streams.watchers.append(hls)
    registry = open_registry(settings.bus_url)
    announcer = Announcer(registry, NodeDescriber(
        settings.resolved_node_id, settings.resolved_internal_url, tuple(announced for _, announced in ice.pairs()),
        node, lambda: hls.running, hls.channels, _version(),
    ))
    if settings.media and is_shared(settings.bus_url):  # (a front door announces nothing, and records nothing)
        recordings.announced = announcer.announced
    streams.watchers.append(AnnounceOnChange(announcer))
    directory = NodeDirectory(registry)
    reaper = StreamReaper(streams, registry, settings.resolved_node_id)
    adopter = RecordingAdopter(recordings, registry, settings.recording_adopt_after)
    relay = HlsRelay(directory, settings.resolved_node_id)
    ladders = LadderRequests(hls, relay if is_shared(settings.bus_url) else None)
    origins = open_origin_locks(settings.bus_url)
    local = ClaimingPlane(node, origins, settings.resolved_node_id)
    keeper = OriginKeeper(origins, settings.resolved_node_id, local.held_here,
                          lambda channel: node.end_room(channel, "its channel went live on another node"))
    streams.watchers.append(keeper)

    async def claimed_elsewhere(channel: str) -> bool:
        try:
            owner = await origins.owner(channel)
        except RegistryError:
            return False
        return owner is not None and owner != settings.resolved_node_id

    streams.claimed_elsewhere = claimed_elsewhere
    relays = Relays(node, bus, settings.resolved_node_id, origins, announcer.poke)
    control = NodeControl(local, bus, settings.resolved_node_id, relays, announcer.announce_now)
    # Without media, this process is a front door: its node stays idle and sessions go to the cluster's nodes.
    media: MediaPlane = local if settings.media else ClusterPlane(bus, directory, origins, node.settings.takeover_after)
    rtmp_gate = RtmpGate(node, local, channels, accounts, limiter, settings.rate_whip_per_minute)
    rtmp = RtmpServer(rtmp_gate.authorize, RtmpLimits(proxy_from=settings.rtmp_proxy_networks)) \
        if settings.media and (settings.rtmp_port or settings.rtmps_port) else None
    if rtmp is not None:
        register_rtmp_metrics(metrics.registry, rtmp, node)

    def offer_layer(room: str, rendition: Rendition, data: bytes, rtp_timestamp: int, keyframe: bool) -> None:
        live = hls.live(room)
        if live is not None:
            node.layer_frame(room, rendition.name, rendition.height, data, rtp_timestamp, keyframe,
                             live.request_layer_keyframe)

    hls.on_encoded = offer_layer  # the ladder's renditions are WebRTC layers too: one encode for every audience
    hls.on_stopped = node.drop_layers

    def on_data_channel(session: Session, channel: Any) -> None:
        if channel.label != "chat":
            channel.close()
            return
        principal = session.tag if isinstance(session.tag, Principal) else None
        link = DataChannelLink(channel)
        hub.adopt(session.id, link, session.room, principal, link.frames())

    node.on_data_channel = on_data_channel

    me_api = MeApi(accounts, channels, limiter, settings)
    endpoints: list[Endpoint] = []
    apis: list[Api] = [
        AuthApi(accounts, limiter, settings),
        OidcApi(oidc, FlowSealer(secret, clock), accounts, secure=settings.resolved_public_url.startswith("https")),
        me_api,
        ChannelsApi(channels, streams, limiter, settings, viewing, hls_requests),
        UsersApi(accounts),
        WebRtcApi(media, channels, accounts, limiter, settings,
                  _ice_servers(settings, sealer)),
        ChatApi(chat, hub, accounts),
        RecordingsApi(recordings, settings),
        AnalyticsApi(ChannelAnalytics(db, clock), ingest_history, clock),
        HlsApi(ladders, metrics.registry,
               seen=lambda name, request: hls_requests.request(
                   name, client_address(request, settings.trust_forwarded_for), request.headers.get("User-Agent", ""))),
        DashApi(ladders, metrics.registry, settings.dash_target_latency_seconds, settings.public_url),
        ScheduleApi(ScheduleService(db, clock, notifications.rules), settings),
        NotificationsApi(notifications.service, notifications.webhooks, notifications.push, notifications.email),
        ClusterApi(registry),
        OpsApi(db, bus, metrics, lambda: build_openapi(endpoints, _version())),
    ]
    for api in apis:
        endpoints.extend(api.endpoints())
    authenticator = Authenticator(accounts)
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, route(endpoint, authenticator))
    add_web_routes(app, settings.web_root, _media_origins(settings), channels.exists)
    app[SERVICES] = Services(
        settings, db, bus, limiter, accounts, channels, oidc, metrics, endpoints, node, streams, chat, hub, recordings,
        hls, notifications.service, worker, audience, viewing, node_viewings, hls_requests,
    )

    steps = ShutdownSteps()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        try:
            if settings.auto_migrate:
                await upgrade(db.engine)
            await SealedColumns(db, sealer).start()  # other keys than the database's stop the start here
            if settings.media:
                # First make sure no live process is this node: its recovery below would end that
                # process's streams and recordings.
                await announcer.claim()
                try:
                    recovered = await streams.recover()
                except Exception as exc:  # the database may be down at start; /readyz says so
                    log.warning("could not end streams left open by an earlier run: %s", exc)
                else:
                    if recovered:
                        log.warning("ended %d streams this node left open when it last stopped", recovered)
            await node.start()
            await hub.start()
            await recordings.start()
            if worker is not None:
                worker.start()
            if rtmp is not None and not await _start_rtmp(rtmp, settings) and not settings.rtmp_public_url:
                me_api.rtmp_url = ""  # nobody is told a port another program holds
            viewing.start()
            hls_requests.start()
            if node_viewings is not None:
                node_viewings.start()
            await ingest_history.start()
            if ingest_sampler is not None:
                ingest_sampler.start()
            if settings.media:
                audience.start()
                await control.start()
                await relays.start()
                announcer.start()
                keeper.start()
            if is_shared(settings.bus_url):
                reaper.start()  # front doors too: a cluster whose nodes all died still ends their streams
                if settings.media:
                    adopter.start()
            log.info("Tallylight signaling ready on %s", settings.resolved_public_url)
            yield
        finally:
            for name, close in (
                ("worker", worker.close if worker is not None else _nothing),
                ("webhooks", notifications.webhooks.close), ("push", notifications.push.close),
                ("reaper", reaper.close), ("adopter", adopter.close), ("keeper", keeper.close), ("control", control.close),
                ("relays", relays.close), ("rtmp", rtmp.close if rtmp is not None else _nothing),
                ("rtmp claims", rtmp_gate.close),
                ("announcer", announcer.close),  # out of the registry before the node's sessions end
                ("audience", audience.close),  # its last minutes written while the database is there
                ("hls request viewers", hls_requests.close),
                ("ingest sampler", ingest_sampler.close if ingest_sampler is not None else _nothing),
                ("ingest history", ingest_history.close),
                ("node viewings", node_viewings.close if node_viewings is not None else _nothing),
                ("viewing sessions", viewing.close),  # ...and the sessions' last rows
                ("recordings", recordings.close),  # before the node: recordings are written to their end first
                ("hls", hls.close), ("hls relay", relay.close), ("hub", hub.close), ("node", node.close),
                ("storage", storage.close),  # after the node: its last stream events still remove live pictures
                ("oidc", oidc.close), ("limiter", limiter.close), ("hls audience", streams.hls_audience.close),
                ("presence", hub.presence.close), ("bus", bus.close), ("registry", registry.close),
                ("origins", origins.close), ("database", db.close),
            ):
                steps.next(then=name)
                await close()
            steps.next()
            steps.finish()

    app.cleanup_ctx.append(lifecycle)

    async def begin_shutdown(app: web.Application) -> None:
        steps.begin("chat")
        hub.disconnect_all()  # or open WebSockets would hold shutdown for aiohttp's whole timeout
        if settings.media:
            steps.next(then="drain")
            await announcer.drain()  # placement sends it nothing new
            if is_shared(settings.bus_url):
                steps.next(then="doors hear of the drain")
                await asyncio.sleep(DIRECTORY_FRESH * 2)  # every front door has read that it drains
                if await _others_open(registry, settings.resolved_node_id):  # (not all stopping at once)
                    steps.next(then="hand-over")
                    await control.close_doors()  # they hear "nobody serves this node" from here
                    await hand_over(node)
            steps.next(then="control")
            await control.close()
        steps.next(then="requests in flight")

    app.on_shutdown.append(begin_shutdown)
    return app
