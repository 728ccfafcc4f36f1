"""Who may call the API: `wfs tenant` (create, set-tier, verify-sender, suspend), `wfs apikey`
(a tenant's keys) and `wfs platform key` (the platform operator's credentials). Each runs
with the database's credentials: these are the platform operator's commands."""

from __future__ import annotations

import uuid
from typing import Any

import click

from app.cli.common import answer_from_database, day, table
from app.tiers import TIERS


@click.group()
def tenant() -> None:
    """Manage tenants."""


@tenant.command("create")
@click.argument("name")
@click.option(
    "--tier",
    type=click.Choice(TIERS),
    default=TIERS[0],
    show_default=True,
)
def tenant_create(name: str, tier: str) -> None:
    """Create a tenant."""
    from app.tenants.service import TenantService

    async def create(sessions: Any) -> str:
        async with sessions() as session:
            t = await TenantService(session).create_tenant(name, tier)
            await session.commit()
            return f"created tenant {t.name} ({t.tier}) id={t.id}"

    answer_from_database(create)


@tenant.command("set-tier")
@click.argument("name")
# Any tier reaches TenantService.set_tier, whose refusal of an unknown tier lists the tiers.
@click.argument("tier", metavar="{" + "|".join(TIERS) + "}")
def tenant_set_tier(name: str, tier: str) -> None:
    """Move tenant NAME to a tier; platform operators only.

    Tenants cannot change their own tier through the API: only this command, run with the
    database's credentials, does. Models and the AI budget maximum follow from the next call.
    """
    from app.tenants.service import TenantService

    async def set_tier(sessions: Any) -> str:
        async with sessions() as session:
            service = TenantService(session)
            t, previous = await service.set_tier(await service.get_by_name(name), tier)
            await session.commit()
            return f"tenant {t.name}: tier {previous} -> {t.tier}"

    answer_from_database(set_tier)


@tenant.command("verify-sender")
@click.argument("tenant_ref", metavar="TENANT")
@click.argument("address")
@click.option("--remove", is_flag=True, help="Withdraw the address instead.")
def tenant_verify_sender(tenant_ref: str, address: str, remove: bool) -> None:
    """Let tenant TENANT (name or id) send email from ADDRESS; platform operators only.

    Verify out of band that the tenant owns the address first: recipients will trust it.
    """
    from app.tenants.senders import set_verified_sender

    async def verify(sessions: Any) -> str:
        async with sessions() as session:
            t, senders = await set_verified_sender(session, tenant_ref, address, remove=remove)
            await session.commit()
            return f"tenant {t.name}: verified senders {', '.join(senders) or '(none)'}"

    answer_from_database(verify)


@tenant.command("suspend")
@click.argument("name")
@click.option("--resume", is_flag=True, help="Resume the tenant instead.")
def tenant_suspend(name: str, resume: bool) -> None:
    """Suspend tenant NAME: its keys are refused and its open sockets close; its running
    executions go on. `--resume` lets its keys in again."""
    from app.tenants.service import TenantService

    async def suspend(sessions: Any) -> str:
        async with sessions() as session:
            service = TenantService(session)
            t = await service.set_suspended(await service.get_by_name(name), not resume)
            await session.commit()
            return f"tenant {t.name}: {'suspended' if t.suspended_at else 'active'}"

    answer_from_database(suspend)


@click.group()
def apikey() -> None:
    """Manage API keys."""


@apikey.command("create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option(
    "--role", type=click.Choice(["admin", "operator", "viewer"]), default="admin", show_default=True
)
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
@click.option(
    "--expires",
    default=None,
    help="When it stops working: a duration (90d, 12h, 4w) or an ISO date or date-time (UTC); "
    "at most 730 days ahead. Default: until revoked.",
)
def apikey_create(tenant_name: str, role: str, name: str, expires: str | None) -> None:
    """Create an API key; the key is printed alone on the last line, once."""
    from app.tenants.keys import parse_expiry
    from app.tenants.service import TenantService

    async def create(sessions: Any) -> str:
        async with sessions() as session:
            service = TenantService(session)
            t = await service.get_by_name(tenant_name)
            key, plaintext = await service.create_api_key(
                t,
                role=role,
                name=name,
                expires_at=parse_expiry(expires) if expires else None,
                created_by="cli",
            )
            await session.commit()
            until = f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
            made = f"created {role} key {key.prefix} ({key.id}) for tenant {t.name}{until}"
            return f"{made}\n{plaintext}"

    answer_from_database(create)


