"""`create_backup` and `restore_backup`: the service database and the tenant storage.

A backup is a folder: `database.dump` (pg_dump custom format, taken in an exported snapshot
whose time is the backup point), `storage.tar.gz` (app/backup/storage.py) and `manifest.json`,
written last. It is built in a hidden sibling folder and renamed into place whole.

Everything streams: pg_dump's output is summed and written a chunk at a time, a restore checks
each file's sum before reading it again. A restore refuses a schema newer than this code and a
database (or storage root) that holds anything unless forced; a forced restore keeps what it
replaces (the old schema until the restored one checks out, the old storage folder beside the
new one).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from app.backup import pgtools, storage
from app.backup.manifest import (
    CHUNK,
    DATABASE_FILE,
    STORAGE_FILE,
    BackupInvalid,
    FileSum,
    HashingWriter,
    Manifest,
)
from app.backup.repository import SET_ASIDE, BackupRepository
from app.db import SessionFactory, make_engine, make_sessionmaker
from app.errors import Conflict, Unavailable
from app.migrate import alembic_config, upgrade_async
from app.settings import Settings

Progress = Callable[[str], None]
PROGRESS_EVERY = 32 << 20  # bytes between two progress lines
_STDERR_KEPT = 4000
_LONGEST_LINE = 16 << 20


class BackupRefused(Conflict):
    """The target holds something that a backup or restore would overwrite."""


class BackupFailed(Unavailable):
    """pg_dump, pg_restore or a check after them failed; nothing was kept or replaced."""


def _quiet(_: str) -> None:
    pass


@dataclass
class RestoreReport:
    manifest: Manifest
    migrated_from: str | None = None  # the backup's revision, when restore upgraded it
    storage_kept_at: Path | None = None  # the storage folder a forced restore moved aside
    notes: list[str] = field(default_factory=list)


def app_version() -> str:
    try:
        return version("workflow-service")
    except PackageNotFoundError:
        return "unknown"


# --- backup ---------------------------------------------------------------------------------


async def create_backup(settings: Settings, target: Path, progress: Progress = _quiet) -> Manifest:
    """Back up the database and the tenant storage into the new folder `target`."""
    assert settings.database_url
    partial = await asyncio.to_thread(_partial_folder, target)
    try:
        manifest = await _back_up(settings, partial, progress)
        await asyncio.to_thread(_place, partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _partial_folder(target: Path) -> Path:
    """A hidden folder beside `target` to build the backup in; `target` must be new."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupRefused(f"{target} exists and is not empty: back up into a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def _place(partial: Path, target: Path) -> None:
    if target.exists():
        target.rmdir()  # empty (checked before)
    partial.rename(target)


async def _back_up(settings: Settings, folder: Path, progress: Progress) -> Manifest:
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            # One snapshot for pg_dump, the counts and the revision: they describe one state.
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            repo = BackupRepository(session)
            major, server_version = await repo.server_version()
            snapshot, point = await repo.export_snapshot()
            revision = await repo.revision()
            if revision is None:
                raise BackupRefused("the database has no alembic_version: not a service database")
            tool = pgtools.find("pg_dump", major, settings.pg_bin_dir)
            progress(f"database: pg_dump {tool.major} ({tool.path}), server {server_version}")
            dumped = await _dump(tool, settings.database_url, snapshot, folder, progress)
            tables = await repo.counts()
            await session.rollback()
    finally:
        await engine.dispose()
    stored_as, stored = await asyncio.to_thread(storage.back_up_storage, settings, folder, progress)
    files = {DATABASE_FILE: dumped} | ({STORAGE_FILE: stored} if stored else {})
    manifest = Manifest(
        app_version=app_version(),
        alembic_revision=revision,
        backup_point=point,
        finished_at=datetime.now(UTC),
        server_version=server_version,
        pg_dump_major=tool.major,
        temporal_namespace=settings.temporal_namespace,
        temporal_task_queue=settings.temporal_task_queue,
        tables=tables,
        storage=stored_as,
        files=files,
    )
    manifest.write(folder)
    return manifest


