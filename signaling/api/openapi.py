"""The OpenAPI 3.1 document, generated from the endpoint declarations and their pydantic models."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from signaling.api.endpoint import Endpoint
from signaling.api.schemas import Problem

STATUS_TEXT = {
    200: "OK", 201: "Created", 204: "No Content", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 428: "Precondition Required", 412: "Precondition Failed", 429: "Too Many Requests",
    503: "Service Unavailable",
}


def build_openapi(endpoints: list[Endpoint], version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Problem}
    for endpoint in endpoints:
        models.update(m for m in (endpoint.body, endpoint.response) if m is not None)
    mode_models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (m, "validation") for m in sorted(models, key=lambda m: m.__name__)
    ]
    _, schemas = models_json_schema(mode_models, ref_template="#/components/schemas/{model}")

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tallylight", "version": version, "description": "Live streaming platform API."},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', endpoint.path.lower()).strip('_')}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "description": f"Who may call: {endpoint.access.describe()}.",
        "x-access": endpoint.access.describe(),
    }
    if endpoint.access.min_role is not None:
        operation["security"] = [{"bearer": []}]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}
        for name, kind, text in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {"required": not endpoint.body_optional,
                                    "content": {"application/json": {"schema": _ref(endpoint.body)}}}
    elif endpoint.raw_body is not None:
        operation["requestBody"] = {"required": True, "content": {endpoint.raw_body: {"schema": {"type": "string"}}}}
    ok: dict[str, Any] = {"description": STATUS_TEXT.get(endpoint.status, "OK")}
    if endpoint.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(endpoint.response)}}
    elif "produces" in endpoint.extra:
        ok["content"] = {endpoint.extra["produces"]: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(endpoint.status): ok}
    problem = {"application/problem+json": {"schema": _ref(Problem)}}
    statuses = set(endpoint.errors) | ({400, 413, 415} if endpoint.body else set())
    if endpoint.query:
        statuses.add(400)  # a declared parameter given twice (`route`)
    for status in sorted(statuses):
        responses[str(status)] = {"description": STATUS_TEXT.get(status, "Error"), "content": problem}
    operation["responses"] = responses
    return operation
