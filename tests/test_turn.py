"""TURN: the credentials Tallylight issues against a real coturn (Debian's, from turn/turnserver.conf).

aioice is the TURN client (a third party's code): a credential from /api/ice-servers or a WHIP answer's
Link header allocates a relay over UDP, TCP and TLS, and the relay carries datagrams both ways; an
expired or forged credential is refused by coturn itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from pydantic import ValidationError

from signaling.app import SERVICES
from signaling.auth.sealing import Sealer, parse_keys
from signaling.auth.turn_credentials import IceServers, turn_password
from signaling.settings import Settings
from support import SECRETS_KEYS, Api
from test_whip_whep import go_live, stream_key
from turn_server import TurnServer, turn_server


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    with turn_server(tmp_path_factory.mktemp("coturn")) as server:
        yield server


@pytest.fixture
async def rtc(app_factory: Callable[..., web.Application], clock: Any, coturn: TurnServer) -> AsyncIterator[Api]:
    sealer = Sealer(parse_keys(SECRETS_KEYS))
    static = [{"urls": "stun:stun.tally.test:3478"},
              {"urls": "turn:static.tally.test:3478", "username": "u", "credential": sealer.seal("static-pw")}]
    app = app_factory(
        webrtc_host_addresses=["127.0.0.1"],
        ice_servers=json.dumps(static),
        turn_urls=",".join(coturn.urls("udp", "tcp")),
        turn_secret=sealer.seal(coturn.secret),  # given sealed, as an operator may (`tally secrets seal`)
        secrets_keys=SECRETS_KEYS,
        turn_credential_ttl=600,
    )
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


class Received(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


async def relay_round_trip(coturn: TurnServer, username: str, password: str, transport: str = "udp",
                           tls: ssl.SSLContext | None = None) -> tuple[str, int]:
    """Allocate a relay with these credentials, send a datagram through it to a peer on loopback and
    back; returns the relayed address. Raises TransactionFailed when coturn refuses the credential."""
    port = coturn.tls_port if tls else coturn.port
    relay, client = await create_turn_endpoint(Received, ("127.0.0.1", port), username, password,
                                               ssl=tls, transport=transport)
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(Received, local_addr=("127.0.0.1", 0))
    try:
        relayed = relay.get_extra_info("sockname")
        peer_address = peer_transport.get_extra_info("sockname")
        relay.sendto(b"to the peer", peer_address)
        data, source = await asyncio.wait_for(peer.queue.get(), 5)
        assert data == b"to the peer" and tuple(source) == tuple(relayed)
        peer_transport.sendto(b"to the client", tuple(relayed))
        data, source = await asyncio.wait_for(client.queue.get(), 5)
        assert data == b"to the client" and tuple(source)[:2] == tuple(peer_address)[:2]
        return relayed
    finally:
        peer_transport.close()
        relay.close()


def trusting(coturn: TurnServer) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(coturn.cert))
    context.check_hostname = False  # the certificate names 127.0.0.1 by address
    return context


async def test_pages_get_credentials_coturn_relays_with(rtc: Api, coturn: TurnServer) -> None:
    status, body, headers = await rtc.call("GET", "/api/ice-servers")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert body["ice_transport_policy"] == "all" and body["expires_in"] == 600
    stun, static, turn = body["ice_servers"]
    assert stun == {"urls": ["stun:stun.tally.test:3478"], "username": None, "credential": None}
    assert static == {"urls": ["turn:static.tally.test:3478"], "username": "u", "credential": "static-pw"}
    assert turn["urls"] == coturn.urls("udp", "tcp")
    expiry, who = turn["username"].split(":")
    assert who.startswith("guest-") and 0 <= int(expiry) - (time.time() + 600) <= 300 and int(expiry) % 300 == 0
    status, again, _ = await rtc.call("GET", "/api/ice-servers")  # the same client: the same user, to coturn
    again_expiry, again_who = again["ice_servers"][2]["username"].split(":")
    assert again_who == who and int(again_expiry) in (int(expiry), int(expiry) + 300)  # (unless a step passed)
    assert turn["credential"] == turn_password(coturn.secret, turn["username"])
    for transport in ("udp", "tcp"):
        relayed = await relay_round_trip(coturn, turn["username"], turn["credential"], transport)
        assert relayed[0] == "127.0.0.1"
    await relay_round_trip(coturn, turn["username"], turn["credential"], "tcp", tls=trusting(coturn))

    # Signed in, the credential names the user (coturn's log then says who relays).
    name, token = await rtc.user()
    status, body, _ = await rtc.call("GET", "/api/ice-servers", token=token)
    assert status == 200 and body["ice_servers"][2]["username"].endswith(f":{name}")


async def test_whip_and_whep_answers_carry_credentials_but_a_preflight_does_not(rtc: Api, coturn: TurnServer) -> None:
    name, token = await rtc.user()
    peer, headers = await go_live(rtc, name, await stream_key(rtc, token))
    try:
        links = headers.getall("Link")
        assert '<stun:stun.tally.test:3478>; rel="ice-server"' in links
        turn = [link for link in links if link.startswith("<turn:127.0.0.1")]
        assert [link.split(">")[0][1:] for link in turn] == coturn.urls("udp", "tcp")
        match = re.search(r'username="([^"]+)"; credential="([^"]+)"; credential-type="password"', turn[0])
        assert match and match.group(1).endswith(f":{name}")
        await relay_round_trip(coturn, match.group(1), match.group(2))  # what OBS would trickle from

        status, _, headers = await rtc.call("OPTIONS", f"/whep/{name}")
        assert status == 204
        assert headers.getall("Link") == [  # the static servers only
            '<stun:stun.tally.test:3478>; rel="ice-server"',
            '<turn:static.tally.test:3478>; rel="ice-server"; username="u"; credential="static-pw"; '
            'credential-type="password"']
    finally:
        await peer.close()


async def test_coturn_refuses_expired_and_forged_credentials(coturn: TurnServer) -> None:
    an_hour_ago = IceServers([], coturn.urls(), coturn.secret, ttl=60, clock=lambda: time.time() - 3600)
    expired = an_hour_ago.issue("someone")[-1]
    assert expired.username is not None and expired.credential is not None
    with pytest.raises(TransactionFailed, match="401"):
        await relay_round_trip(coturn, expired.username, expired.credential)

    valid = IceServers([], coturn.urls(), coturn.secret, ttl=60).issue("someone")[-1]
    assert valid.username is not None
    forged = IceServers([], coturn.urls(), "not-the-secret", ttl=60).issue("someone")[-1]
    assert forged.credential is not None
    for username, password in ((valid.username, forged.credential),  # signed with another secret
                               (valid.username.replace(":", "9:", 1), turn_password(coturn.secret, valid.username))):
        with pytest.raises(TransactionFailed, match="401"):
            await relay_round_trip(coturn, username, password)
    for transport in ("udp", "tcp"):  # and the valid one works, so the refusals were for the credential
        await relay_round_trip(coturn, valid.username, turn_password(coturn.secret, valid.username), transport)


async def test_the_relay_reaches_the_media_nodes_and_nothing_else(coturn: TurnServer) -> None:
    """Credentials go to anyone: the shipped configuration denies every peer but the nodes' addresses
    (here 127.0.0.1), so the relay is no way into private networks or out to the internet."""
    valid = IceServers([], coturn.urls(), coturn.secret, ttl=60).issue("someone")[-1]
    assert valid.username is not None and valid.credential is not None
    relay, client = await create_turn_endpoint(Received, ("127.0.0.1", coturn.port), valid.username, valid.credential)
    try:
        for peer in (("10.1.2.3", 9), ("192.168.1.1", 53), ("172.16.0.1", 80), ("169.254.169.254", 80),
                     ("203.0.113.5", 25), ("127.0.0.2", 5432)):
            relay.sendto(b"let me in", peer)
            refused = await asyncio.wait_for(client.errors.get(), 5)
            assert isinstance(refused, TransactionFailed) and "403" in str(refused), (peer, refused)
    finally:
        relay.close()
    await relay_round_trip(coturn, valid.username, valid.credential)  # and the node's address works


def test_turn_settings_are_checked_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="TURN_URLS needs TURN_SECRET"):
        Settings(data_dir=tmp_path, turn_urls="turn:turn.example.com:3478")
    with pytest.raises(ValidationError, match="each is turn:HOST:PORT"):
        Settings(data_dir=tmp_path, turn_urls="stun:turn.example.com:3478", turn_secret="s")
    with pytest.raises(ValidationError, match="each is turn:HOST:PORT"):
        Settings(data_dir=tmp_path, turn_urls='turn:x>; rel="evil"', turn_secret="s")
    with pytest.raises(ValidationError, match="each is turn:HOST:PORT"):
        Settings(data_dir=tmp_path, turn_urls="turn:a:3478\r\nSet-Cookie: x", turn_secret="s")
    with pytest.raises(ValidationError, match="may not hold quotes"):
        Settings(data_dir=tmp_path, ice_servers='[{"urls": "turn:a:3478", "username": "u", "credential": "p\\"; x=\\""}]')
    with pytest.raises(ValidationError, match="ICE_TRANSPORT_POLICY=relay needs a TURN server"):
        Settings(data_dir=tmp_path, ice_transport_policy="relay")
    settings = Settings(data_dir=tmp_path, turn_urls="turn:a:3478?transport=udp, turns:a:5349?transport=tcp",
                        turn_secret="s", ice_transport_policy="relay")
    assert settings.turn_urls == ["turn:a:3478?transport=udp", "turns:a:5349?transport=tcp"]


def test_who_is_kept_to_safe_characters() -> None:
    servers = IceServers([], ["turn:a:3478"], "s", ttl=60, clock=lambda: 1000.0)
    turn = servers.issue('a"b; c:d' + "x" * 100)[-1]
    assert turn.username is not None
    assert turn.username.startswith("1200:a_b__c_d") and len(turn.username) == len("1200:") + 64  # 1060, rounded up
    assert servers.guest("198.51.100.7") == servers.guest("198.51.100.7") != servers.guest("198.51.100.8")
    assert "198.51" not in servers.guest("198.51.100.7")
    assert turn.link_headers()[0].count('"') == 8  # four quoted values: nothing the name held breaks out of the header