async def _dump(
    tool: pgtools.PgTool, url: str, snapshot: str, folder: Path, progress: Progress
) -> FileSum:
    proc = await asyncio.create_subprocess_exec(
        str(tool.path),
        "--format=custom",
        f"--snapshot={snapshot}",
        "--no-password",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=pgtools.tool_env(url),
    )
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(_tail(proc.stderr))
    writer = HashingWriter(folder / DATABASE_FILE)
    reported = 0
    try:
        while chunk := await proc.stdout.read(CHUNK):
            writer.write(chunk)
            if writer.size - reported >= PROGRESS_EVERY:
                reported = writer.size
                progress(f"database: {storage.mib(writer.size)} written")
    except BaseException:  # a full disk, a cancel: pg_dump would wait on its pipe forever
        proc.kill()
        await proc.wait()
        errors.cancel()
        writer.close()
        raise
    summed = writer.close()
    code = await proc.wait()
    if code != 0:
        raise BackupFailed(f"pg_dump exited with {code}: {await errors}")
    await errors
    progress(f"database: {storage.mib(summed.bytes)}, sha256 {summed.sha256[:12]}...")
    return summed


async def _tail(stream: asyncio.StreamReader) -> str:
    """What a tool wrote to stderr, its last few thousand characters (read to the end, so
    the tool never blocks on a full pipe)."""
    kept = b""
    while chunk := await stream.read(CHUNK):
        kept = (kept + chunk)[-_STDERR_KEPT:]
    return kept.decode(errors="replace").strip()


# --- restore --------------------------------------------------------------------------------


async def restore_backup(
    settings: Settings, source: Path, *, force: bool = False, progress: Progress = _quiet
) -> RestoreReport:
    """Restore the backup in `source` into DATABASE_URL's (empty) database and the storage
    root; then upgrade the schema if the backup is older than this code."""
    assert settings.database_url
    manifest = Manifest.read(source)
    head = _check_revision(settings.database_url, manifest.alembic_revision)
    restore_files = manifest.storage.included and settings.storage_backend == "local"
    held = restore_files and await asyncio.to_thread(storage.holds_files, settings.files_root)
    if held and not force:
        raise BackupRefused(
            f"storage root {settings.files_root} is not empty: --force moves it aside"
        )
    progress("checking the backup's files")
    await asyncio.to_thread(manifest.verify, source)
    report = RestoreReport(manifest)
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        set_aside = await _restore_database(sessions, settings, manifest, source, force, progress)
        # With --force the replaced database stays in SET_ASIDE until the storage and the
        # migration have succeeded too: if either fails, it is put back (and the storage
        # found before, if it was swapped already), so a failed restore changes nothing.
        swapped = False
        try:
            if restore_files:
                report.storage_kept_at = await asyncio.to_thread(
                    storage.restore_storage, settings.files_root, source / STORAGE_FILE, progress
                )
                swapped = True
            elif manifest.storage.backend == "s3" or settings.storage_backend == "s3":
                report.notes.append(
                    "tenant storage on S3 is not in the backup: restore the bucket's objects to "
                    "the backup point with its versioning (docs/backup.md)"
                )
            if manifest.alembic_revision != head:
                progress(f"database: migrating {manifest.alembic_revision} -> {head}")
                await upgrade_async(settings.database_url)
                report.migrated_from = manifest.alembic_revision
        except BaseException:
            if set_aside:
                await _put_back(sessions, progress)
                if swapped:
                    await asyncio.to_thread(
                        storage.undo_restore, settings.files_root, report.storage_kept_at
                    )
            raise
        if set_aside:
            async with sessions() as session:
                await BackupRepository(session).drop_set_aside()
                await session.commit()
    finally:
        await engine.dispose()
    return report


async def _put_back(sessions: SessionFactory, progress: Progress) -> None:
    """The database a forced restore set aside, back in place of the restored one."""
    async with sessions() as session:
        await BackupRepository(session).put_back()
        await session.commit()
    progress("database: restore failed; the database is as it was before")


