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
import time
from dataclasses import dataclass

from app.errors import Forbidden
from app.settings import Settings
from app.state_keys import file_url_key as secret_key

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
