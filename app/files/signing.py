"""Short-lived signed download URLs: `/files/<token>`, the token naming tenant, path and expiry
under an HMAC-SHA256 of the server's secret.

The token is the credential (a browser's link or `<a download>` sends no Authorization
header), so it is short-lived (FILE_URL_TTL_SECONDS) and names one file of one tenant. The
secret is FILE_URL_SECRET, or one made on first use in `<state dir>/file-url-secret` (mode
0600): right for `wfs dev` and one API replica; several replicas need FILE_URL_SECRET set, or
a URL signed by one is refused by the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app.errors import Forbidden
from app.settings import Settings

SECRET_FILE = "file-url-secret"
MAX_TOKEN_CHARS = 4096  # a path is at most 1,024 characters; anything longer is not ours


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: reading `path` in the storage of `tenant_id`."""

    token: str
    tenant_id: str
    path: str
    expires: int  # POSIX seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


KEY_BYTES = 32


def _read_key(path: Path) -> bytes | None:
    """The key in `path`, or None when it is missing or not exactly KEY_BYTES (an empty key
    would let anyone sign download URLs)."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _write_key(path: Path, replace: bool) -> None:
    """Write a fresh key to a temp file, fsync it, then move it into place in one step, so
    `path` never holds a partial key. Without `replace` an existing file wins (os.link fails)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_bytes(KEY_BYTES).hex())
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # a process racing this one made it first: everybody uses that one
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


@cache  # only a valid key is ever returned, so only a valid key is ever cached
def _state_secret(state_dir: Path) -> bytes:
    path = state_dir / SECRET_FILE
    if (key := _read_key(path)) is not None:
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    # Missing: create it. Present but not a whole key (a crash of an older version between
    # create and write): replace it; nothing valid was ever signed with it.
    _write_key(path, replace=path.exists())
    if (key := _read_key(path)) is None:
        raise RuntimeError(f"{path} does not hold a {KEY_BYTES}-byte hex key: delete it")
    return key


def secret_key(settings: Settings) -> bytes:
    if settings.file_url_secret is not None:
        return settings.file_url_secret.get_secret_value().encode()
    return _state_secret(settings.state_dir.resolve())


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(settings: Settings, tenant_id: str, path: str, now: float | None = None) -> Grant:
    """A token for `path` of `tenant_id` that works for FILE_URL_TTL_SECONDS from `now`."""
    expires = int(now if now is not None else time.time()) + settings.file_url_ttl_seconds
    payload = _b64(json.dumps([tenant_id, path, expires]).encode())
    return Grant(f"{payload}.{_mac(secret_key(settings), payload)}", tenant_id, path, expires)


def verify(settings: Settings, text: str, now: float | None = None) -> Grant:
    """The grant a token carries, or Forbidden when it is malformed, forged or expired."""
    payload, _, mac = text.partition(".")
    if len(text) > MAX_TOKEN_CHARS or not hmac.compare_digest(
        mac.encode(), _mac(secret_key(settings), payload).encode()
    ):
        raise Forbidden("invalid download URL")
    try:
        tenant_id, path, expires = json.loads(_unb64(payload))
    except (ValueError, TypeError) as exc:  # a valid MAC never signed this; still, no 500
        raise Forbidden("invalid download URL") from exc
    if (now if now is not None else time.time()) >= expires:
        raise Forbidden("download URL expired: ask for a new one")
    return Grant(text, str(tenant_id), str(path), int(expires))
