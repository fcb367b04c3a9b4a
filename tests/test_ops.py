"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from support import Api


async def test_health_and_readiness(api: Api) -> None:
    status, body, _ = await api.call("GET", "/healthz")
    assert status == 200 and body == {"status": "ok", "checks": {}}
    status, body, _ = await api.call("GET", "/readyz")
    assert status == 200 and body == {"status": "ok", "checks": {"database": "ok", "bus": "ok"}}


async def test_readiness_fails_when_the_bus_is_down(api: Api) -> None:
    await api.services.bus.close()
    status, body, _ = await api.call("GET", "/readyz")
    assert status == 503 and body["checks"] == {"database": "ok", "bus": "failed: BusError"}


async def test_readiness_fails_when_the_database_is_gone(app_factory: Any, clock: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from signaling.app import SERVICES

    app = app_factory(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nothing", auto_migrate=False)
    async with TestClient(TestServer(app)) as client:
        api = Api(client, app[SERVICES], clock)
        status, body, _ = await api.call("GET", "/readyz")
    assert status == 503 and body["checks"]["database"].startswith("failed") and body["checks"]["bus"] == "ok"


async def test_metrics_count_requests_by_route_template_and_status(api: Api) -> None:
    name, _ = await api.user()
    await api.call("GET", f"/api/channels/{name}")
    await api.call("GET", "/api/channels/nobody_at_all")
    status, text, headers = await api.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = text.decode().splitlines()
    assert 'tally_http_requests_total{method="GET",route="/api/channels/{name}",status="200"} 1.0' in lines
    assert 'tally_http_requests_total{method="GET",route="/api/channels/{name}",status="404"} 1.0' in lines
    assert 'tally_http_requests_total{method="POST",route="/api/auth/register",status="201"} 1.0' in lines
    assert any(line.startswith('tally_http_request_duration_seconds_bucket{le="0.005",method="GET"') for line in lines)
    assert not any(name in line for line in lines)  # no series per channel


async def test_openapi_describes_every_endpoint_and_is_valid(api: Api) -> None:
    status, document, _ = await api.call("GET", "/api/openapi.json")
    assert status == 200
    validate(document)
    for endpoint in api.services.endpoints:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["summary"] and operation["x-access"]
        if endpoint.body is not None:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]
        if endpoint.access.min_role is not None:
            assert operation["security"] == [{"bearer": []}]
    register = document["components"]["schemas"]["RegisterIn"]
    assert register["additionalProperties"] is False and set(register["required"]) == {"username", "email", "password"}


async def test_pages_are_served_with_a_strict_content_security_policy(api: Api) -> None:
    status, _, headers = await api.call("GET", "/")
    assert status == 200 and "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
