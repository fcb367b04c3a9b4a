"""A corpus of bad requests against every endpoint: each gets a 4xx problem document and changes nothing."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select

from support import Api
from signaling.db.models import Base

SQLI = ["' OR '1'='1", "robert'); DROP TABLE users;--", "1; SELECT pg_sleep(5)", "\" OR \"\"=\"", "admin'--"]
ODD = ["", " ", "a" * 10_000, "\x00", "\x07bell", "line\nbreak", "\u202eevil", "zero\u200bwidth", "ﬁ", "𝔞𝔡𝔪𝔦𝔫",
       "ÀLICE", "аdmin", "\ud800", "🦄" * 50, "<script>alert(1)</script>", "../../etc/passwd", "%00", "null"]
WRONG_TYPES: list[Any] = [None, 1, 1.5, True, [], {}, ["a"], {"a": 1}]


async def snapshot(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    state = {}
    async with api.services.db.session() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table).order_by(*table.primary_key.columns))).all()
            state[table.name] = [tuple(row) for row in rows]
    return state


# Free text may be anything printable, so only what must be refused is sent there.
PASSWORDS = {"password", "new_password"}
BAD_PASSWORDS = ["\x00" * 8, "\x07bell1234", "\ud800" * 8, "a" * 300, "short"]
FREE_TEXT = {"display_name", "title"}
BAD_TEXT = ["\x00", "\x07bell", "\u202eevil", "zero\u200bwidth", "\ud800", "a" * 10_000]


def bodies_for(fields: dict[str, Any]) -> list[Any]:
    """Bad variants of a valid body: wrong types, odd strings, unknown fields, missing fields."""
    out: list[Any] = [{}, [], "text", 42, None, {"unknown_field": 1, **fields}]
    if len(fields) > 1 or fields.get("role"):
        out.append({k: v for k, v in list(fields.items())[1:]})
    for key in fields:
        values = WRONG_TYPES + (BAD_PASSWORDS if key in PASSWORDS else BAD_TEXT if key in FREE_TEXT else ODD + SQLI)
        if key == "tags":
            values = WRONG_TYPES[:4] + [[v] for v in ODD + SQLI] + [["t"] * 11]
        for value in values:
            if value == fields[key]:
                continue
            out.append({**fields, key: value})
    return out


VALID = {
    ("POST", "/api/auth/register"): {"username": "newcomer", "email": "new@example.com", "password": "correct horse"},
    ("POST", "/api/auth/login"): {"username": "x", "password": "y"},
    ("POST", "/api/auth/refresh"): {"refresh_token": "tlrt_x"},
    ("POST", "/api/auth/logout"): {"refresh_token": "tlrt_x"},
    ("PATCH", "/api/me"): {"display_name": "D", "email": "e@example.com", "new_password": "12345678"},  # 403 w/o current
    ("PATCH", "/api/channels/{name}"): {"title": "t", "tags": ["a"], "avatar_url": "https://x.example/a.png"},
    ("PUT", "/api/users/{username}/role"): {"role": "viewer"},
}


async def test_bad_bodies_everywhere_are_4xx_and_change_nothing(api: Api) -> None:
    admin, token = await api.user("admin")
    other, _ = await api.user()
    before = await snapshot(api)
    endpoints = {(e.method, e.path): e for e in api.services.endpoints}
    sent = 0
    for (method, template), valid in VALID.items():
        assert endpoints[(method, template)].body is not None
        path = template.format(name=admin, username=other)
        raw_bodies: list[tuple[bytes, str]] = [
            (b"{not json", "application/json"),
            (b"\xff\xfe\x00garbage", "application/json"),
            (json.dumps(valid).encode(), "text/plain"),
            (json.dumps(valid).encode(), "application/x-www-form-urlencoded"),
            (b"[" * 100_000, "application/json"),
            (json.dumps({**valid, "pad": "x" * 70_000}).encode(), "application/json"),
            (b"", "application/json"),
        ]
        for data, content_type in raw_bodies:
            status, problem, headers = await api.call(
                method, path, token=token, data=data, headers={"Content-Type": content_type}
            )
            sent += 1
            assert 400 <= status < 500, (method, template, data[:40], status, problem)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert problem["status"] == status and problem["detail"]
        for body in bodies_for(valid):
            if template == "/api/auth/login" and isinstance(body, dict) and set(body) == {"username", "password"}:
                continue  # a well-formed login with a strange name is a wrong login: 401, covered below
            status, problem, _ = await api.call(method, path, body, token)
            sent += 1
            assert 400 <= status < 500, (method, template, body if len(repr(body)) < 200 else "<long>", status, problem)
        api.clock.advance(3600)  # let rate limits recover between endpoints
    for login in SQLI + ODD:
        api.clock.advance(60)  # past the login rate limit: the input itself must be handled
        status, _, _ = await api.call("POST", "/api/auth/login", {"username": login, "password": login or "x"})
        assert status in (401, 422), (login[:20], status)
    assert sent > 350
    assert await snapshot(api) == before


async def test_bad_paths_and_queries_are_4xx_and_change_nothing(api: Api) -> None:
    _, token = await api.user("admin")
    before = await snapshot(api)
    names = [*SQLI, "a" * 3000, "%00", "%E2%80%AE", "..%2F..%2Fetc", "🦄", "%ff%fe"]
    for name in names:
        for method, template in [("GET", "/api/channels/{}"), ("PATCH", "/api/channels/{}"),
                                 ("PUT", "/api/channels/{}/follow"), ("DELETE", "/api/channels/{}/follow"),
                                 ("PUT", "/api/users/{}/role"), ("GET", "/api/auth/oidc/{}/login"),
                                 ("GET", "/api/auth/oidc/{}/callback")]:
            body = {"title": "x"} if method == "PATCH" else {"role": "viewer"} if "role" in template else None
            url = template.format(re.sub(r"[/?#]", "_", name))
            status, _, _ = await api.call(method, url, body, token, allow_redirects=False)
            assert 400 <= status < 500 or (status == 302 and "callback" in template), (method, url[:80], status)
    queries = ["live=maybe", "limit=0", "limit=101", "limit=-1", "limit=1e3", "cursor=abc", "cursor=-5",
               "q=" + "x" * 100, "q=%00", "limit=99999999999999999999999"]
    for query in queries:
        status, problem, _ = await api.call("GET", f"/api/channels?{query}")
        assert status == 422, (query, status, problem)
    for method in ("POST", "DELETE", "PATCH"):
        status, problem, _ = await api.call(method, "/api/channels", token=token)
        assert status == 405 and problem["status"] == 405
    status, problem, _ = await api.call("GET", "/api/no/such/thing")
    assert status == 404 and problem["type"].endswith("/not-found")
    assert await snapshot(api) == before
