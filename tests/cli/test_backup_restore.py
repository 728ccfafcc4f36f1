"""`wfs backup` / `wfs restore` as the operator runs them, through a disaster.

On a database of its own, with an API, a worker and an AI worker running on it: one execution
ran an AI step (ai_usage rows), two wait for an event (`wait.event`, then a `wait.timer`). The
backup is taken while they wait. After it, one waiting execution gets its event and
completes, and a new one runs to its end: both only in Temporal once the database is lost.
Then the service stops, everything in the database is dropped, the storage root deleted,
and `wfs restore` brings back every execution, event and AI usage row of the backup and the
files, and replays from Temporal's histories what happened after the backup point (the
finished execution's later events, the new execution's row and events); a second replay
changes nothing. The service starts again, and the execution still waiting gets its event and
finishes, its later events numbered after the restored ones. Last, `--force` over the database
in use: a restore that fails its check puts everything back, one that succeeds replaces it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from app.backup import storage
from app.backup.archive import BackupFailed, BackupRefused, create_backup, restore_backup
from app.backup.manifest import DATABASE_FILE, NAME, STORAGE_FILE, BackupInvalid, StorageInfo
from app.backup.replay import ReplayReport, replay_runs, visibility_query
from app.backup.repository import SET_ASIDE
from app.db import SessionFactory, make_engine, make_sessionmaker
from app.migrate import upgrade_async
from app.settings import Settings
from app.steps.backends import open_storage
from app.tenants.service import TenantService
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import Services, make_tenant, s3_settings
from tests.support import GraphQLClient, free_port
from tests.workers.test_control import start, until
from tests.workers.test_template_graph import publish
from workers.recorded import recorded_runs

WFS = Path(sys.executable).parent / "wfs"
OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"

AI = {
    "name": "summary",
    "title": "One AI step",
    "parameters": {"type": "object"},
    "steps": [
        {
            "id": "sum",
            "activity": "ai.summarize",
            "input": {"text": "Backups matter. Restores matter more.", "max_sentences": 1},
        }
    ],
}
WAITING = {
    "name": "waiting",
    "title": "Waits for an event, then a timer",
    "parameters": {"type": "object"},
    "steps": [
        {"id": "hold", "activity": "wait.event", "input": {"event": "go", "timeout_seconds": 600}},
        {"id": "pause", "activity": "wait.timer", "input": {"seconds": 0.5}, "needs": ["hold"]},
        {
            "id": "done",
            "activity": "data.transform",
            "input": {"data": {"ok": True}, "ops": []},
            "needs": ["pause"],
        },
    ],
}
QUICK = {
    "name": "quick",
    "title": "One step",
    "parameters": {"type": "object"},
    "steps": [{"id": "one", "activity": "data.transform", "input": {"data": {}, "ops": []}}],
}
EVENTS = "SELECT execution_id, seq, key, type FROM execution_events"
AI_ROWS = "SELECT id, execution_id, task, provider, cost_usd FROM ai_usage"


async def _create_db(services: Services) -> str:
    name = f"wfs_backup_{uuid.uuid4().hex[:10]}"
    plain = services.admin_db_url.replace("+asyncpg", "")
    conn = await asyncpg.connect(plain)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = plain.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


async def _drop_db(services: Services, url: str) -> None:
    name = url.partition("?")[0].rsplit("/", 1)[1]
    conn = await asyncpg.connect(services.admin_db_url.replace("+asyncpg", ""))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture
async def own(services: Services, settings: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings of a deployment of its own: database, storage root, task queues."""
    url = await _create_db(services)
    await upgrade_async(url)
    hexed = uuid.uuid4().hex[:8]
    yield settings.model_copy(
        update={
            "database_url": url,
            "storage_root": tmp_path / "storage",
            "temporal_task_queue": f"bk-{hexed}",
            "ai_task_queue": f"bk-ai-{hexed}",
            "webhook_task_queue": f"bk-wh-{hexed}",
            "api_port": free_port(),
        }
    )
    await _drop_db(services, url)


