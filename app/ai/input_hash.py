"""A keyed fingerprint of an AI call's input, recorded in ai_usage.input_hash so recommendations
can see which inputs recur (app/ai/recommendations.py) without ever storing prompt text.

fingerprint = HMAC-SHA256(tenant key, SHA-256 of the normalised input), the digest being the
one the cache keys its entries with (app/ai/cache.py: key order and spacing do not matter).
The tenant key is HMAC-SHA256(deployment key, "ai-input:" + tenant id): equal inputs of two
tenants get unrelated fingerprints (not linkable across tenants), and without the deployment
key nobody holding only the database can test a guessed text against a fingerprint.

The deployment key is AI_INPUT_HASH_KEY, else derived from the file-URL signing secret
(FILE_URL_SECRET or `<state dir>/file-url-secret`, app/state_keys.py) under its own label.
Every process that runs AI calls must see the same key (set AI_INPUT_HASH_KEY, or
FILE_URL_SECRET, on all of them), or the same input gets several fingerprints and recurrences
are undercounted. Changing the key starts the fingerprints afresh (old rows never match new).
Where neither is set and the state dir cannot be written (the pods' read-only file system),
no fingerprints are recorded (a warning says so): AI calls never fail for want of one.
"""

from __future__ import annotations

import hashlib
import hmac

import structlog

from app.settings import Settings
from app.state_keys import file_url_key

log = structlog.get_logger(__name__)

LABEL = b"wfs ai input fingerprint v1"


def deployment_key(settings: Settings) -> bytes | None:
    """The key every AI process of this deployment fingerprints inputs with, or None when
    there is none to be had (then no fingerprints are recorded)."""
    if settings.ai_input_hash_key is not None:
        return settings.ai_input_hash_key.get_secret_value().encode()
    try:
        secret = file_url_key(settings)
    except (OSError, RuntimeError) as exc:
        log.warning("ai.input_hash.no_key", error=str(exc), hint="set AI_INPUT_HASH_KEY")
        return None
    return hmac.new(secret, LABEL, hashlib.sha256).digest()


def fingerprint(key: bytes, tenant_id: str, input_sha256: str) -> str:
    """The recorded fingerprint (64 hex chars) of an input digest for one tenant."""
    tenant_key = hmac.new(key, f"ai-input:{tenant_id}".encode(), hashlib.sha256).digest()
    return hmac.new(tenant_key, input_sha256.encode(), hashlib.sha256).hexdigest()
