"""TokenVerifier (app/tenants/tokens.py) against a fake identity provider on a real socket:
claims mapping, the key set's cache (one fetch for concurrent callers, junk `kid`s bounded,
an unreachable key set), which keys a JWKS may offer, and the settings that switch it on.
The same rules over the real API are in tests/api/test_oidc.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from app.errors import Unauthenticated, Unavailable
from app.settings import Settings
from app.tenants.tokens import MAX_TOKEN_CHARS, KeySetError, TokenVerifier, parse_key_set
from tests.fakes.idp import AUDIENCE, FakeIdentityProvider


@pytest.fixture
def idp() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider()
    provider.add_key("r1", "RS256")
    provider.add_key("e1", "ES256")
    yield provider
    provider.close()


def make_verifier(idp: FakeIdentityProvider, **overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "jwks_url": idp.jwks_url,
        "leeway_seconds": 2.0,
        "cache_seconds": 600.0,
        "refetch_seconds": 600.0,
        "timeout": 5.0,
    }
    return TokenVerifier(**(options | overrides))


@pytest.fixture
async def verifier(idp: FakeIdentityProvider) -> AsyncIterator[TokenVerifier]:
    made = make_verifier(idp)
    yield made
    await made.aclose()


async def test_claims_map_to_tenant_role_subject_and_expiry(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    exp = int(time.time()) + 100
    rs = await verifier.verify(idp.token("acme", "operator", kid="r1", sub="alice", exp=exp))
    es = await verifier.verify(idp.token("acme", ["viewer", "admin", "owner"], kid="e1"))
    assert (rs.tenant, rs.role, rs.subject) == ("acme", "operator", "alice")
    assert rs.expires_at == datetime.fromtimestamp(exp, UTC)
    assert es.role == "admin"  # the highest known role listed; unknown ones are ignored
    for role in (None, "owner", [], {"admin": True}):  # none known: the least privilege
        assert (await verifier.verify(idp.token("acme", role))).role == "viewer"


async def test_claim_names_reach_keycloak_and_auth0_shapes(idp: FakeIdentityProvider) -> None:
    keycloak = make_verifier(idp, tenant_claim="org", role_claim="realm_access.roles")
    token = idp.token(
        None, None, org="acme", realm_access={"roles": ["offline_access", "operator"]}
    )
    assert (await keycloak.verify(token)).role == "operator"
    await keycloak.aclose()
    auth0 = make_verifier(
        idp, tenant_claim="https://wfs.example/tenant", role_claim="https://wfs.example/roles"
    )
    token = idp.token(
        None, None, **{"https://wfs.example/tenant": "acme", "https://wfs.example/roles": ["admin"]}
    )
    claims = await auth0.verify(token)
    assert (claims.tenant, claims.role) == ("acme", "admin")
    with pytest.raises(Unauthenticated, match="no `https://wfs.example/tenant` claim"):
        await auth0.verify(idp.token("acme"))
    await auth0.aclose()


async def test_concurrent_callers_share_one_fetch(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    idp.delay = 0.3
    tokens = [idp.token("acme", kid="r1" if i % 2 else "e1") for i in range(20)]
    claims = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert {c.tenant for c in claims} == {"acme"}
    assert idp.requests == 1


async def test_junk_kids_refetch_at_most_once_per_interval(idp: FakeIdentityProvider) -> None:
    verifier = make_verifier(idp, refetch_seconds=2.0)
    await verifier.verify(idp.token("acme"))
    assert idp.requests == 1
    idp.add_key("junk", publish=False)
    for _ in range(10):
        with pytest.raises(Unauthenticated, match="unknown signing key"):
            await verifier.verify(idp.token("acme", kid="junk"))
    assert idp.requests == 1  # all within the interval after the first fetch
    await asyncio.sleep(2.1)
    for _ in range(10):
        with pytest.raises(Unauthenticated, match="unknown signing key"):
            await verifier.verify(idp.token("acme", kid="junk"))
    assert idp.requests == 2  # one more fetch for the ten, the interval having passed
    await verifier.aclose()


async def test_unreachable_key_set_is_unavailable_until_it_answers(
    idp: FakeIdentityProvider,
) -> None:
    verifier = make_verifier(idp, refetch_seconds=0.0, cache_seconds=0.2)
    idp.down = True
    with pytest.raises(Unavailable):
        await verifier.verify(idp.token("acme"))
    idp.down = False
    assert (await verifier.verify(idp.token("acme"))).tenant == "acme"
    idp.down = True  # now a key is held: it keeps working past the cache's age
    await asyncio.sleep(0.3)
    before = idp.requests
    assert (await verifier.verify(idp.token("acme"))).tenant == "acme"
    async with asyncio.timeout(10):  # it does ask again (in the background)...
        while idp.requests == before:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    assert (await verifier.verify(idp.token("acme"))).tenant == "acme"  # ...and keeps the keys
    await verifier.aclose()


async def test_expired_keys_answer_while_a_slow_provider_is_asked_again(
    idp: FakeIdentityProvider,
) -> None:
    """Past the cache time, a token whose key is held does not wait for the provider: with the
    provider holding every answer, verification still completes (waiting would hang here)."""
    verifier = make_verifier(idp, refetch_seconds=0.0, cache_seconds=0.2, timeout=60.0)
    assert (await verifier.verify(idp.token("acme"))).tenant == "acme"
    await asyncio.sleep(0.3)
    idp.gate.clear()
    try:
        before = idp.requests
        for _ in range(5):
            async with asyncio.timeout(10):
                assert (await verifier.verify(idp.token("acme"))).tenant == "acme"
        async with asyncio.timeout(10):  # one refresh is in flight, not one per request
            while idp.requests == before:
                await asyncio.sleep(0.05)
        assert idp.requests == before + 1
    finally:
        idp.gate.set()
    await verifier.aclose()


async def test_oversize_and_malformed_tokens_are_refused_before_any_fetch(
    idp: FakeIdentityProvider, verifier: TokenVerifier
) -> None:
    big = idp.token("acme", padding="x" * MAX_TOKEN_CHARS)
    with pytest.raises(Unauthenticated, match="token over"):
        await verifier.verify(big)
    for junk in ("abc", "a.b.c", "eyJ.eyJ.x", ""):
        with pytest.raises(Unauthenticated, match="malformed token"):
            await verifier.verify(junk)
    assert idp.requests == 0


def jwk(key: Any, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    return dict(algorithm.to_jwk(public, as_dict=True)) | extra


def test_key_set_offers_only_rs256_and_es256_signing_keys() -> None:
    good_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = {
        "keys": [
            jwk(good_rsa, kid="rsa"),
            jwk(p256, kid="p256"),
            jwk(good_rsa, kid="rs512", alg="RS512"),
            jwk(good_rsa, kid="enc", use="enc"),
            jwk(small_rsa, kid="small"),
            jwk(p384, kid="p384"),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    keys = parse_key_set(json.dumps(document).encode())
    assert sorted(k for k in keys if k) == ["p256", "rsa"]
    for body in (b"not json", b"[]", b'{"keys": {}}', json.dumps({"keys": document["keys"][2:]})):
        with pytest.raises(KeySetError):
            parse_key_set(body if isinstance(body, bytes) else body.encode())


async def test_token_settings_are_all_or_nothing() -> None:
    base = {"_env_file": None}
    assert Settings(**base).token_auth_enabled() is False  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="AUTH_AUDIENCE, AUTH_JWKS_URL not set"):
        Settings(**base, auth_issuer="https://idp.example/")  # type: ignore[arg-type]
    full = Settings(
        **base,  # type: ignore[arg-type]
        auth_issuer="https://idp.example/",
        auth_audience="wfs",
        auth_jwks_url="http://idp.example/jwks",
    )
    with pytest.raises(ValueError, match="https"):
        TokenVerifier.from_settings(full)  # a key set over plain http off loopback
    https = full.model_copy(update={"auth_jwks_url": "https://idp.example/jwks"})
    verifier = TokenVerifier.from_settings(https)
    assert verifier is not None
    await verifier.aclose()


async def test_callers_waiting_on_a_fetch_take_its_answer(idp: FakeIdentityProvider) -> None:
    """With no refetch interval at all, ten tokens naming one unknown key at once cause one
    fetch: those that waited for it take its answer rather than fetching again in turn."""
    verifier = make_verifier(idp, refetch_seconds=0.0)
    await verifier.verify(idp.token("acme"))
    before = idp.requests
    idp.add_key("junk", publish=False)
    idp.delay = 0.3  # the fetch is still running when the other nine arrive
    outcomes = await asyncio.gather(
        *(verifier.verify(idp.token("acme", kid="junk")) for _ in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(o, Unauthenticated) for o in outcomes), outcomes
    assert idp.requests == before + 1
    await verifier.aclose()
