"""`wfs`: api, worker, dev, migrate, seed, schema, tenant create/set-tier/verify-sender,
template reviews/approve/reject, apikey create/list/revoke, platform key create/list/revoke."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from app.cli.process import hard_exit
from app.db import make_engine, make_sessionmaker
from app.errors import DomainError
from app.log_config import configure
from app.migrate import upgrade
from app.settings import Settings
from app.tiers import TIERS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "graphql" / "schema.graphql"


def _settings(**overrides: Any) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure(settings.log_level, settings.log_json)
    return settings


def _serving(**overrides: Any) -> Settings:
    """Settings of a long-running role: logging, and tracing when OTEL_* asks for it."""
    from app import tracing

    settings = _settings(**overrides)
    tracing.configure(settings)
    return settings


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    code = 0
    try:
        asyncio.run(runner())
    except Exception as exc:  # report and exit non-zero rather than dump a traceback
        click.echo(f"error: {exc}", err=True)
        code = 1
    hard_exit(code)


@click.group()
def cli() -> None:
    """workflow-service command line."""


@cli.command()
@click.option("--host", default=None, help="Bind address (API_HOST).")
@click.option("--port", type=int, default=None, help="Port (API_PORT, default 8000).")
def api(host: str | None, port: int | None) -> None:
    """Run the GraphQL API server."""
    from app.cli.runner import run_api

    settings = _serving(api_host=host, api_port=port).require()
    _run_until_signal(lambda stop: run_api(settings, stop))


@cli.command()
@click.option(
    "--queue",
    default=None,
    help="Task queue (TEMPORAL_TASK_QUEUE, default wfs-main; AI_TASK_QUEUE `ai` or "
    "WEBHOOK_TASK_QUEUE `webhooks` for those workers).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve /metrics, wfs_* and temporal_* series (WORKER_METRICS_PORT).",
)
def worker(queue: str | None, metrics_port: int | None) -> None:
    """Run a Temporal worker for template workflows and their activities."""
    from prometheus_client import start_http_server

    from app.cli.runner import run_worker

    settings = _serving(worker_metrics_port=metrics_port).require()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    _run_until_signal(lambda stop: run_worker(settings, stop, queue))


@cli.command()
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=Path(".wfs"), show_default=True
)
@click.option("--port", type=int, default=8000, show_default=True, help="API port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--fake-llm",
    is_flag=True,
    help="Serve OpenAI and Anthropic from a local fake (no keys needed) to try the AI path.",
)
@click.option(
    "--processes",
    envvar="DEV_PROCESSES",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="1: API and workers in this process; 2: API | all workers; 3: API | worker | "
    "AI and webhook workers; more: extra main-queue workers.",
)
def dev(state_dir: Path, port: int, host: str, fake_llm: bool, processes: int) -> None:
    """Start everything not configured (PostgreSQL, Valkey, Temporal), migrate, seed, serve."""
    from app.cli.dev import run_dev

    settings = _serving(state_dir=state_dir, api_port=port, api_host=host)
    hard_exit(run_dev(settings, fake_llm=fake_llm, processes=processes))


@cli.command()
def migrate() -> None:
    """Apply database migrations (DATABASE_URL)."""
    settings = _settings().require("database_url")
    assert settings.database_url
    upgrade(settings.database_url)
    click.echo("migrated to head")
    hard_exit(0)


@cli.command()
def seed() -> None:
    """Publish the standard templates (new versions only when a spec changed)."""
    from app.seed import seed_templates

    settings = _settings().require("database_url")
    published = _with_sessions(settings, seed_templates)
    click.echo(f"standard templates seeded ({published} new versions)")
    hard_exit(0)


@cli.command()
@click.option("--output", type=click.Path(path_type=Path), default=SCHEMA_PATH, show_default=True)
def schema(output: Path) -> None:
    """Write the GraphQL SDL (graphql/schema.graphql)."""
    from app.api.schema import build_schema

    output.write_text(build_schema().as_str() + "\n")
    click.echo(f"wrote {output}")


@cli.group()
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

    click.echo(_with_sessions(_settings().require("database_url"), create))
    hard_exit(0)


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

    click.echo(_with_sessions(_settings().require("database_url"), set_tier))
    hard_exit(0)


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

    click.echo(_with_sessions(_settings().require("database_url"), verify))
    hard_exit(0)


@cli.group()
def template() -> None:
    """Review tenants' templates for the public catalog (platform operators only)."""


