"""`wfs dev`'s demo tenants (app/seed.py): a saved demo key is reused while it is stored,
unrevoked and unexpired, also while its tenant is suspended, so repeated starts do not pile up
keys until the live-key cap breaks `wfs dev`; a revoked one is replaced."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from app.models import ApiKey, Tenant
from app.seed import DEMO_KEYS_FILE, seed_demo_tenants
from app.tenants.keys import KeyService
from app.tenants.service import TenantService, hash_key


async def demo_key_count(sessions, name: str) -> int:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        found = await session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(Tenant.name == name)
        )
    return int(found or 0)


async def set_suspended(sessions, name: str, suspended: bool) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        service = TenantService(session)
        await service.set_suspended(await service.get_by_name(name), suspended)
        await session.commit()


async def test_demo_keys_are_reused_while_valid_even_for_a_suspended_tenant(
    sessions, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = await seed_demo_tenants(sessions, tmp_path)
    assert json.loads((tmp_path / DEMO_KEYS_FILE).read_text()) == first
    await set_suspended(sessions, "demo-free", True)
    try:
        for _ in range(3):  # three more starts of wfs dev
            assert await seed_demo_tenants(sessions, tmp_path) == first
        assert await demo_key_count(sessions, "demo-free") == 1
    finally:
        await set_suspended(sessions, "demo-free", False)

    # A revoked demo key is replaced (and the replacement is kept from then on).
    async with sessions() as session:
        stored = await session.scalar(
            select(ApiKey.id).where(ApiKey.key_hash == hash_key(first["demo-pro"]))
        )
        await KeyService(session).revoke_any(stored)
        await session.commit()
    second = await seed_demo_tenants(sessions, tmp_path)
    assert second["demo-pro"] != first["demo-pro"]
    assert {n: k for n, k in second.items() if n != "demo-pro"} == {
        n: k for n, k in first.items() if n != "demo-pro"
    }
    assert await seed_demo_tenants(sessions, tmp_path) == second
