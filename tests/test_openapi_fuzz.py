"""Schemathesis against /api/openapi.json: whatever a client sends, the answer is never a 5xx.

The real app serves on a loopback port from an event loop in a background thread (schemathesis's
engine calls it synchronously with `requests`), on SQLite in a temporary directory. Every operation of
the served document goes through the engine's phases (probing, examples, coverage, fuzzing) twice:
anonymously (with whatever `Authorization` schemathesis makes up; no fuzzing where sign-in is needed)
and with the access token of the installation's admin, so the handlers behind the access checks are
reached too. Path parameters are
often swapped for names that exist, or nearly every request would stop at a 404. Generation is seeded
and derandomized: the same requests on every run.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import schemathesis.engine
from aiohttp import web
from hypothesis import strategies as st
from schemathesis import BaseSchema
from schemathesis.engine import events

from signaling.app import create_app
from signaling.settings import Settings
from support import make_settings

ADMIN, OTHER = "fuzzboss", "fuzzother"  # names the generator will not stumble on by itself
PASSWORD = "correct horse battery"
EXISTING = {"name": [ADMIN, OTHER], "channel": [ADMIN, OTHER], "username": [OTHER]}
HIGH = 1_000_000  # rate limits out of the way: a 429 would hide the handler behind it

# SDP offers and trickled candidates are text; schemathesis sends what it makes up for them as text/plain.
schemathesis.serializer.alias("application/sdp", "text/plain")
schemathesis.serializer.alias("application/trickle-ice-sdpfrag", "text/plain")

CONFIG: dict[str, Any] = {
    "seed": 20240611,
    "generation": {"mode": "all", "max-examples": 15, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},  # the document declares no links
    "auth": {"auto-signup": False},  # else schemathesis signs up an account of its own, with random credentials
    "workers": 1,
    "request-timeout": 10,
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        # The answers are what the document says they are: documented statuses, content types, bodies
        # and headers; an operation that needs sign-in refuses a request without (valid) credentials.
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "ignored_auth": {"enabled": True},
    },
}


class LiveServer:
    """The app on 127.0.0.1:<free port>, served by an event loop of its own in a daemon thread."""

    def __init__(self, app: web.Application) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-server", daemon=True)
        self._runner = web.AppRunner(app)
        self.url = ""

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert self._runner.addresses, "the server is not listening"
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def fuzz_settings(tmp: Path) -> Settings:
    return make_settings(
        tmp,
        f"sqlite+aiosqlite:///{tmp / 'tally.db'}",
        rate_login_per_minute=HIGH,
        rate_register_per_hour=HIGH,
        rate_stream_key_per_hour=HIGH,
        rate_whip_per_minute=HIGH,
        rate_whep_per_minute=HIGH,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    live = LiveServer(create_app(fuzz_settings(tmp_path_factory.mktemp("fuzz"))))
    live.start()
    try:
        yield live.url
    finally:
        live.stop()


def call(method: str, url: str, body: Any = None, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.request(method, url, json=body, headers=headers, timeout=10)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def sign_up(url: str) -> str:
    """The admin (the first account of a fresh installation) and one more user; the admin's access token."""
    for username in (ADMIN, OTHER):
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        user = call("POST", f"{url}/api/auth/register", body)
        assert user["role"] == ("admin" if username == ADMIN else "broadcaster")
    return str(call("POST", f"{url}/api/auth/login", {"username": ADMIN, "password": PASSWORD})["access_token"])


@pytest.fixture(scope="module")
def admin_token(server: str) -> str:
    return sign_up(server)


def _known_names(parameters: dict[str, Any] | None) -> st.SearchStrategy[dict[str, Any] | None]:
    """The generated path parameters, or the same with names that exist put in."""
    swappable = [key for key in parameters or {} if key in EXISTING]
    if parameters is None or not swappable:
        return st.just(parameters)
    known = st.fixed_dictionaries({key: st.sampled_from(EXISTING[key]) for key in swappable})
    return st.one_of(st.just(parameters), known.map(lambda names: {**parameters, **names}))


def _keeps_the_admin(context: Any, case: schemathesis.Case) -> bool:
    # Once the fuzzer has made a second admin, a role change of the first would demote the identity
    # the rest of the run acts as (names seen in responses come back as path parameters).
    role_change = case.operation.path == "/api/users/{username}/role"
    return not (role_change and (case.path_parameters or {}).get("username") == ADMIN)


def load_schema(url: str, headers: dict[str, str], config: dict[str, Any] = CONFIG) -> BaseSchema:
    schema = schemathesis.openapi.from_url(
        f"{url}/api/openapi.json", config=schemathesis.Config.from_dict({**config, "headers": headers})
    )
    schema.hook("flatmap_path_parameters")(lambda context, parameters: _known_names(parameters))
    schema.hook("filter_case")(_keeps_the_admin)
    return schema


def run(schema: BaseSchema) -> tuple[list[str], Counter[str]]:
    """Every phase of schemathesis's engine: what went wrong (a reproducing curl each), and the requests
    sent per operation."""
    problems: list[str] = []
    sent: Counter[str] = Counter()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent[event.recorder.label] += len(event.recorder.interactions)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure, curl = check.failure_info.failure, check.failure_info.code_sample
                        problems.append(f"{event.recorder.label}: {failure.title}: {failure.message}\n    {curl}")
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"schemathesis stopped: {event.exception!r}")
    return problems, sent


def operations(url: str) -> dict[str, dict[str, Any]]:
    document = requests.get(f"{url}/api/openapi.json", timeout=10).json()
    paths: dict[str, dict[str, Any]] = document["paths"]
    return {f"{method.upper()} {path}": operation for path, item in paths.items() for method, operation in item.items()}


def anonymous_config(url: str) -> dict[str, Any]:
    """Without a token, an operation that needs one answers 401 before it reads anything else: the
    coverage phase's requests (no, bad and odd credentials) say all there is to say about it."""
    signed_in = [name for name, operation in operations(url).items() if "security" in operation]
    return {**CONFIG, "operations": [{"include-name": signed_in, "phases": {"fuzzing": {"enabled": False}}}]}


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_no_request_gets_a_server_error(server: str, admin_token: str, who: str) -> None:
    if who == "admin":
        schema = load_schema(server, {"Authorization": f"Bearer {admin_token}"})
    else:
        schema = load_schema(server, {}, anonymous_config(server))
    problems, sent = run(schema)
    assert not problems, "\n".join(problems)
    every = set(operations(server)) - {"GET /api/openapi.json"}  # the one schemathesis leaves alone: its source
    assert set(sent) == every and min(sent.values()) >= 3, sent
    # The admin is still one at the end: the authenticated run was authenticated all the way through.
    assert call("GET", f"{server}/api/me", token=admin_token)["role"] == "admin"
