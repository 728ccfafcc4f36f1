"""Seed the standard (PUBLIC) templates and, for `wfs dev`, one demo tenant per tier.

Only hashes of API keys are stored, so the demo keys' plaintext is kept in the dev state dir
(`demo-keys.json`, never in the database) so that a second `wfs dev` prints keys that still work.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from app.db import SessionFactory
from app.errors import Unauthenticated
from app.templates.service import TemplateService
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import TenantService
from app.tiers import TIERS

log = structlog.get_logger(__name__)
DEMO_KEYS_FILE = "demo-keys.json"
SAMPLES = Path(__file__).resolve().parent / "templates" / "samples"


async def seed_templates(sessions: SessionFactory) -> int:
    """Publish each standard template; returns how many new versions were published."""
    published = 0
    async with sessions() as session:
        service = TemplateService(session)
        for spec in STANDARD_TEMPLATES:
            _, _, new = await service.publish(spec, tenant_id=None, visibility="PUBLIC")
            published += int(new)
        await session.commit()
    return published


def seed_sample_files(files_root: Path, tenant_id: str) -> list[str]:
    """Put the sample documents the standard templates' example params read into a tenant's
    storage (`samples/`), leaving files that are already there alone."""
    target = files_root / tenant_id / "samples"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(SAMPLES.iterdir()):
        path = target / source.name
        if not path.exists():
            path.write_bytes(source.read_bytes())
            written.append(f"samples/{source.name}")
    return written


async def seed_demo_tenants(
    sessions: SessionFactory, state_dir: Path, files_root: Path | None = None
) -> dict[str, str]:
    """One tenant per tier (`demo-<tier>`) with an admin key and, given files_root, the
    sample files in its storage; returns tenant name -> key."""
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
            if files_root is not None:
                seed_sample_files(files_root, str(tenant.id))
            if key is not None:
                try:
                    principal = await service.authenticate(f"Bearer {key}")
                    if principal.tenant_name == name:
                        keys[name] = key
                        continue
                except Unauthenticated:
                    pass
            _, keys[name] = await service.create_api_key(tenant, role="admin", name="demo")
        await session.commit()
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys
