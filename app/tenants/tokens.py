"""Access tokens from the deployment's identity provider (OIDC / OAuth 2 JWT bearer tokens).

A browser app that signs its users in with an identity provider (Keycloak, Auth0, Okta, Entra,
Cognito) sends the user's access token where a server would send an API key.
`TokenVerifier.verify` checks it and says whose it is (TokenClaims: the tenant's name, the role,
the subject, the expiry); TenantService.authenticate turns that into a Principal.

Checked, in this order: size (MAX_TOKEN_CHARS, before parsing), algorithm (RS256 or ES256
only, so neither `none` nor an HMAC "signed" with the public key gets through), signing key
(by `kid`, from the issuer's key set), signature, then exp (required), nbf, iat, iss and aud,
each with AUTH_LEEWAY_SECONDS for clock skew. Each refusal is an Unauthenticated that names
the check that failed and nothing of the keys.

The key set (JWKS) is fetched with httpx, bounded in time (FETCH_TIMEOUT) and size
(MAX_JWKS_BYTES), kept AUTH_JWKS_CACHE_SECONDS, and fetched again early when a token names a
key it does not hold (the provider rotated its keys), but at most once per
AUTH_JWKS_REFETCH_SECONDS, so tokens with made-up `kid`s cannot make us hammer the provider;
callers that need a fetch while one runs wait for that one. Keys past their cache time keep
answering while a task fetches the new set, so a slow provider delays no request that names a
key already held. A fetch that fails keeps the keys
already held (a provider outage does not sign everyone out); with none held, the caller gets
Unavailable, not Unauthenticated.

Library note: PyJWT's own PyJWKClient fetches with urllib, synchronously; on the event loop it
would stall every request while the provider answers. Only PyJWK (one key from its JSON) and
jwt.decode (the checks) come from PyJWT here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import structlog

from app.errors import Unauthenticated, Unavailable
from app.models import ROLES
from app.settings import Settings

log = structlog.get_logger(__name__)

ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_CHARS = 8 * 1024
MAX_JWKS_BYTES = 256 * 1024
MAX_TENANT_NAME = 100
MAX_SUBJECT = 255
MIN_RSA_BITS = 2048
FETCH_TIMEOUT = 5.0
LEAST_ROLE = ROLES[0]  # a token without a known role reads (docs/security.md)


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    tenant: str  # the tenant's name, from AUTH_TENANT_CLAIM
    role: str  # one of ROLES, from AUTH_ROLE_CLAIM
    subject: str  # `sub` (required): the user at the identity provider, named in audit trails
    expires_at: datetime  # `exp`


class TokenExpired(Unauthenticated):
    """The token's `exp` (plus the leeway) has passed: the client should fetch a fresh one."""


class KeySetError(Exception):
    """The key set could not be fetched or held no usable key."""


