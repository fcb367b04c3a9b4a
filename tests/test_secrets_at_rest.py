"""Secrets at rest, with the real server, its worker and database (SQLite and PostgreSQL): webhook secrets,
push subscriptions' auth secrets and the VAPID key are stored sealed and read back opened (deliveries
verify with the secret the owner was shown, pushes decrypt in the browser); keys rotate (`tally secrets
rotate`); rows a version before sealing left in clear keep working and get sealed; sealed settings are
opened by the composition root; and keys that do not fit stop the start with why, or fail a delivery
rather than sign or encrypt with garbage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02
from sqlalchemy import text

from oidc_provider import OidcProvider, OidcUser
from push_service import Browser, PushService, b64url
from server_process import REPO_ROOT, server_env, tally
from pg_databases import PG_ADMIN, fresh_database
from signaling.app import SERVICES, create_app
from signaling.auth.access_tokens import AccessTokens
from signaling.auth.sealing import (
    KEY_FILE, Sealer, SecretsKeysError, load_or_create_keys, new_key, parse_keys, settings_secret,
)
from signaling.db.database import Database
from signaling.db.sealed_columns import SealedColumns
from signaling.local_cluster import plan
from signaling.migrations.runner import upgrade
from signaling.notifications.parts import smtp_server
from signaling.notifications.push import Note, push_jobs
from support import Api, FakeClock, free_port, make_settings
from test_notifications import Receiver, _got, receiver  # noqa: F401  (the fixture)
from test_oidc import Setup
from test_whip_whep import until

KEY_A, KEY_B = new_key(), new_key()


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    found = PushService([Browser("laptop")])
    await found.start()
    yield found
    await found.close()


@asynccontextmanager
async def running(app_factory: Callable[..., web.Application], clock: FakeClock, **settings: Any) -> AsyncIterator[Api]:
    app = app_factory(outbound_allow_private=True, **settings)
    async with TestClient(TestServer(app)) as client:
        yield Api(client, app[SERVICES], clock)


async def query(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Raw SQL on the database, as someone holding a copy of it would read it."""
    db = Database(database_url)
    try:
        async with db.session() as session:
            result = await session.execute(text(sql), params)
            return [tuple(row) for row in result.all()] if result.returns_rows else []
    finally:
        await db.close()


async def stored(database_url: str) -> dict[str, str]:
    """Every sealed column's values, by table and key."""
    found = {f"webhook {i}": v for i, v in await query(database_url, "SELECT id, secret FROM webhooks")}
    found |= {f"push {i}": v for i, v in await query(database_url, "SELECT id, auth FROM push_subscriptions")}
    found |= {f"site {n}": v for n, v in await query(database_url, "SELECT name, value FROM site_secrets")}
    return found


def nowhere_on_disk(tmp_path: Path, database_url: str, *values: str) -> None:
    """SQLite: not in the database's files either (WAL included)."""
    if database_url.startswith("sqlite"):
        files = b"".join(p.read_bytes() for p in tmp_path.glob("tally.db*"))
        assert files and not any(v.encode() in files for v in values)


async def make_hook(api: Api, receiver: Receiver, path: str = "hook") -> tuple[str, dict[str, Any]]:
    star, token = await api.user()
    status, hook, _ = await api.call("POST", f"/api/channels/{star}/webhooks",
                                     {"url": f"{receiver.url}/{path}", "events": ["follow"]}, token=token)
    assert status == 201, hook
    return star, hook


async def a_follow_is_delivered(api: Api, receiver: Receiver, star: str, path: str = "hook") -> None:
    """A new follower of `star`: the hook's receiver gets a delivery whose signature verifies (it answers
    401 and keeps nothing otherwise)."""
    before = sum(1 for g in receiver.got.get(path, []) if g["event"] == "follow")
    fan, token = await api.user()
    assert (await api.call("PUT", f"/api/channels/{star}/follow", token=token))[0] == 200
    await until(lambda: _got(receiver, path, "follow", before + 1))
    assert receiver.got[path][-1]["body"]["follower"]["username"] == fan


