"""What a username (and so a channel name) may be."""

from __future__ import annotations

import re

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{2,23}$")
RESERVED_NAMES = frozenset(
    "admin administrator api auth static studio watch login logout signup register settings hls whip whep ws "
    "metrics healthz readyz root system tallylight moderator support me null undefined recordings directory "
    "channels channel users user".split()
)


def username_problem(value: str) -> str | None:
    """Why `value` is not a valid username, or None when it is."""
    if not USERNAME_RE.match(value):
        return "3 to 24 characters: lowercase letters, digits and _, starting with a letter or digit"
    if value in RESERVED_NAMES:
        return "this name is reserved"
    return None