class SigningKeys:
    """The identity provider's key set, fetched and cached as the module docstring says."""

    def __init__(
        self, url: str, *, cache_seconds: float, refetch_seconds: float, timeout: float
    ) -> None:
        self.url, self.cache_seconds, self.refetch_seconds = url, cache_seconds, refetch_seconds
        self.timeout = timeout
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched_at = -math.inf  # time.monotonic() of the last fetch that succeeded
        self._tried_at = -math.inf  # ... of the last fetch, whatever came of it
        self._fetches = 0  # fetches that ended: a waiter that sees it move has its answer
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def get(self, kid: str | None) -> jwt.PyJWK:
        if self._keys is None:  # nothing held yet: this caller has to wait for the provider
            await self._refresh()
        elif time.monotonic() - self._fetched_at >= self.cache_seconds:
            self._refresh_soon()  # the held keys answer meanwhile; a slow provider stalls no one
        key = self._find(kid)
        if key is None and self._keys is not None:  # not seen yet: the provider may have rotated
            await self._refresh()
            key = self._find(kid)
        if key is not None:
            return key
        if self._keys is None:
            raise Unavailable("could not fetch the identity provider's signing keys; try again")
        raise Unauthenticated("unknown signing key")

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with suppress(asyncio.CancelledError):
                await self._background
        await self._http.aclose()

    def _refresh_soon(self) -> None:
        """Refresh expired keys in a task of their own (one at a time)."""
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._refresh())

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys or {}
        if kid is None and len(keys) == 1:  # a provider with one key may leave `kid` out
            return next(iter(keys.values()))
        return keys.get(kid)

    async def _refresh(self) -> None:
        """Fetch the key set unless a fetch started within AUTH_JWKS_REFETCH_SECONDS, or ended
        while this caller waited for the lock (then that fetch's result is the answer)."""
        seen = self._fetches
        async with self._lock:
            if self._fetches != seen or time.monotonic() - self._tried_at < self.refetch_seconds:
                return
            self._tried_at = time.monotonic()
            try:
                keys = await self._fetch()
            except Exception as exc:  # network, HTTP status, size, JSON: keep what we hold
                log.warning(
                    "auth.jwks_unavailable",
                    url=self.url,
                    error=str(exc) or type(exc).__name__,
                    keeping=len(self._keys or {}),
                )
                return
            finally:  # counted when it ends, so whoever waited meanwhile takes this answer
                self._fetches += 1
            self._keys, self._fetched_at = keys, time.monotonic()
            log.info("auth.jwks_fetched", url=self.url, keys=len(keys))

    async def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        body = bytearray()
        async with (
            asyncio.timeout(self.timeout),
            self._http.stream("GET", self.url, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise KeySetError(f"HTTP {resp.status_code}")
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySetError(f"key set over {MAX_JWKS_BYTES} bytes")
        return parse_key_set(bytes(body))


def parse_key_set(body: bytes) -> dict[str | None, jwt.PyJWK]:
    """The RS256/ES256 signing keys of a JWKS document, by `kid`; other keys are skipped."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise KeySetError("the key set is not JSON") from exc
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeySetError("the key set has no `keys` list")
    keys = {entry.get("kid"): key for entry in entries if (key := _signing_key(entry))}
    if not keys:
        raise KeySetError("the key set holds no RS256 or ES256 signing key")
    return keys


def _signing_key(entry: object) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    kty, kid = entry.get("kty"), entry.get("kid")
    if kty not in ("RSA", "EC") or (kty == "EC" and entry.get("crv") != "P-256"):
        return None
    if kid is not None and not isinstance(kid, str):
        return None
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    if key.algorithm_name not in ALGORITHMS:
        return None
    if kty == "RSA" and key.key.key_size < MIN_RSA_BITS:
        return None
    return key


class TokenVerifier:
    """Checks access tokens against one issuer, audience and key set; long-lived (it holds the
    key cache), built once by the API's lifespan."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        tenant_claim: str = "tenant",
        role_claim: str = "role",
        leeway_seconds: float = 60.0,
        cache_seconds: float = 600.0,
        refetch_seconds: float = 30.0,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self.tenant_claim, self.role_claim = tenant_claim, role_claim
        self.leeway_seconds = leeway_seconds
        self.keys = SigningKeys(
            jwks_url, cache_seconds=cache_seconds, refetch_seconds=refetch_seconds, timeout=timeout
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier AUTH_* describes, or None when tokens are off (API keys only)."""
        if not settings.token_auth_enabled():
            return None
        assert settings.auth_issuer and settings.auth_audience and settings.auth_jwks_url
        _require_safe_url(settings.auth_jwks_url)
        return cls(
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            jwks_url=settings.auth_jwks_url,
            tenant_claim=settings.auth_tenant_claim,
            role_claim=settings.auth_role_claim,
            leeway_seconds=settings.auth_leeway_seconds,
            cache_seconds=settings.auth_jwks_cache_seconds,
            refetch_seconds=settings.auth_jwks_refetch_seconds,
        )

    async def aclose(self) -> None:
        await self.keys.aclose()

    async def verify(self, token: str) -> TokenClaims:
        try:
            return await self._verify(token)
        except Unauthenticated as exc:
            log.info("auth.token_refused", reason=exc.message)
            raise

    async def _verify(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"token over {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthenticated("unsupported algorithm: tokens must be RS256 or ES256")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("malformed token")
        key = await self.keys.get(kid)
        if key.algorithm_name != alg:
            raise Unauthenticated("unsupported algorithm: the signing key is not for it")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _refusal(exc) from None
        return TokenClaims(
            tenant=self._tenant(claims),
            role=self._role(claims),
            subject=_subject(claims),
            expires_at=_expiry(claims),
        )

    def _tenant(self, claims: dict[str, Any]) -> str:
        value = claim(claims, self.tenant_claim)
        if value is None:
            raise Unauthenticated(f"token has no `{self.tenant_claim}` claim")
        if not isinstance(value, str) or not 0 < len(value) <= MAX_TENANT_NAME:
            raise Unauthenticated(f"token's `{self.tenant_claim}` claim is not a tenant name")
        return value

    def _role(self, claims: dict[str, Any]) -> str:
        """The highest known role the claim lists (a string or a list of strings); none known
        (claim missing, or only other roles): the least, LEAST_ROLE."""
        value = claim(claims, self.role_claim)
        listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        known = [r for r in listed if isinstance(r, str) and r in ROLES]
        return max(known, key=ROLES.index) if known else LEAST_ROLE


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by its name, or by a dotted path into nested objects when no claim has that
    name (Keycloak's `realm_access.roles`; Auth0's namespaced `https://x.example/role` is a
    name with dots, found as it is)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _subject(claims: dict[str, Any]) -> str:
    sub = claims["sub"]  # required above; PyJWT refuses a `sub` that is not a string
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("token has no `sub` claim")
    return sub[:MAX_SUBJECT]


def _expiry(claims: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (OverflowError, ValueError, OSError):
        raise Unauthenticated("token has an invalid `exp` claim") from None


def _refusal(exc: jwt.InvalidTokenError) -> Unauthenticated:
    """PyJWT's error as a message naming the failed check (its own text can quote claims)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenExpired("token expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return Unauthenticated("token not yet valid")
    if isinstance(exc, jwt.InvalidIssuerError):
        return Unauthenticated("wrong issuer")
    if isinstance(exc, jwt.InvalidAudienceError):
        return Unauthenticated("wrong audience")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthenticated(f"token has no `{exc.claim}` claim")
    if isinstance(exc, jwt.InvalidSignatureError):
        return Unauthenticated("invalid token signature")
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return Unauthenticated("token has an invalid `iat` claim")
    return Unauthenticated("malformed token")


def _require_safe_url(url: str) -> None:
    """The key set decides who may sign in: fetch it over https, or plain http on loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise ValueError(f"AUTH_JWKS_URL must be an https URL (plain http only on loopback): {url}")