async def subscribe(api: Api, service: PushService) -> int:
    _, token = await api.user()
    status, body, _ = await api.call("POST", "/api/me/push-subscriptions",
                                     service.browsers["laptop"].subscription(service.url), token=token)
    assert status == 201, body
    [(sub_id,)] = await query(api.services.settings.resolved_database_url, "SELECT id FROM push_subscriptions")
    return int(sub_id)


async def a_push_is_delivered(api: Api, service: PushService, sub_id: int) -> None:
    """A push job for the subscription reaches the browser, decrypted with its keys (the stand-in checks
    the VAPID signature too)."""
    before = len(service.for_("laptop"))
    async with api.services.db.session() as session:
        push_jobs(session, [sub_id], Note("On air", "now", "/watch/x", "t", "normal", 60),
                  datetime.fromtimestamp(api.clock(), UTC))

    async def arrived() -> bool:
        return len(service.for_("laptop")) > before

    await until(arrived)
    assert service.for_("laptop")[-1]["title"] == "On air" and service.refused == []


def cli(*args: str, stdin: str = "", **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": "", "JWT_SECRET": "x" * 40, "SECRETS_KEYS": "", "BUS_URL": "memory://",
           **settings}
    return subprocess.run(tally(*args), cwd=REPO_ROOT, env=env, input=stdin, capture_output=True, text=True,
                          timeout=60)


async def test_a_webhook_secret_is_sealed_at_rest_and_deliveries_verify_with_the_secret_shown(
        app_factory: Callable[..., web.Application], clock: FakeClock, receiver: Receiver, database_url: str,
        tmp_path: Path) -> None:
    async with running(app_factory, clock) as api:  # the embedded default: a key made under DATA_DIR
        star, hook = await make_hook(api, receiver)
        shown = receiver.secrets["hook"] = hook["secret"]
        [(secret,)] = await query(database_url, "SELECT secret FROM webhooks")
        assert secret.startswith("sealed:") and shown not in secret
        await a_follow_is_delivered(api, receiver, star)
    nowhere_on_disk(tmp_path, database_url, shown)
    key_file = tmp_path / "var" / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert Sealer(parse_keys(key_file.read_text())).open(secret) == shown
    async with running(app_factory, clock) as api:  # the next start uses the same key
        await a_follow_is_delivered(api, receiver, star)


async def test_push_auth_secrets_and_the_vapid_key_are_sealed_and_pushes_still_decrypt(
        app_factory: Callable[..., web.Application], clock: FakeClock, push_service: PushService, database_url: str,
        tmp_path: Path) -> None:
    browser = push_service.browsers["laptop"]
    async with running(app_factory, clock) as api:
        public = (await api.call("GET", "/api/push/public-key"))[1]["public_key"]
        sub_id = await subscribe(api, push_service)
        [(vapid,)] = await query(database_url, "SELECT value FROM site_secrets WHERE name = 'vapid-private-pem'")
        assert vapid.startswith("sealed:") and "PRIVATE KEY" not in vapid
        [(auth, p256dh)] = await query(database_url, "SELECT auth, p256dh FROM push_subscriptions")
        assert auth.startswith("sealed:") and b64url(browser.auth) not in auth
        assert p256dh == b64url(browser.public)  # a public key: kept as it is
        await a_push_is_delivered(api, push_service, sub_id)
        assert push_service.received[-1].vapid_key == public
    nowhere_on_disk(tmp_path, database_url, b64url(browser.auth), "PRIVATE KEY")


