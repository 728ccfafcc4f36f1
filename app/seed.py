"""Seed the standard (PUBLIC) templates and, for `wfs dev`, one demo tenant per tier.

Only hashes of API keys are stored, so the demo keys' plaintext is kept in the dev state dir
(`demo-keys.json`, never in the database) so that a second `wfs dev` prints keys that still work.
A saved key is kept while its hash is stored, unrevoked and unexpired, whatever its tenant's
state: a suspended demo tenant keeps its key (refused until resumed) rather than gaining a new
one at every start, which would reach the live-key cap and break `wfs dev`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import structlog

from app.db import SessionFactory
from app.models.base import utcnow
from app.plugins.registry import activate as activate_plugins
from app.plugins.registry import active as active_plugins
from app.settings import Settings
from app.steps.backends import open_storage
from app.templates.service import TemplateService
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import TenantService, hash_key
from app.tiers import TIERS

log = structlog.get_logger(__name__)
DEMO_KEYS_FILE = "demo-keys.json"


async def seed_templates(sessions: SessionFactory, settings: Settings | None = None) -> int:
    """Publish each standard template and each loaded plugin's (given settings, the plugins
    PLUGINS_ENABLED names are loaded first); returns how many new versions were published.
    A plugin's templates belong to the platform, like the standard ones; a tenant runs them
    while the plugin is enabled for it."""
    # Reading manifests starts child processes: off the event loop.
    registry = (
        await asyncio.to_thread(activate_plugins, settings)
        if settings is not None
        else active_plugins()
    )
    published = 0
    async with sessions() as session:
        service = TemplateService(session)
        for spec in [*STANDARD_TEMPLATES, *registry.templates()]:
            _, _, new = await service.publish(spec, tenant_id=None, visibility="PUBLIC")
            published += int(new)
        await session.commit()
    return published


def seed_sample_files(settings: Settings, tenant_id: str) -> list[str]:
    """Put the sample documents the standard templates' example params read into a tenant's
    storage (`samples/`, on the configured backend), leaving files that are already there
    alone; returns the paths written. Any tenant's storage gets them when first opened
    (app/steps/tenant_storage.py); `wfs dev` calls this so the demo tenants' storage holds
    them before anything runs."""
    return open_storage(settings, tenant_id).seed_samples()


async def seed_demo_tenants(
    sessions: SessionFactory, state_dir: Path, settings: Settings | None = None
) -> dict[str, str]:
    """One tenant per tier (`demo-<tier>`) with an admin key and, given settings, the sample
    files in its storage; returns tenant name -> key."""
    path = state_dir / DEMO_KEYS_FILE
    try:
        saved: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    keys: dict[str, str] = {}
    async with sessions() as session:
        service = TenantService(session)
        for tier in TIERS:
            name = f"demo-{tier}"
            key = saved.get(name)
            tenant = await service.repo.by_name(name) or await service.create_tenant(name, tier)
            if settings is not None:
                await asyncio.to_thread(seed_sample_files, settings, str(tenant.id))
            if tenant.suspended_at is not None:
                log.warning("seed.demo_tenant_suspended", tenant=name)
            if key is not None and await _still_valid(service, key, tenant.id):
                keys[name] = key
                continue
            _, keys[name] = await service.create_api_key(tenant, role="admin", name="demo")
        await session.commit()
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys


async def _still_valid(service: TenantService, key: str, tenant_id: uuid.UUID) -> bool:
    """Whether a saved plaintext is the tenant's stored key, neither revoked nor expired."""
    found = await service.repo.key_by_hash(hash_key(key))
    if found is None:
        return False
    stored, tenant = found
    live = stored.expires_at is None or stored.expires_at > utcnow()
    return tenant.id == tenant_id and stored.revoked_at is None and live
