"""Settings, read from the environment (and an optional `.env` file) or given directly in tests."""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
from urllib.parse import urlsplit
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, HttpUrl, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bus import is_shared
from recorder.hls.ladder import DEFAULT_LADDER, parse_ladder
from signaling.auth.sealing import parse_keys

REPO_ROOT = Path(__file__).resolve().parent.parent


class OidcProviderSettings(BaseModel):
    """One OpenID Connect provider users may sign in with."""

    discovery_url: HttpUrl
    client_id: str
    client_secret: str
    display_name: str | None = None
    scope: str = "openid email profile"


def server_tls(cert: Path, key: Path, names: str) -> ssl.SSLContext:
    """A listener's TLS context: TLS 1.2 and later (encoders and browsers speak it), with this
    certificate chain and key; ValueError naming the settings (`names`) when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{names} cannot be loaded: {exc}") from None
    return context


TURN_URL = re.compile(r"turns?:[A-Za-z0-9.\-\[\]:]+(\?transport=(udp|tcp))?")


class IceServerSettings(BaseModel):
    """One STUN or TURN server clients are told about."""

    urls: str
    username: str | None = None
    credential: str | None = None

    @field_validator("urls", "username", "credential")
    @classmethod
    def _fits_a_link_header(cls, value: str | None) -> str | None:
        # They go out in quoted Link header parameters (RFC 9725): nothing that could end one.
        if value is not None and (set(value) & set('"<>;,\\') or not value.isprintable()):
            raise ValueError("ICE_SERVERS values may not hold quotes, <, >, ;, commas, backslashes or control characters")
        return value


class Settings(BaseSettings):
    """Everything an operator can set. Defaults are the embedded, one-process mode."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = Field(
        default="", description="Base URL browsers reach this service at; derived from host/port when empty."
    )
    data_dir: Path = Path("var")
    database_url: str = ""
    bus_url: str = "memory://"
    storage_url: str = ""
    web_root: Path = REPO_ROOT / "web"

    jwt_secret: str = Field(default="", description="HS256 key; generated and kept under data_dir when empty.")
    secrets_keys: str = Field(
        default="", description="Fernet keys sealing secrets at rest, comma-separated, newest first (the first seals, "
                                "all open); generated and kept under data_dir when empty (one process only).",
    )
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    default_role: str = "broadcaster"

    # Notifications (signaling/notifications/): the outbox's worker runs inside `tally serve` in the
    # embedded mode; with a shared bus, `tally worker` processes do it (RUN_WORKER overrides either way).
    run_worker: bool | None = None
    notify_settle: float = Field(default=30.0, ge=0, description="Seconds a stream stays live before followers hear of it.")
    notify_cooldown: float = Field(default=600.0, ge=0, description="Seconds after a go-live notification in which the channel's next is not sent.")
    reminder_lead: float = Field(default=900.0, ge=0, description="Seconds before a scheduled stream that followers are reminded.")
    smtp_url: str = Field(default="", description="smtp://[user:password@]host[:port][?starttls=true] or smtps://…; empty: no email.")
    mail_from: str = Field(default="", description="The From of emails; Tallylight <noreply@PUBLIC_URL's host> when empty.")
    push_contact: str = Field(default="", description="VAPID `sub`: a mailto: or https: URL push services may reach the operator at.")
    outbound_allow_private: bool = Field(default=False, description="Let webhooks point at loopback and private addresses.")

    oidc_providers: Annotated[dict[str, OidcProviderSettings], NoDecode] = {}

    max_body_bytes: int = 64 * 1024
    trust_forwarded_for: bool = False
    rate_login_per_minute: int = 10
    rate_register_per_hour: int = 20
    rate_stream_key_per_hour: int = 30
    rate_whip_per_minute: int = 30
    rate_whep_per_minute: int = 600
    rate_trickle_per_minute: int = Field(default=120, ge=1, description="Trickle ICE PATCHes per client address.")
    chat_max_length: int = Field(default=500, ge=1, le=2000, description="Characters in one chat message.")
    chat_posts_per_10s: int = Field(default=5, ge=1, description="A user's chat posts per channel: a burst of this many, then one every 10/N seconds.")

    node_id: str = Field(default="", description="This media node's name in stream records and the registry (unique in a cluster); HOST:PORT when empty.")
    internal_url: str = Field(
        default="", description="Where other Tallylight processes reach this one over HTTP; http://HOST:PORT when empty (the machine's name for HOST 0.0.0.0)."
    )
    webrtc_host_addresses: Annotated[list[str], NoDecode] = Field(
        default=[], description="Addresses to gather ICE host candidates on (comma-separated); all but loopback when empty."
    )
    webrtc_announced_addresses: Annotated[list[str], NoDecode] = Field(
        default=[], description="Addresses to announce instead, in the same order (public IPs behind 1:1 NAT)."
    )
    webrtc_udp_ports: str = Field(default="", description="UDP port range for media, like 40000-40999; any when empty.")
    max_viewers_per_node: int = Field(default=500, ge=1)
    max_relays_per_node: int = Field(
        default=64, ge=0, description="Relays of its streams a node feeds to other nodes (they hold no viewer place)."
    )
    relay_linger_seconds: float = Field(
        default=10.0, gt=0, description="Seconds a node keeps a relayed stream after its last viewer left."
    )
    max_pending_sessions: int = Field(default=100, ge=1, description="WebRTC sessions still connecting, per node.")
    max_pending_per_client: int = Field(default=10, ge=1, description="...of them from one client address.")
    session_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a WHIP/WHEP session has to connect (ICE and DTLS) before it is ended."
    )
    max_publish_bitrate: int = Field(
        default=8_000_000, ge=0, description="Bits per second a publisher may send (told in the answer; 0: no ceiling)."
    )
    rtmp_port: int = Field(
        default=1935, ge=0, le=65535,
        description="TCP port of the RTMP ingest on a media process (rtmp://HOST:PORT/live, the stream key as the "
                    "stream name); 0: off. Left at its default and taken by another program, RTMP is off (logged).",
    )
    rtmp_reuse_port: bool = Field(
        default=False, description="Several media processes on one host share the RTMP(S) ports (SO_REUSEPORT: the "
                                   "kernel spreads encoders over them); `tally cluster` sets it for its nodes.",
    )
    rtmp_public_url: str = Field(
        default="", description="The RTMP server URL encoders are told (default: rtmp://<public host>:RTMP_PORT/live "
                                "on a process that takes RTMP; set it on front doors whose nodes do)."
    )
    rtmp_proxy_from: Annotated[list[str], NoDecode] = Field(
        default=[], description="TCP load balancers in front of the RTMP port that send a PROXY header (v1 or v2) with "
                                "the encoder's address (comma-separated addresses or networks, e.g. 10.0.0.0/24): "
                                "connections from them must send one; nobody else's is believed. Plain RTMP only "
                                "(end TLS at the balancer).",
    )
    rtmps_port: int = Field(
        default=0, ge=0, le=65535,
        description="TCP port of RTMP over TLS (rtmps://HOST:PORT/live) on a media process; 0: off. Needs RTMPS_CERT "
                    "and RTMPS_KEY.",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate chain: `tally serve` answers HTTPS (and WSS) itself on PORT. "
                                  "For one host; several sit behind the gateway (infra/gateway/) instead.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of TLS_CERT.")
    rtmps_cert: Path | None = Field(default=None, description="PEM certificate chain of the RTMPS listener.")
    rtmps_key: Path | None = Field(default=None, description="PEM private key of the RTMPS listener.")
    rtmps_public_url: str = Field(
        default="", description="The RTMPS server URL encoders are told (default: rtmps://<public host>:RTMPS_PORT/live)."
    )
    publisher_timeout: float = Field(default=5.0, gt=0, description="Seconds without media that end a stream.")
    publisher_connect_timeout: float = Field(
        default=15.0, gt=0, description="Seconds a publisher has to connect and send its first packet."
    )
    ice_servers: Annotated[list[IceServerSettings], NoDecode] = Field(
        default=[], description="STUN/TURN servers offered to browsers and encoders (WHIP/WHEP Link headers)."
    )
    turn_urls: Annotated[list[str], NoDecode] = Field(
        default=[], description="TURN server URLs given short-lived credentials (comma-separated), e.g. "
                                "turn:turn.example.com:3478?transport=udp,turn:turn.example.com:3478?transport=tcp,"
                                "turns:turn.example.com:5349?transport=tcp. Needs TURN_SECRET.",
    )
    turn_secret: str = Field(
        default="", description="Shared secret of the TURN REST API credentials (coturn's static-auth-secret)."
    )
    turn_credential_ttl: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600,
        description="Seconds a TURN credential may start a relay (coturn checks it when a relay is allocated; "
                    "relays already running outlive it).",
    )
    ice_transport_policy: str = Field(
        default="all", pattern="^(all|relay)$",
        description="What the pages tell browsers: 'all' candidates, or 'relay' only (hides viewers' addresses "
                    "from the media nodes; needs TURN).",
    )
    rate_ice_servers_per_minute: int = Field(
        default=600, ge=1, description="ICE server configurations (TURN credentials) issued per client address."
    )

    s3_endpoint_url: str = Field(default="", description="S3 API endpoint for s3:// storage (MinIO: http://host:9000); AWS when empty.")
    s3_region: str = ""
    s3_path_style: bool = Field(default=False, description="Path-style bucket addressing (MinIO and most self-hosted S3 APIs).")
    recording_spool_dir: Path | None = Field(
        default=None, description="Local disk for recordings being written (data_dir/spool when unset); must survive a restart."
    )
    recording_url_ttl: int = Field(default=3600, ge=60, description="Seconds a presigned playback URL stays valid.")
    recording_keyframe_interval: float = Field(default=2.0, gt=0, description="Seconds between keyframes asked for while recording (seek points).")
    recording_fragment_seconds: float = Field(default=1.0, gt=0, le=10, description="MP4 fragment length: the most a crash can lose.")
    recording_adopt_after: float = Field(
        default=120.0, ge=1, le=86_400,
        description="In a cluster: seconds a node must be gone from the registry before another node finishes its "
                    "unfinished recordings from their live copies in the storage (a node back sooner finishes its own).",
    )
    live_thumbnail_interval: float = Field(default=10.0, gt=0, description="Seconds between live thumbnails of a stream.")
    viewer_session_retention_days: int = Field(
        default=90, ge=1, le=3650,
        description="Days viewing sessions are kept; analytics of older days read their daily sums.")

    hls_ladder: str = Field(
        default=DEFAULT_LADDER, description="HLS renditions: 'source' and '<height>p@<kbit/s>', comma-separated."
    )
    hls_segment_seconds: float = Field(default=2.0, ge=0.5, le=10, description="HLS segment length (keyframe interval).")
    hls_part_seconds: float = Field(default=1 / 3, ge=0.1, le=2, description="LL-HLS part length.")
    hls_window_segments: int = Field(default=10, ge=3, le=100, description="Segments kept in a live HLS playlist.")
    hls_persist: bool = Field(default=False, description="Also write live HLS segments and playlists to the storage (for a bucket behind a CDN).")
    hls_linger_seconds: float = Field(default=60.0, ge=0, description="Seconds an ended stream's playlists stay served.")
    hls_max_ladders: int = Field(default=4, ge=0, description="HLS ladders this node encodes at once; more get 503.")
    hls_encoder_threads: int = Field(default=1, ge=1, le=16, description="Threads of each ladder's decoder and encoders.")
    playback_order: str = Field(default="webrtc,hls", description="What the watch page plays: WebRTC, then the first of "
                                "hls or dash when WebRTC cannot connect (comma-separated; starting with hls or dash, "
                                "that alone).")
    dash_target_latency_seconds: float = Field(default=1.5, ge=0.5, le=30, description="How far behind live DASH players aim to play (the MPD's ServiceDescription).")
    hls_idle_seconds: float = Field(default=60.0, ge=1, description="The ladder runs on demand: it stops after this long without HLS requests (always on with HLS_PERSIST).")

    auto_migrate: bool = Field(default=True, description="Apply migrations when the server starts.")
    media: bool = Field(
        default=True,
        description="Run a media node in this process; off, WHIP/WHEP sessions go to the cluster's nodes (BUS_URL).",
    )
    public_http: bool = Field(
        default=True,
        description="Serve the API and pages; off (a media node behind front doors), only /hls/, /dash/, "
                    "/healthz, /readyz and /metrics: what the doors and monitoring ask of a node.",
    )
    log_level: str = "INFO"
    log_format: str = Field(default="text", description="text, or json: one JSON object per line with the "
                                                        "request, user, channel, stream, session and node ids")

    @field_validator("secrets_keys")
    @classmethod
    def _check_secrets_keys(cls, value: str) -> str:
        parse_keys(value)  # a ValueError says which key is wrong
        return value

    @field_validator("hls_ladder")
    @classmethod
    def _check_ladder(cls, value: str) -> str:
        parse_ladder(value)  # a LadderError (a ValueError) says what is wrong
        return value

    @field_validator("playback_order")
    @classmethod
    def _check_playback_order(cls, value: str) -> str:
        kinds = [part.strip().lower() for part in value.split(",") if part.strip()]
        if not kinds or not set(kinds) <= {"webrtc", "hls", "dash"} or len(set(kinds)) != len(kinds):
            raise ValueError("a comma-separated list of webrtc, hls and dash, each at most once (like webrtc,hls)")
        return ",".join(kinds)

    @field_validator("oidc_providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("webrtc_host_addresses", "webrtc_announced_addresses", "turn_urls", "rtmp_proxy_from",
                     mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _parse_ice_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("webrtc_udp_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        if value:
            low, _, high = value.partition("-")
            if not (low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
                raise ValueError("webrtc_udp_ports is a range like 40000-40999 within 1024-65535")
        return value

    @property
    def udp_port_range(self) -> tuple[int, int] | None:
        if not self.webrtc_udp_ports:
            return None
        low, _, high = self.webrtc_udp_ports.partition("-")
        return int(low), int(high)

    @property
    def reachable_host(self) -> str:
        """HOST, or this machine's name when HOST listens on every address (as other hosts would call it)."""
        if self.host in ("0.0.0.0", "::", ""):
            import socket

            return socket.gethostname()
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def resolved_node_id(self) -> str:
        # Listening on every address (a container), the host's name tells replicas apart.
        return self.node_id or f"{self.reachable_host}:{self.port}"

    @model_validator(mode="after")
    def _media_off_needs_a_cluster(self) -> Settings:
        if not self.media and not is_shared(self.bus_url):
            raise ValueError("MEDIA off sends sessions to the cluster's nodes: set BUS_URL to the cluster's Redis")
        return self

    @field_validator("rtmp_proxy_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                network = ipaddress.ip_network(entry)  # strict: 10.0.0.7/8 is a typo, not 10.0.0.0/8
            except ValueError:
                raise ValueError(f"RTMP_PROXY_FROM holds {entry[:60]!r}: each is an address or a network "
                                 "(10.0.0.7, 10.0.0.0/24, fd00::/8)") from None
            if network.prefixlen == 0:
                raise ValueError("RTMP_PROXY_FROM names the load balancers: trusting every address would let any "
                                 "encoder claim any address")
        return value

    @property
    def rtmp_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry) for entry in self.rtmp_proxy_from)

    @model_validator(mode="after")
    def _proxy_headers_need_plain_rtmp(self) -> Settings:
        if self.rtmp_proxy_from and not self.rtmp_port:
            raise ValueError("RTMP_PROXY_FROM is read on plain RTMP (RTMP_PORT), which is off; end RTMPS at the "
                             "load balancer and send RTMP with the PROXY header on")
        return self

    @model_validator(mode="after")
    def _internal_only_is_for_nodes(self) -> Settings:
        if not self.public_http and not self.media:
            raise ValueError("PUBLIC_HTTP=false is for media nodes behind front doors: a front door (MEDIA off) "
                             "serves the API and pages")
        return self

    @model_validator(mode="after")
    def _turn_needs_a_secret(self) -> Settings:
        for url in self.turn_urls:
            if not TURN_URL.fullmatch(url):
                raise ValueError(f"TURN_URLS holds {url[:80]!r}: each is turn:HOST:PORT or turns:HOST:PORT, with "
                                 "?transport=udp or tcp (RFC 7065)")
        if self.turn_urls and not self.turn_secret:
            raise ValueError("TURN_URLS needs TURN_SECRET (the static-auth-secret shared with coturn)")
        relays = self.turn_urls or [s.urls for s in self.ice_servers if s.urls.startswith(("turn:", "turns:"))]
        if self.ice_transport_policy == "relay" and not relays:
            raise ValueError("ICE_TRANSPORT_POLICY=relay needs a TURN server (TURN_URLS and TURN_SECRET)")
        return self

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS_CERT and TLS_KEY go together (PEM files of the certificate chain and its key)")
        if self.tls_cert:
            self.https_tls()  # a missing file or a key that does not fit says so at start
        return self

    def https_tls(self) -> ssl.SSLContext:
        """The HTTPS listener's TLS context: HTTP/1.1 (a gateway in front adds HTTP/2)."""
        assert self.tls_cert is not None and self.tls_key is not None
        context = server_tls(self.tls_cert, self.tls_key, "TLS_CERT/TLS_KEY")
        context.set_alpn_protocols(["http/1.1"])
        return context

    @model_validator(mode="after")
    def _rtmps_needs_a_certificate(self) -> Settings:
        if self.rtmps_port and not (self.rtmps_cert and self.rtmps_key):
            raise ValueError("RTMPS_PORT needs RTMPS_CERT and RTMPS_KEY (PEM files of the certificate and its key)")
        if self.rtmps_port and self.rtmps_port == self.rtmp_port:
            raise ValueError("RTMPS_PORT and RTMP_PORT must differ")
        if self.rtmps_port:
            self.rtmps_tls()  # a missing file or a key that does not fit says so at start
        return self

    def rtmps_tls(self) -> ssl.SSLContext:
        """The RTMPS listener's TLS context."""
        assert self.rtmps_cert is not None and self.rtmps_key is not None
        return server_tls(self.rtmps_cert, self.rtmps_key, "RTMPS_CERT/RTMPS_KEY")

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        return value

    @field_validator("default_role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        if value not in ("viewer", "broadcaster", "moderator", "admin"):
            raise ValueError("default_role must be viewer, broadcaster, moderator or admin")
        return value

    @property
    def resolved_run_worker(self) -> bool:
        return not is_shared(self.bus_url) if self.run_worker is None else self.run_worker

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'tallylight.db'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir / 'media'}"

    @property
    def resolved_spool_dir(self) -> Path:
        return self.recording_spool_dir or self.data_dir / "spool"

    @property
    def resolved_internal_url(self) -> str:
        return (self.internal_url or f"http://{self.reachable_host}:{self.port}").rstrip("/")

    @property
    def resolved_public_url(self) -> str:
        scheme = "https" if self.tls_cert else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_rtmp_url(self) -> str:
        """Where encoders publish over RTMP ("" when nobody said and this process takes none)."""
        if self.rtmp_public_url:
            return self.rtmp_public_url.rstrip("/")
        if not (self.media and self.rtmp_port):
            return ""
        return self.ingest_url("rtmp", self.rtmp_port)

    @property
    def resolved_rtmps_url(self) -> str:
        """Where encoders publish over RTMPS ("" when nobody said and this process takes none)."""
        if self.rtmps_public_url:
            return self.rtmps_public_url.rstrip("/")
        if not (self.media and self.rtmps_port):
            return ""
        return self.ingest_url("rtmps", self.rtmps_port)

    def ingest_url(self, scheme: str, port: int) -> str:
        """`scheme://<public host>:port/live`, where encoders publish."""
        host = urlsplit(self.resolved_public_url).hostname or self.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/live"
