"""Secrets at rest: values sealed with Fernet (AES-128-CBC with HMAC-SHA256, `cryptography`) under the
installation's keys, so that a copy of the database (a backup, a replica) or of an env file does not
give away what the service must be able to read back: webhook secrets, push subscriptions' auth
secrets, the VAPID key, and secret settings (JWT_SECRET, TURN_SECRET, OIDC client secrets, the SMTP
password) when the operator gives them sealed.

A sealed value is `sealed:<Fernet token>`; a value without the prefix is plaintext (a row written before
sealing, or a setting given in clear) and is read as it is.

SECRETS_KEYS lists Fernet keys, newest first: the first seals, every one opens (MultiFernet). Rotation
is putting a new key first, `tally secrets rotate` (every sealed row re-sealed under it), then dropping
the old one. Empty, the embedded one-process mode keeps a generated key in DATA_DIR/secrets-keys;
processes that share a database through a shared bus (the distributed mode) must be given the same
SECRETS_KEYS, and refuse to start without it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bus import is_shared

if TYPE_CHECKING:
    from signaling.settings import Settings

PREFIX = "sealed:"
KEY_FILE = "secrets-keys"


class SecretsKeysError(Exception):
    """The keys cannot do what is needed: a sealed value none of them opens, or a cluster without keys."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def new_key() -> str:
    """A fresh key for SECRETS_KEYS."""
    return Fernet.generate_key().decode()


def parse_keys(text: str) -> list[str]:
    """The keys of a SECRETS_KEYS value (comma-separated, newest first; a key file may hold one a line);
    a ValueError says what is wrong."""
    keys = [part for part in re.split(r"[,\s]+", text) if part]
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(f"SECRETS_KEYS: key {n} is not a Fernet key (32 bytes in URL-safe base64; "
                             "`tally secrets new-key` makes one)") from None
    if len(set(keys)) != len(keys):
        raise ValueError("SECRETS_KEYS names a key twice")
    return keys


def load_or_create_keys(configured: str, data_dir: Path) -> list[str]:
    """The configured keys, or the ones kept under the data directory (a key is generated there once)."""
    if configured.strip():
        return parse_keys(configured)
    path = data_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
        draft.touch(mode=0o600)
        draft.write_text(new_key() + "\n")
        try:
            os.link(draft, path)  # all at once, and never over a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        return parse_keys(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class Sealer:
    """Seals strings under the newest key and opens them under any key."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a sealer needs at least one key")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, value: str) -> str:
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, value: str, what: str = "a secret in the database") -> str:
        """The plaintext of a sealed value; a value in clear (written before sealing) as it is."""
        if not is_sealed(value):
            return value
        try:
            return self._fernet.decrypt(value.removeprefix(PREFIX).encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise SecretsKeysError(
                f"{what} is sealed with a key that SECRETS_KEYS does not hold (or is damaged): give this process "
                "the keys the others use, keeping an old key after the new one until `tally secrets rotate` has run"
            ) from None

    def reseal(self, value: str, what: str = "a secret in the database") -> str:
        """The value sealed under the newest key (a value in clear is sealed)."""
        if not is_sealed(value):
            return self.seal(value)
        try:
            return PREFIX + self._fernet.rotate(value.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            self.open(value, what)  # raises, saying why
            raise

    def open_setting(self, value: str, name: str) -> str:
        """A secret setting's value (`name` as the operator spells it), opened when it was given sealed."""
        return self.open(value, name)


def sealer_for(settings: Settings) -> Sealer:
    """The sealer of a process with these settings (SECRETS_KEYS, or the key kept under DATA_DIR)."""
    if not settings.secrets_keys.strip() and is_shared(settings.bus_url):
        kept = settings.data_dir / KEY_FILE
        raise SecretsKeysError(
            "with a shared BUS_URL, processes share one database and must seal with the same keys: set SECRETS_KEYS "
            "on every process (`tally secrets new-key` makes one"
            + (f"; this process sealed with the one in {kept} before)" if kept.exists() else ")")
        )
    try:
        return Sealer(load_or_create_keys(settings.secrets_keys, settings.data_dir))
    except ValueError as exc:  # a key file someone edited
        raise SecretsKeysError(str(exc)) from None


def settings_secret(settings: Settings, value: str, name: str) -> str:
    """`value` of the secret setting `name` (like TURN_SECRET), opened when the operator gave it sealed.

    A value in clear is returned as it is, without looking for keys."""
    if not is_sealed(value):
        return value
    return sealer_for(settings).open_setting(value, name)