async def test_keys_rotate_and_the_old_key_can_then_go(
        app_factory: Callable[..., web.Application], clock: FakeClock, receiver: Receiver, push_service: PushService,
        database_url: str, tmp_path: Path) -> None:
    async with running(app_factory, clock, secrets_keys=KEY_A) as api:
        star, hook = await make_hook(api, receiver)
        receiver.secrets["hook"] = hook["secret"]
        public = (await api.call("GET", "/api/push/public-key"))[1]["public_key"]
        sub_id = await subscribe(api, push_service)
    before = await stored(database_url)
    assert sorted(before) == ["push 1", "site sealing-check", "site vapid-private-pem", "webhook 1"], before
    assert not (tmp_path / "var" / KEY_FILE).exists()  # SECRETS_KEYS given: nothing made under DATA_DIR

    result = await asyncio.to_thread(cli, "secrets", "rotate", DATABASE_URL=database_url,
                                     SECRETS_KEYS=f" {KEY_B}, {KEY_A} ", DATA_DIR=str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    assert "1 webhook secrets, 1 push subscriptions' auth secrets, 2 site secrets" in result.stdout, result.stdout
    after = await stored(database_url)
    old, new = Sealer([KEY_A]), Sealer([KEY_B])
    for name, value in after.items():
        assert value.startswith("sealed:") and value != before[name], name
        assert new.open(value) == old.open(before[name]), name
        with pytest.raises(SecretsKeysError):
            old.open(value)

    async with running(app_factory, clock, secrets_keys=KEY_B) as api:  # the old key is gone
        await a_follow_is_delivered(api, receiver, star)
        assert (await api.call("GET", "/api/push/public-key"))[1]["public_key"] == public
        await a_push_is_delivered(api, push_service, sub_id)
        await make_hook(api, receiver, "second")  # sealed under the newest key
    final = await stored(database_url)
    assert sorted(final) == sorted([*before, "webhook 2"])
    for value in final.values():
        new.open(value)  # the new key alone opens every one (SecretsKeysError otherwise)


async def test_rows_in_clear_from_before_sealing_keep_working_and_are_sealed(
        app_factory: Callable[..., web.Application], clock: FakeClock, receiver: Receiver, push_service: PushService,
        database_url: str, tmp_path: Path) -> None:
    browser = push_service.browsers["laptop"]
    legacy_secret = "legacy-" + "5" * 40
    async with running(app_factory, clock, secrets_keys=KEY_A) as api:
        star, _ = await make_hook(api, receiver)
        sub_id = await subscribe(api, push_service)
        # As a version before sealing wrote them:
        await query(database_url, "UPDATE webhooks SET secret = :s", s=legacy_secret)
        await query(database_url, "UPDATE push_subscriptions SET auth = :a", a=b64url(browser.auth))
        receiver.secrets["hook"] = legacy_secret
        await a_follow_is_delivered(api, receiver, star)
        await a_push_is_delivered(api, push_service, sub_id)

    result = await asyncio.to_thread(cli, "secrets", "rotate", DATABASE_URL=database_url, SECRETS_KEYS=KEY_A,
                                     DATA_DIR=str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    [(secret,)] = await query(database_url, "SELECT secret FROM webhooks")
    [(auth,)] = await query(database_url, "SELECT auth FROM push_subscriptions")
    assert secret.startswith("sealed:") and Sealer([KEY_A]).open(secret) == legacy_secret
    assert auth.startswith("sealed:") and Sealer([KEY_A]).open(auth) == b64url(browser.auth)

    # A start seals what is in clear too (the VAPID key of a version before sealing, kept as it was).
    vapid = Vapid02()
    vapid.generate_keys()
    pem = vapid.private_pem().decode()
    await query(database_url, "UPDATE site_secrets SET value = :v WHERE name = 'vapid-private-pem'", v=pem)
    await query(database_url, "UPDATE webhooks SET secret = :s", s=legacy_secret)
    async with running(app_factory, clock, secrets_keys=KEY_A) as api:
        values = await stored(database_url)
        assert all(v.startswith("sealed:") for v in values.values()), values
        assert Sealer([KEY_A]).open(values["site vapid-private-pem"]) == pem
        assert Sealer([KEY_A]).open(values["webhook 1"]) == legacy_secret
        expected = b64url(vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
        assert (await api.call("GET", "/api/push/public-key"))[1]["public_key"] == expected
        await a_follow_is_delivered(api, receiver, star)
        await a_push_is_delivered(api, push_service, sub_id)
        assert push_service.received[-1].vapid_key == expected


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, for migrations from an older revision."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'tally.db'}"
    elif PG_ADMIN == "off":
        pytest.skip("PostgreSQL runs are off (TALLY_TEST_POSTGRES=off)")
    else:
        with fresh_database("tally_sealing") as url:
            yield url


async def test_a_database_from_before_sealing_is_migrated_and_its_secrets_sealed_at_the_next_start(
        empty_database: str, clock: FakeClock, receiver: Receiver, tmp_path: Path) -> None:
    db = Database(empty_database)
    try:
        await upgrade(db.engine, "0009")  # the last revision before sealing, with what it kept in clear
        async with db.session() as session:
            now = {"now": datetime.fromtimestamp(clock(), UTC)}
            user = (await session.execute(text(
                "INSERT INTO users (username, email, email_verified, role, display_name, bio, notify_in_app, "
                "notify_push, notify_email, created_at, updated_at) VALUES ('star', 'star@example.com', false, "
                "'broadcaster', '', '', true, true, false, :now, :now) RETURNING id"), now)).scalar_one()
            channel = (await session.execute(text(
                "INSERT INTO channels (owner_id, name, title, description, tags, avatar_url, is_live, viewer_count, "
                "stream_key_hint, chat_slow_mode, chat_followers_only, record_streams, recording_retention_days, "
                "created_at, updated_at) VALUES (:user, 'star', '', '', '[]', '', false, 0, '', 0, false, false, 0, "
                ":now, :now) RETURNING id"), {"user": user, **now})).scalar_one()
            await session.execute(text(
                "INSERT INTO webhooks (channel_id, url, secret, events, format, created_at, last_status, last_error) "
                "VALUES (:channel, :url, :secret, '[\"follow\"]', 'json', :now, 0, '')"),
                {"channel": channel, "url": f"{receiver.url}/hook", "secret": "7" * 48, **now})
            await session.execute(text(
                "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, created_at) "
                "VALUES (:user, 'https://push.example.com/1', 'key', 'AAAAAAAAAAAAAAAAAAAAAA', :now)"),
                {"user": user, **now})
    finally:
        await db.close()
    receiver.secrets["hook"] = "7" * 48
    app = create_app(make_settings(tmp_path, empty_database, secrets_keys=KEY_A, outbound_allow_private=True), clock)
    async with TestClient(TestServer(app)) as client:  # migrates (wider columns), then seals
        api = Api(client, app[SERVICES], clock)
        values = await stored(empty_database)
        assert all(v.startswith("sealed:") for v in values.values()), values
        assert Sealer([KEY_A]).open(values["webhook 1"]) == "7" * 48
        assert Sealer([KEY_A]).open(values["push 1"]) == "A" * 22
        await a_follow_is_delivered(api, receiver, "star")
    nowhere_on_disk(tmp_path, empty_database, "7" * 48)


async def test_sealed_settings_are_opened_where_the_process_is_put_together(
        app_factory: Callable[..., web.Application], clock: FakeClock, tmp_path: Path) -> None:
    sealer = Sealer([KEY_A])
    jwt_secret, client_secret = "sealed-jwt-" + "j" * 40, "s3cret-of-the-client"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with OidcProvider("tallylight-test", client_secret, f"{base}/api/auth/oidc/local/callback") as provider:
        provider.current_user = OidcUser(sub="u-1", email="ada@example.com", preferred_username="ada", name="Ada")
        app = app_factory(public_url=base, secrets_keys=KEY_A, jwt_secret=sealer.seal(jwt_secret),
                          oidc_providers={"local": {"discovery_url": provider.discovery_url, "client_id": "tallylight-test",
                                                    "client_secret": sealer.seal(client_secret)}})
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        async with TestClient(server) as client, aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            setup = Setup(base, provider, Api(client, app[SERVICES], clock), browser)
            tokens = await setup.sign_in()  # the provider checks the client secret at the token exchange
            assert "access_token" in tokens, tokens
            claims = AccessTokens(jwt_secret, 60, clock).verify(tokens["access_token"])  # signed with the opened key
            assert (await setup.api.call("GET", "/api/me", token=tokens["access_token"]))[1]["id"] == claims.user_id

    smtp = smtp_server(f"smtp://mailer:{sealer.seal('pa55word')}@mail.example.com:587?starttls=true", sealer)
    assert smtp is not None and smtp.username == "mailer" and smtp.password == "pa55word" and smtp.starttls
    whole = smtp_server(sealer.seal("smtps://m:pw@mail.example.com"), sealer)
    assert whole is not None and whole.password == "pw" and whole.tls
    settings = make_settings(tmp_path, "sqlite+aiosqlite://", secrets_keys=f"{KEY_B},{KEY_A}")
    assert settings_secret(settings, sealer.seal("coturn-static-auth"), "TURN_SECRET") == "coturn-static-auth"
    cluster = make_settings(tmp_path / "door", "sqlite+aiosqlite://", bus_url="redis://127.0.0.1:6379/0")
    assert settings_secret(cluster, "given-in-clear", "TURN_SECRET") == "given-in-clear"  # no keys needed
    with pytest.raises(SecretsKeysError, match="TURN_SECRET"):
        settings_secret(make_settings(tmp_path, "sqlite+aiosqlite://", secrets_keys=KEY_B),
                        sealer.seal("x"), "TURN_SECRET")


async def test_keys_that_do_not_fit_stop_the_start_with_why(
        app_factory: Callable[..., web.Application], clock: FakeClock, database_url: str, tmp_path: Path) -> None:
    async with running(app_factory, clock, secrets_keys=KEY_A):
        pass
    with pytest.raises(SecretsKeysError, match="SECRETS_KEYS does not hold"):
        async with running(app_factory, clock, secrets_keys=KEY_B):
            pass
    with pytest.raises(SecretsKeysError, match="JWT_SECRET"):
        app_factory(secrets_keys=KEY_A, jwt_secret=Sealer([KEY_B]).seal("j" * 40))
    with pytest.raises(SecretsKeysError, match="set SECRETS_KEYS on every process"):
        app_factory(bus_url="redis://127.0.0.1:6379/0")  # processes sharing a database must share keys
    async with running(app_factory, clock, secrets_keys=f"{KEY_B},{KEY_A}"):  # the old key behind a new one
        pass

    # The command says why, without a traceback, and a supervisor does not start it again (exit 2).
    env = server_env(tmp_path / "serve", free_port(), DATABASE_URL=database_url, SECRETS_KEYS=KEY_B)
    result = await asyncio.to_thread(subprocess.run, tally("serve"), cwd=REPO_ROOT, env=env, capture_output=True,
                                     text=True, timeout=60)
    assert result.returncode == 2 and "tally: the secrets in the database are sealed with a key" in result.stderr, \
        result.stderr
    assert "Traceback" not in result.stderr
    result = await asyncio.to_thread(cli, "secrets", "rotate", DATABASE_URL=database_url, SECRETS_KEYS=KEY_B,
                                     DATA_DIR=str(tmp_path / "cli"))
    assert result.returncode == 1 and "SECRETS_KEYS does not hold" in result.stderr and "Traceback" not in result.stderr
    assert Sealer([KEY_A]).open((await stored(database_url))["site sealing-check"]) == "tallylight"  # unchanged


async def test_a_value_no_key_opens_is_never_used_as_garbage(
        app_factory: Callable[..., web.Application], clock: FakeClock, receiver: Receiver, push_service: PushService,
        database_url: str) -> None:
    """A row sealed with a key this process lacks (a key dropped before its rotation): the start-up check
    cannot see every row, so the delivery fails with why, and is tried again later; nothing is dropped."""
    stranger = Sealer([new_key()])
    async with running(app_factory, clock, secrets_keys=KEY_A) as api:
        star, _ = await make_hook(api, receiver)
        sub_id = await subscribe(api, push_service)
        await query(database_url, "UPDATE webhooks SET secret = :s", s=stranger.seal("x" * 48))
        await query(database_url, "UPDATE push_subscriptions SET auth = :a", a=stranger.seal("y" * 22))
        _, token = await api.user()
        assert (await api.call("PUT", f"/api/channels/{star}/follow", token=token))[0] == 200

        async def retried() -> bool:
            rows = await query(database_url, "SELECT last_error FROM outbox WHERE kind = 'webhook'")
            return bool(rows and rows[0][0])

        await until(retried)
        [(error,)] = await query(database_url, "SELECT last_error FROM outbox WHERE kind = 'webhook'")
        assert "webhook 1's secret is sealed with a key that SECRETS_KEYS does not hold" in error
        assert receiver.got == {}
        async with api.services.db.session() as session:
            push_jobs(session, [sub_id], Note("On air", "now", "/watch/x", "t", "normal", 60),
                      datetime.fromtimestamp(api.clock(), UTC))

        async def put_off() -> bool:
            payloads = await query(database_url, "SELECT payload FROM outbox WHERE kind = 'push'")
            return any((json.loads(p) if isinstance(p, str) else p).get("round") == 1 for (p,) in payloads)

        await until(put_off)
        assert push_service.received == [] and push_service.refused == []
        assert await query(database_url, "SELECT id FROM push_subscriptions") == [(sub_id,)]  # kept


def test_the_secrets_commands(tmp_path: Path) -> None:
    made = cli("secrets", "new-key", SECRETS_KEYS="not a key")  # works whatever SECRETS_KEYS holds
    assert made.returncode == 0 and parse_keys(made.stdout.strip()) == [made.stdout.strip()]
    key = made.stdout.strip()
    sealed = cli("secrets", "seal", stdin="hunter2-secret\n", SECRETS_KEYS=key, DATA_DIR=str(tmp_path))
    assert sealed.returncode == 0 and sealed.stdout.startswith("sealed:"), sealed.stderr
    assert Sealer([key]).open(sealed.stdout.strip()) == "hunter2-secret"
    assert "hunter2" not in sealed.stdout
    # Embedded: the key made under DATA_DIR, the one `tally serve` there uses.
    embedded = cli("secrets", "seal", stdin="pw", DATA_DIR=str(tmp_path))
    assert embedded.returncode == 0, embedded.stderr
    assert Sealer(load_or_create_keys("", tmp_path)).open(embedded.stdout.strip()) == "pw"
    assert cli("secrets", "seal", stdin="", SECRETS_KEYS=key).returncode == 2
    bad = cli("secrets", "seal", stdin="pw", SECRETS_KEYS=f"{key},nope")
    assert bad.returncode == 2 and "key 2 is not a Fernet key" in bad.stderr and "Traceback" not in bad.stderr
    shared = cli("secrets", "seal", stdin="pw", BUS_URL="redis://127.0.0.1:6379/0", DATA_DIR=str(tmp_path / "x"))
    assert shared.returncode == 2 and "set SECRETS_KEYS" in shared.stderr


def test_the_sealer_and_the_key_list(tmp_path: Path) -> None:
    sealer = Sealer([KEY_B, KEY_A])
    value = Sealer([KEY_A]).seal("s")
    assert sealer.open(value) == "s" and sealer.open("in clear") == "in clear"
    assert Sealer([KEY_B]).open(sealer.reseal(value)) == "s" and Sealer([KEY_B]).open(sealer.reseal("c")) == "c"
    assert sealer.seal("s") != sealer.seal("s")  # a fresh IV every time
    with pytest.raises(SecretsKeysError):
        sealer.open("sealed:not-a-token")
    for bad in ("abc", f"{KEY_A},{KEY_A}", "x" * 44):
        with pytest.raises(ValueError):
            parse_keys(bad)
    assert load_or_create_keys("", tmp_path) == load_or_create_keys("", tmp_path)  # made once, then kept
    assert load_or_create_keys(f"{KEY_B},{KEY_A}", tmp_path) == [KEY_B, KEY_A]


def test_a_local_cluster_gives_every_process_the_same_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "postgresql+asyncpg://postgres@127.0.0.1/x", bus_url="redis://127.0.0.1:6379/0")
    children = plan(settings, 2)
    keys = {child.env["SECRETS_KEYS"] for child in children}
    assert keys == {(tmp_path / "var" / KEY_FILE).read_text().strip()}
    given = plan(make_settings(tmp_path, "postgresql+asyncpg://postgres@127.0.0.1/x", secrets_keys=KEY_A), 1)
    assert {child.env["SECRETS_KEYS"] for child in given} == {KEY_A}


async def test_the_start_up_check_and_sealing_tell_the_database_down_from_wrong_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'tally.db'}")
    try:
        await SealedColumns(db, Sealer([KEY_A])).start()  # no tables yet: only logged
        await upgrade(db.engine)
        await SealedColumns(db, Sealer([KEY_A])).start()
        with pytest.raises(SecretsKeysError):
            await SealedColumns(db, Sealer([KEY_B])).start()
    finally:
        await db.close()