def _check_revision(database_url: str, revision: str) -> str:
    """This code's head; BackupInvalid when the backup's schema is one this code lacks."""
    scripts = ScriptDirectory.from_config(alembic_config(database_url))
    head = scripts.get_current_head()
    assert head is not None
    try:
        known = scripts.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise BackupInvalid(
            f"the backup's schema is at revision {revision}, which this code (head {head}) "
            "does not have: it is newer; restore it with the release that made it"
        )
    return head


async def _restore_database(
    sessions: SessionFactory,
    settings: Settings,
    manifest: Manifest,
    source: Path,
    force: bool,
    progress: Progress,
) -> bool:
    """pg_restore into the empty database, checked; True when, with `force`, what the database
    held was set aside in SET_ASIDE (put back here if the restore or its check fails; the
    caller drops it once the whole restore has succeeded, or puts it back)."""
    assert settings.database_url
    async with sessions() as session:
        repo = BackupRepository(session)
        major, _ = await repo.server_version()
        tool = pgtools.find("pg_restore", max(major, manifest.pg_dump_major), settings.pg_bin_dir)
        pgtools.check_restore_target(tool, major)
        set_aside = await _empty_database(repo, force, progress)
        await session.commit()
    progress(f"database: pg_restore {tool.major} ({tool.path})")
    try:
        await _pg_restore(tool, settings.database_url, source / DATABASE_FILE, progress)
        async with sessions() as session:
            await _check_counts(BackupRepository(session), manifest)
    except BaseException:
        if set_aside:
            await _put_back(sessions, progress)
        raise
    return set_aside


async def _empty_database(repo: BackupRepository, force: bool, progress: Progress) -> bool:
    """Make sure the database is empty: True when its objects were set aside (`force`)."""
    objects = await repo.objects()
    if not objects:
        return False
    if not force:
        raise BackupRefused(
            f"the database is not empty ({objects} tables, indexes, sequences or types): restore "
            "into a new database, or --force to replace everything in it"
        )
    if not await repo.set_aside():
        raise BackupRefused(
            f"schema {SET_ASIDE} exists: an earlier forced restore stopped half way and it "
            "holds the database that restore replaced; rename it back to public, or drop it"
        )
    progress(f"database: --force: {objects} objects set aside in schema {SET_ASIDE}")
    return True


async def _pg_restore(tool: pgtools.PgTool, url: str, dump: Path, progress: Progress) -> None:
    env = pgtools.tool_env(url)
    proc = await asyncio.create_subprocess_exec(
        str(tool.path),
        "--single-transaction",  # all or nothing: a failed restore leaves the database empty
        "--exit-on-error",
        "--no-owner",  # objects belong to the user restoring, whoever owned them before
        "--no-privileges",
        "--no-password",
        "--verbose",
        f"--dbname={env.get('PGDATABASE', '')}",
        str(dump),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        limit=_LONGEST_LINE,  # an error quotes its whole statement (a long function body)
    )
    assert proc.stderr is not None
    kept: list[str] = []
    items = 0
    while line := await proc.stderr.readline():
        text = line.decode(errors="replace").rstrip()
        if "processing data for table" in text:
            items += 1
            if items % 10 == 0:
                progress(f"database: {items} tables loaded")
        kept = (kept + [text])[-20:]
    code = await proc.wait()
    if code != 0:
        raise BackupFailed(f"pg_restore exited with {code}: " + "\n".join(kept)[-_STDERR_KEPT:])
    progress(f"database: restored ({items} tables loaded)")


async def _check_counts(repo: BackupRepository, manifest: Manifest) -> None:
    found = await repo.counts()
    wrong = {
        table: (rows, found.get(table))
        for table, rows in manifest.tables.items()
        if found.get(table) != rows
    }
    if wrong:
        listed = ", ".join(
            f"{t}: {want} in the backup, {got} now" for t, (want, got) in wrong.items()
        )
        raise BackupFailed(f"the restored database does not hold what the backup does: {listed}")