@asynccontextmanager
async def service(own: Settings, ai: bool = True) -> AsyncIterator[str]:
    """API, worker and (with `ai`) AI worker on `own`; stops them after."""
    from app.cli.runner import run_api, run_worker

    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(run_api(own, stop, ready)),
        asyncio.create_task(run_worker(own, stop)),
    ]
    if ai:
        tasks.append(asyncio.create_task(run_worker(own, stop, own.ai_task_queue)))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield f"http://127.0.0.1:{own.api_port}"
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def wfs(own: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`wfs ARGS` against the deployment, from a folder of its own (no .env)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env |= {
        "DATABASE_URL": str(own.database_url),
        "STORAGE_ROOT": str(own.storage_root),
        "TEMPORAL_ADDRESS": str(own.temporal_address),
        "TEMPORAL_TASK_QUEUE": own.temporal_task_queue,
        "LOG_LEVEL": "warning",
    }
    return subprocess.run(
        [str(WFS), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


async def rows(url: str, query: str) -> set[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return {tuple(r) for r in await conn.fetch(query)}
    finally:
        await conn.close()


def pk(global_id: str) -> str:
    """The execution's uuid in a GraphQL global id (base64 of `Execution:<uuid>`)."""
    return base64.b64decode(global_id + "=" * (-len(global_id) % 4)).decode().split(":")[1]


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def replay_again(own: Settings, since: str) -> ReplayReport:
    """What `wfs replay --since` runs, in this process."""
    assert own.database_url and own.temporal_address
    client = await Client.connect(own.temporal_address)
    query = visibility_query(datetime.fromisoformat(since), own.temporal_task_queue)
    engine = make_engine(own.database_url, pool_size=1)
    try:
        return await replay_runs(make_sessionmaker(engine), recorded_runs(client, query))
    finally:
        await engine.dispose()


async def send(client: GraphQLClient, execution_id: str, name: str) -> None:
    data = await client.data(
        (OPS / "SendExecutionEvent.graphql").read_text(),
        {"input": {"executionId": execution_id, "name": name}},
    )
    assert data["sendExecutionEvent"]["__typename"] == "Execution", data


async def test_backup_disaster_restore_replay_and_running_executions_finish(
    own: Settings, services: Services, tmp_path: Path
) -> None:
    assert own.database_url and own.storage_root
    url = own.database_url.replace("+asyncpg", "")
    engine = make_engine(own.database_url, pool_size=2)
    sessions: SessionFactory = make_sessionmaker(engine)
    try:
        tenant = await make_tenant(sessions, "pro")
        names = {s["name"]: await publish(sessions, tenant, s) for s in (AI, WAITING, QUICK)}
        async with sessions() as session:
            tenant_id = (await TenantService(session).get_by_name(tenant.name)).id
        await asyncio.to_thread(open_storage, own, str(tenant_id))  # its sample files
    finally:
        await engine.dispose()

    async with service(own) as api:
        client = GraphQLClient(api, tenant.admin)
        ai = await start(client, names["summary"])
        waiting = [await start(client, names["waiting"]) for _ in range(2)]
        assert (await wait_terminal(client, ai))["status"] == "COMPLETED"
        for execution_id in waiting:
            await until(client, execution_id, lambda e: e["currentStep"] == "hold")
        # Nothing moves now (both wait for an event): this is what the backup must hold.
        before_events = await rows(url, EVENTS)
        before_ai = await rows(url, AI_ROWS)
        before_executions = await rows(url, "SELECT id, status FROM executions")
        before_files = files(own.storage_root)
        assert len(before_ai) >= 1 and before_files  # the AI call, the tenant's sample files

        backup = tmp_path / "backup"
        done = wfs(own, "backup", str(backup), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((backup / NAME).read_text())
        assert manifest["tables"]["execution_events"] == len(before_events)
        assert manifest["tables"]["ai_usage"] == len(before_ai)

        # After the backup point: the first waiting one finishes, a new one runs to its end.
        finished_later, still_waiting = waiting
        await send(client, finished_later, "go")
        assert (await wait_terminal(client, finished_later))["status"] == "COMPLETED"
        created_later = await start(client, names["quick"])
        assert (await wait_terminal(client, created_later))["status"] == "COMPLETED"
        lost_events = await rows(url, EVENTS)

    # The disaster: everything in the database and the files are gone. (Dropping its schema
    # leaves what a new CREATE DATABASE gives, in a tenth of the time on a busy server.)
    conn = await asyncpg.connect(url)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    await conn.close()
    for path in sorted(own.storage_root.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()

    restored = wfs(own, "restore", str(backup), cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "re-created 1 executions" in restored.stdout, restored.stdout
    assert files(own.storage_root) == before_files
    after_events = await rows(url, EVENTS)
    assert before_events <= after_events
    assert await rows(url, AI_ROWS) == before_ai
    # Replayed from Temporal: the events of the one that finished after the backup and of
    # the one created after it, with their numbers; nothing invented.
    assert after_events == lost_events, restored.stdout + restored.stderr
    statuses = dict(await rows(url, "SELECT id::text, status FROM executions"))
    assert {str(i) for i, _ in before_executions} <= set(statuses)
    assert statuses[pk(finished_later)] == statuses[pk(created_later)] == "COMPLETED"
    assert statuses[pk(still_waiting)] == "RUNNING"
    # A replay again (`wfs replay`) records nothing twice.
    assert (await replay_again(own, manifest["backup_point"])).replayed == 0
    assert await rows(url, EVENTS) == after_events

    async with service(own, ai=False) as api:
        client = GraphQLClient(api, tenant.admin)
        await send(client, still_waiting, "go")
        final = await wait_terminal(client, still_waiting)
    assert final["status"] == "COMPLETED", final
    mine = pk(still_waiting)
    seqs = sorted(s for e, s, _, _ in await rows(url, EVENTS) if str(e) == mine)
    kept = max(s for e, s, _, _ in before_events if str(e) == mine)
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > kept

    # --force over a database in use: a restore that fails its check (counts that do not match
    # the dump), or later while unpacking the storage, puts everything back as it was; one
    # that succeeds replaces it.
    now = await rows(url, EVENTS)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("the storage root's parent is a file: unpacking fails")
    broken = own.model_copy(update={"storage_root": blocked / "storage"})
    with pytest.raises(OSError):
        await restore_backup(broken, backup, force=True)
    # Before: the replaced database was dropped once pg_restore had passed its check.
    assert await rows(url, EVENTS) == now
    assert await rows(url, f"SELECT 1 FROM pg_namespace WHERE nspname = '{SET_ASIDE}'") == set()
    wrong = json.loads((backup / NAME).read_text())
    wrong["tables"]["executions"] += 1
    (backup / NAME).write_text(json.dumps(wrong))
    count = len(before_executions)
    with pytest.raises(BackupFailed, match=f"executions: {count + 1} in the backup, {count} now"):
        await restore_backup(own, backup, force=True)
    assert await rows(url, EVENTS) == now
    assert await rows(url, f"SELECT 1 FROM pg_namespace WHERE nspname = '{SET_ASIDE}'") == set()
    (backup / NAME).write_text(json.dumps(manifest))
    report = await restore_backup(own, backup, force=True)
    assert await rows(url, EVENTS) == before_events
    assert report.storage_kept_at and files(report.storage_kept_at) == before_files


async def test_restore_refuses_what_it_must_not_overwrite_or_read(
    settings: Settings, sessions: SessionFactory, tmp_path: Path
) -> None:
    """A backup of a newer schema, a damaged file, a database or storage root that holds
    something: refused, each with its reason, before anything is changed. (The session's
    own database is the source: the refusals come before a restore touches a database.)"""
    backup = tmp_path / "b"
    manifest = await create_backup(settings, backup)
    assert manifest.alembic_revision and manifest.tables["alembic_version"] == 1
    assert manifest.tables["executions"] >= 0 and DATABASE_FILE in manifest.files
    with pytest.raises(BackupRefused, match="not empty"):
        await create_backup(settings, backup)  # never into a folder that holds something

    full = tmp_path / "full"
    (full / "t").mkdir(parents=True)
    (full / "t" / "kept.txt").write_text("mine")
    with pytest.raises(BackupRefused, match="storage root .* is not empty"):
        await restore_backup(settings.model_copy(update={"storage_root": full}), backup)
    elsewhere = settings.model_copy(update={"storage_root": tmp_path / "empty"})
    with pytest.raises(BackupRefused, match="database is not empty"):
        await restore_backup(elsewhere, backup)  # the session's database itself

    newer = tmp_path / "newer"
    newer.mkdir()
    for name in (NAME, *manifest.files):
        (newer / name).write_bytes((backup / name).read_bytes())
    data = json.loads((newer / NAME).read_text())
    (newer / NAME).write_text(json.dumps({**data, "alembic_revision": "9999"}))
    with pytest.raises(BackupInvalid, match="9999.*newer"):
        await restore_backup(elsewhere, newer)

    damaged = backup / DATABASE_FILE
    spoilt = bytearray(damaged.read_bytes())
    spoilt[len(spoilt) // 2] ^= 0xFF  # one flipped byte
    damaged.write_bytes(bytes(spoilt))
    with pytest.raises(BackupInvalid, match="damaged"):
        await restore_backup(elsewhere, backup)
    (backup / NAME).unlink()
    assert (full / "t" / "kept.txt").read_text() == "mine"
    with pytest.raises(BackupInvalid, match="not a backup"):
        await restore_backup(elsewhere, backup)


async def test_s3_storage_is_recorded_not_copied(
    settings: Settings, sessions: SessionFactory, tmp_path: Path
) -> None:
    """With STORAGE_BACKEND=s3 a backup names the bucket and prefix (its versioning keeps the
    objects) and holds no storage file; nothing reaches the bucket."""
    on_s3 = s3_settings(settings, "http://127.0.0.1:9", "redis://127.0.0.1:9/0")
    manifest = await create_backup(on_s3, tmp_path / "b")
    assert manifest.storage == StorageInfo(
        "s3", False, bucket=on_s3.s3_bucket, prefix=on_s3.s3_prefix
    )
    assert set(manifest.files) == {DATABASE_FILE}
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [DATABASE_FILE, NAME]


def test_storage_tar_keeps_its_files_and_leaves_out_links_leading_outside(tmp_path: Path) -> None:
    """Files, folders and a link inside come back as they were; part files of writes in
    progress are not backed up; a link pointing outside the storage root (at the host's
    files) is left out of the restore, named, and nothing else is lost."""
    root = tmp_path / "root" / "tenant"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("kept")
    (root / "docs" / ".wfs-part-123").write_text("half written")
    (root / "inside").symlink_to("docs/a.txt")
    (root / "outside").symlink_to("/etc/passwd")
    folder = tmp_path / "b"
    folder.mkdir()
    settings = Settings(_env_file=None, storage_root=tmp_path / "root")  # type: ignore[call-arg]
    info, summed = storage.back_up_storage(settings, folder, lambda _: None)
    assert info.included and info.files == 3 and summed  # a.txt and the two links
    said: list[str] = []
    storage.restore_storage(tmp_path / "restored", folder / STORAGE_FILE, said.append)
    back = tmp_path / "restored" / "tenant"
    assert (back / "docs" / "a.txt").read_text() == "kept"
    assert (back / "inside").read_text() == "kept" and (back / "inside").is_symlink()
    assert not (back / "outside").exists() and not (back / "outside").is_symlink()
    assert not (back / "docs" / ".wfs-part-123").exists()
    assert any("tenant/outside" in line for line in said)
