"""Who created, published, shared and accepted a template is recorded for API keys and for an
identity provider's users alike (app/models/template.py, "Who created"): `key:<key id>` or
`sub:<subject>`, the same spelling as control events and API keys' `createdBy`.

A fake provider serves its key set on a real socket; the API runs with it configured.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.api.relay import from_global_id
from app.executions.control import actor_of
from app.settings import Settings
from app.tenants.service import ACTOR_CHARS, Principal, hash_key
from tests.api.test_oidc import token_settings
from tests.conftest import TenantKeys, make_tenant
from tests.fakes.idp import FakeIdentityProvider
from tests.support import GraphQLClient, own_service
from tests.templates.template_kit import accept, create, make_spec, publish, share

VIEW = """query($id: ID) { template(id: $id) {
  createdBy ownedByViewer versions { version publishedBy } } }"""


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider()
    provider.add_key("rsa-1", "RS256")
    yield provider
    provider.close()


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions: Any, idp: FakeIdentityProvider) -> AsyncIterator[str]:
    async with own_service(settings, **token_settings(idp)) as url:
        yield url


async def audit_row(sessions: Any, template_id: str, consumer: str) -> dict[str, Any]:
    """The template's four actors and key ids as stored, `consumer` the tenant it is shared
    with and that accepted it."""
    pk = from_global_id(template_id, "Template")[1]
    async with sessions() as session:
        row = await session.execute(
            text(
                "SELECT t.created_by, t.created_by_key_id, v.published_by, v.published_by_key_id,"
                " s.granted_by, s.granted_by_key_id, a.accepted_by, a.accepted_by_key_id "
                "FROM templates t JOIN template_versions v ON v.template_id = t.id "
                "JOIN tenants c ON c.name = :consumer "
                "JOIN template_shares s ON s.template_id = t.id AND s.tenant_id = c.id "
                "JOIN template_acceptances a ON a.template_id = t.id AND a.tenant_id = c.id "
                "WHERE t.id = :id AND v.version = 1"
            ),
            {"id": pk, "consumer": consumer},
        )
        return dict(row.mappings().one())


async def lifecycle(
    owner: GraphQLClient, consumer: GraphQLClient, consumer_name: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The owner creates, publishes and shares a template; the consumer accepts version 1.
    Returns the template id and what the create and the publish answered."""
    created = await create(owner, make_spec())
    assert created["__typename"] == "Template", created
    published = await publish(owner, created["id"])
    assert published["__typename"] == "Template", published
    shared = await share(owner, created["id"], [consumer_name])
    assert shared["sharedWith"] == [consumer_name], shared
    accepted = await accept(consumer, created["id"], 1)
    assert accepted["acceptedVersion"] == 1, accepted
    return created["id"], created, published


async def test_an_identity_provider_user_is_recorded_by_subject(
    api: str, idp: FakeIdentityProvider, sessions: Any
) -> None:
    acme, other = await make_tenant(sessions, "pro"), await make_tenant(sessions, "pro")
    alice = GraphQLClient(api, idp.token(acme.name, "admin", sub="alice@idp"))
    bob = GraphQLClient(api, idp.token(other.name, "admin", sub="bob@idp"))
    template_id, created, published = await lifecycle(alice, bob, other.name)

    assert created["createdBy"] == "sub:alice@idp"
    assert published["versions"][0]["publishedBy"] == "sub:alice@idp"
    assert await audit_row(sessions, template_id, other.name) == {
        "created_by": "sub:alice@idp",
        "created_by_key_id": None,
        "published_by": "sub:alice@idp",
        "published_by_key_id": None,
        "granted_by": "sub:alice@idp",
        "granted_by_key_id": None,
        "accepted_by": "sub:bob@idp",
        "accepted_by_key_id": None,
    }
    # Who in the publisher's tenant did it is the publisher's business only.
    seen = (await bob.data(VIEW, {"id": template_id}))["template"]
    assert seen["ownedByViewer"] is False and seen["createdBy"] is None
    assert seen["versions"] == [{"version": 1, "publishedBy": None}]


async def test_an_api_key_is_recorded_by_its_id(
    api: str, sessions: Any, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    template_id, created, published = await lifecycle(
        GraphQLClient(api, tenant.admin), GraphQLClient(api, other_tenant.admin), other_tenant.name
    )
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT key_hash, id FROM api_keys WHERE key_hash IN (:a, :b)"),
            {"a": hash_key(tenant.admin), "b": hash_key(other_tenant.admin)},
        )
        ids = {row.key_hash: row.id for row in rows}
    owner_key, consumer_key = ids[hash_key(tenant.admin)], ids[hash_key(other_tenant.admin)]

    assert created["createdBy"] == published["versions"][0]["publishedBy"] == f"key:{owner_key}"
    assert await audit_row(sessions, template_id, other_tenant.name) == {
        "created_by": f"key:{owner_key}",
        "created_by_key_id": owner_key,
        "published_by": f"key:{owner_key}",
        "published_by_key_id": owner_key,
        "granted_by": f"key:{owner_key}",
        "granted_by_key_id": owner_key,
        "accepted_by": f"key:{consumer_key}",
        "accepted_by_key_id": consumer_key,
    }


async def test_a_long_subject_is_cut_to_fit_the_columns(
    api: str, idp: FakeIdentityProvider, sessions: Any
) -> None:
    """A `sub` has no length limit; the audit columns hold ACTOR_CHARS (a longer value would
    fail the insert and with it the caller's create)."""
    acme = await make_tenant(sessions, "pro")
    sub = "u" * 500
    client = GraphQLClient(api, idp.token(acme.name, "admin", sub=sub))
    created = await create(client, make_spec())
    assert created["createdBy"] == f"sub:{sub}"[:ACTOR_CHARS]
    assert len(created["createdBy"]) == ACTOR_CHARS


def test_one_spelling_for_every_audit_trail() -> None:
    """Principal.actor is what templates and keys record; control events prefix the role."""
    tenant, key = uuid.uuid4(), uuid.uuid4()
    by_key = Principal(tenant, "acme", "pro", "operator", key_id=key)
    by_token = Principal(tenant, "acme", "pro", "admin", key_id=None, subject="alice@idp")
    assert by_key.actor == f"key:{key}"
    assert by_token.actor == "sub:alice@idp"
    assert actor_of(by_key) == f"operator:key:{key}"
    assert actor_of(by_token) == "admin:sub:alice@idp"