@apikey.command("list")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
def apikey_list(tenant_name: str) -> None:
    """List a tenant's keys, oldest first: id, prefix, role, state, dates, name (no secrets)."""
    from app.models.base import utcnow
    from app.tenants.keys import KeyService

    async def listing(sessions: Any) -> str:
        async with sessions() as session:
            keys = await KeyService(session).of_tenant(tenant_name)
        now = utcnow()
        rows = [("ID", "PREFIX", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED", "NAME")]
        for k in keys:
            state = (
                "revoked"
                if k.revoked_at
                else "expired"
                if k.expires_at and k.expires_at <= now
                else "active"
            )
            rows.append(
                (
                    str(k.id),
                    k.prefix,
                    k.role,
                    state,
                    day(k.created_at),
                    day(k.expires_at),
                    day(k.last_used_at),
                    repr(k.name),  # the tenant's text: no control characters on the screen
                )
            )
        return table(rows) if keys else f"tenant {tenant_name} has no API keys"

    answer_from_database(listing)


@apikey.command("revoke")
@click.argument("key_id", type=click.UUID)
def apikey_revoke(key_id: uuid.UUID) -> None:
    """Revoke key KEY_ID (from `wfs apikey list`); its open sockets close within seconds."""
    from app.tenants.keys import KeyService

    async def revoke(sessions: Any) -> str:
        async with sessions() as session:
            key = await KeyService(session).revoke_any(key_id)
            await session.commit()
            return f"revoked key {key.prefix} ({key.id}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC"

    answer_from_database(revoke)


@click.group()
def platform() -> None:
    """The platform operator's API credentials (manage tenants through GraphQL)."""


@platform.group("key")
def platform_key() -> None:
    """Create, list and revoke platform credentials."""


@platform_key.command("create")
@click.option("--name", required=True, help="Who or what holds it (shown in `list`).")
def platform_key_create(name: str) -> None:
    """Create a platform credential; printed alone on the last line, once."""
    from app.tenants.platform import PlatformKeys

    async def create(sessions: Any) -> str:
        async with sessions() as session:
            key, plaintext = await PlatformKeys(session).create(name)
            await session.commit()
            return f"created platform key {key.prefix} ({key.id})\n{plaintext}"

    answer_from_database(create)


@platform_key.command("list")
def platform_key_list() -> None:
    """List platform credentials, oldest first (no secrets)."""
    from app.tenants.platform import PlatformKeys

    async def listing(sessions: Any) -> str:
        async with sessions() as session:
            keys = await PlatformKeys(session).all()
        rows = [("ID", "PREFIX", "STATE", "CREATED", "LAST USED", "NAME")]
        for k in keys:
            state = "revoked" if k.revoked_at else "active"
            rows.append(
                (
                    str(k.id),
                    k.prefix,
                    state,
                    day(k.created_at),
                    day(k.last_used_at),
                    repr(k.name),
                )
            )
        return table(rows) if keys else "no platform keys"

    answer_from_database(listing)


@platform_key.command("revoke")
@click.argument("key_id", type=click.UUID)
def platform_key_revoke(key_id: uuid.UUID) -> None:
    """Revoke platform credential KEY_ID; refused from its next request."""
    from app.tenants.platform import PlatformKeys

    async def revoke(sessions: Any) -> str:
        async with sessions() as session:
            key = await PlatformKeys(session).revoke(key_id)
            await session.commit()
            return f"revoked platform key {key.prefix} ({key.id})"

    answer_from_database(revoke)
