"""Roles, ordered: each one may do what the ones below it may."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    VIEWER = 1
    BROADCASTER = 2
    MODERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Role:
        return cls[label.upper()]


ROLE_LABELS = tuple(role.label for role in Role)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, as taken from a verified access token and the current user row."""

    user_id: int
    username: str
    role: Role
    session_id: str

    def at_least(self, role: Role) -> bool:
        return self.role >= role
