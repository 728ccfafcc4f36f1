"""Webhook signing secrets at rest: encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from
`cryptography`) under WEBHOOK_SECRET_KEY, so a database dump or a backup does not hand out the
keys that sign tenants' deliveries.

WEBHOOK_SECRET_KEY is a Fernet key: 32 random bytes in url-safe base64, 44 characters (make one
with `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
Unset, one is made on first use in `<state dir>/webhook-secret-key` (mode 0600): right for
`wfs dev` and one machine. The API (which encrypts) and the webhook workers (which decrypt) on
several machines need it set, to one value. Losing the key loses every webhook's secret: the
webhooks must then be created anew. A stored value that still starts with `whsec_` was written
before encryption (by an older process during a rolling upgrade) and is used as it is.
"""

from __future__ import annotations

import binascii
import os
import secrets
from functools import cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.settings import Settings

KEY_FILE = "webhook-secret-key"
PLAIN_PREFIX = "whsec_"


class SecretUnreadable(Exception):
    """A stored secret that this key does not open (WEBHOOK_SECRET_KEY changed?)."""


def _fernet(key: bytes, source: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(
            f"{source} is no Fernet key: 32 random bytes in url-safe base64 (44 characters)"
        ) from exc


@cache
def _state_key(state_dir: Path) -> bytes:
    """The key in `state_dir`, made first when there is none. Written whole or not at all:
    a temporary file, fsynced, then linked into place; a link, unlike a rename, never
    replaces a key another process made meanwhile (secrets sealed with it would be lost), so
    both processes end up with the one that won."""
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = state_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            directory = os.open(state_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


class SecretBox:
    """Seals secrets for the database and opens them for signing."""

    def __init__(self, settings: Settings) -> None:
        if settings.webhook_secret_key is not None:
            key = settings.webhook_secret_key.get_secret_value().encode()
            self._fernet = _fernet(key, "WEBHOOK_SECRET_KEY")
        else:
            path = settings.state_dir.resolve()
            self._fernet = _fernet(_state_key(path), str(path / KEY_FILE))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if stored.startswith(PLAIN_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken as exc:
            raise SecretUnreadable(
                "the webhook's secret does not open with this WEBHOOK_SECRET_KEY"
            ) from exc