@template.command("reviews")
def template_reviews() -> None:
    """List versions waiting for review, oldest first: what each would let others run, and
    the title, description, tags and category every tenant would read and search."""
    from app.templates.review import CatalogReview

    async def pending(sessions: Any) -> str:
        async with sessions() as session:
            found = await CatalogReview(session).pending()
        lines = []
        for p in found:
            lines += [
                f"{p.template_id}  {p.publisher}/{p.name}  v{p.version}  "
                + _summary(p.capabilities),
                # repr: the tenant's text cannot add lines or terminal control sequences to
                # the operator's screen (newlines, ESC, bidi overrides show escaped).
                f"    title: {p.title!r}",
                f"    description: {p.description!r}",
                f"    tags: {p.tags!r}",
                f"    category: {p.category!r}",
            ]
        return "\n".join(lines) or "no template waits for review"

    click.echo(_with_sessions(_settings().require("database_url"), pending))
    hard_exit(0)


@template.command("approve")
@click.argument("template_id", type=click.UUID)
@click.argument("version", type=int)
def template_approve(template_id: uuid.UUID, version: int) -> None:
    """Put VERSION of template TEMPLATE_ID in the public catalog (its public version).

    Read its capabilities (`wfs template reviews`) and spec first: every tenant may run it.
    """
    from app.templates.review import CatalogReview

    async def approve(sessions: Any) -> str:
        async with sessions() as session:
            t = await CatalogReview(session).approve(template_id, version)
            await session.commit()
            return f"template {t.name} ({t.id}): v{version} approved, public v{t.public_version}"

    click.echo(_with_sessions(_settings().require("database_url"), approve))
    hard_exit(0)


@template.command("reject")
@click.argument("template_id", type=click.UUID)
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Shown to the owner on the version.")
def template_reject(template_id: uuid.UUID, version: int, reason: str) -> None:
    """Keep VERSION of template TEMPLATE_ID out of the public catalog, with a reason."""
    from app.templates.review import CatalogReview

    async def reject(sessions: Any) -> str:
        async with sessions() as session:
            t = await CatalogReview(session).reject(template_id, version, reason)
            await session.commit()
            return f"template {t.name} ({t.id}): version {version} rejected"

    click.echo(_with_sessions(_settings().require("database_url"), reject))
    hard_exit(0)


def _summary(capabilities: Any) -> str:
    """One line of what a version does: activities, then what the operator looks for."""
    flags = [
        name
        for name, on in (
            ("sends mail", capabilities.sends_mail),
            ("reads files", capabilities.reads_files),
            ("writes files", capabilities.writes_files),
            ("uses AI", capabilities.uses_ai),
        )
        if on
    ]
    if capabilities.calls_hosts:
        flags.append("calls " + ",".join(capabilities.calls_hosts))
    effects = "; ".join(flags) or "no mail, files, hosts or AI"
    return f"[{', '.join(capabilities.activities)}] {effects}"


@cli.group()
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

    click.echo(_with_sessions(_settings().require("database_url"), create))
    hard_exit(0)


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
                    _day(k.created_at),
                    _day(k.expires_at),
                    _day(k.last_used_at),
                    repr(k.name),  # the tenant's text: no control characters on the screen
                )
            )
        return _table(rows) if keys else f"tenant {tenant_name} has no API keys"

    click.echo(_with_sessions(_settings().require("database_url"), listing))
    hard_exit(0)


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

    click.echo(_with_sessions(_settings().require("database_url"), revoke))
    hard_exit(0)


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

    click.echo(_with_sessions(_settings().require("database_url"), suspend))
    hard_exit(0)


@cli.group()
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

    click.echo(_with_sessions(_settings().require("database_url"), create))
    hard_exit(0)


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
                    _day(k.created_at),
                    _day(k.last_used_at),
                    repr(k.name),
                )
            )
        return _table(rows) if keys else "no platform keys"

    click.echo(_with_sessions(_settings().require("database_url"), listing))
    hard_exit(0)


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

    click.echo(_with_sessions(_settings().require("database_url"), revoke))
    hard_exit(0)


def _day(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at else "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _with_sessions(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        assert settings.database_url
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            return await fn(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        click.echo(f"error: {exc.message}", err=True)
        hard_exit(1)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        hard_exit(1)
    except ValidationError as exc:  # the settings refused the environment: say why, briefly
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        click.echo(f"error: invalid configuration: {problems}", err=True)
        hard_exit(1)
