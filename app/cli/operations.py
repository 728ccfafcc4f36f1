"""The one-shot commands of the database's life: `wfs migrate`, `wfs seed`, `wfs backup`,
`wfs restore` and `wfs replay` (docs/backup.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from app.cli.common import load_settings, progress, run_ops, with_sessions
from app.cli.process import hard_exit
from app.settings import Settings


@click.command()
@click.option(
    "--search-attributes/--no-search-attributes",
    default=None,
    help="Also register the Temporal search attributes on TEMPORAL_NAMESPACE (default: when "
    "TEMPORAL_ADDRESS is set).",
)
def migrate(search_attributes: bool | None) -> None:
    """Apply database migrations (DATABASE_URL), then register the Temporal search attributes
    executions carry (idempotent; workers only check them)."""
    from app.migrate import upgrade
    from app.temporal import SearchAttributeError, connect, register_search_attributes

    settings = load_settings().require("database_url")
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


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
def backup(target: Path) -> None:
    """Back up the database and the tenant storage into the new folder TARGET.

    A consistent snapshot of the database (pg_dump custom format), the local storage's files
    (a tar; S3 relies on the bucket's versioning) and manifest.json (docs/backup.md). Runs
    beside a working service.
    """
    from app.backup.archive import create_backup

    settings = load_settings().require("database_url")
    manifest = run_ops(create_backup(settings, target, progress))
    rows = manifest.tables
    click.echo(
        f"backed up to {target}: schema {manifest.alembic_revision}, backup point "
        f"{manifest.backup_point:%Y-%m-%d %H:%M:%S} UTC, {rows.get('executions', 0)} executions, "
        f"{rows.get('execution_events', 0)} events, {rows.get('ai_usage', 0)} AI usage rows"
    )
    hard_exit(0)


@click.command()
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

    settings = load_settings().require("database_url")
    report = run_ops(restore_backup(settings, source, force=force, progress=progress))
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


@click.command()
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
    hard_exit(_replay(load_settings(), source, since))


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

    report = with_sessions(settings, run)
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


@click.command()
def seed() -> None:
    """Publish the standard templates and the loaded plugins' (new versions only when a spec
    changed)."""
    from app.seed import seed_templates

    settings = load_settings().require("database_url")
    published = with_sessions(settings, lambda sessions: seed_templates(sessions, settings))
    click.echo(f"standard and plugin templates seeded ({published} new versions)")
    hard_exit(0)
