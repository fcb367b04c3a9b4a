"""What crosses the bus between the front door and a node: refusals and principals as plain data."""

from __future__ import annotations

from typing import Any

from sfu import errors
from signaling.auth.roles import Principal, Role

# Refusals a node may answer with, by name; anything else is the node failing.
REFUSALS: dict[str, type[errors.SfuError]] = {
    cls.__name__: cls
    for cls in (errors.BadOffer, errors.UnsupportedMedia, errors.NotLive, errors.AlreadyPublishing, errors.NodeFull,
                errors.TooManyPending, errors.TooManyCandidates, errors.UnknownSession, errors.UnknownLayer)
}


def control_topic(node_id: str) -> str:
    """Where a node takes requests from front doors (`signaling.media.control`)."""
    return f"node.{node_id}.control"


def relay_topic(node_id: str) -> str:
    """Where a node takes requests from other nodes' relays (`signaling.media.relays`)."""
    return f"node.{node_id}.relay"


def refusal_out(exc: errors.SfuError) -> dict[str, Any]:
    return {"refused": type(exc).__name__, "detail": str(exc)}


def refusal_in(answer: dict[str, Any]) -> errors.SfuError | None:
    name = answer.get("refused")
    if name is None:
        return None
    detail = str(answer.get("detail", ""))[:500]
    refusal = REFUSALS.get(str(name))
    if refusal is None:  # a refusal this version does not know (a newer node): unavailable, try again
        return errors.NodeFull(f"the media node refused: {detail}")
    return refusal(detail)


def principal_out(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {"user_id": principal.user_id, "username": principal.username, "role": principal.role.label,
            "session_id": principal.session_id}


def principal_in(data: Any) -> Principal | None:
    if not isinstance(data, dict):
        return None
    return Principal(user_id=int(data["user_id"]), username=str(data["username"]), role=Role.parse(str(data["role"])),
                     session_id=str(data["session_id"]))
