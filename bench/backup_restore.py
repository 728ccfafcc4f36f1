"""`wfs backup` and `wfs restore` on a database holding N executions (100,000 by default; ten
events each, AI usage rows; bench/analytics.py's data), side by side with plain pg_dump and
pg_restore of the same database with the same binaries: what the snapshot, the row counts, the
checksums and the manifest add, and the restore part of a recovery time (docs/backup.md, RTO).
The replay from Temporal is not here: it reads only workflows open or closed since the backup.

Standalone: fresh databases on DATABASE_URL's server (migrated, dropped at the end), rows made
by SQL, a local storage root of a few files.

    DATABASE_URL=postgresql://... .venv/bin/python -m bench.backup_restore 100000
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from app.backup import pgtools
from app.backup.archive import create_backup, restore_backup
from app.log_config import configure
from app.settings import Settings
from bench.ai_gateway import ADMIN_DB, fresh_database
from bench.analytics import generate

FILES = 200  # files of 64 KiB in the storage root


async def empty_database(admin: str) -> str:
    name = f"wfs_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin.replace("+asyncpg", ""))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = admin.replace("+asyncpg", "").partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


async def drop(admin: str, url: str) -> None:
    conn = await asyncpg.connect(admin.replace("+asyncpg", ""))
    await conn.execute(f'DROP DATABASE IF EXISTS "{url.partition("?")[0].rsplit("/", 1)[1]}"')
    await conn.close()


def raw(argv: list[str], url: str) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=pgtools.tool_env(url), check=True, capture_output=True)
    return time.monotonic() - started


async def run(size: int = 100_000, *, admin_db: str = ADMIN_DB) -> dict[str, Any]:
    configure("warning")
    work = Path(tempfile.mkdtemp(prefix="wfs-bench-backup-"))
    try:
        return await _measure(size, admin_db, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _measure(size: int, admin_db: str, work: Path) -> dict[str, Any]:
    storage = work / "storage" / str(uuid.uuid4())
    storage.mkdir(parents=True)
    for i in range(FILES):
        (storage / f"f{i}.bin").write_bytes(os.urandom(64 * 1024))
    async with fresh_database(admin_db) as url:
        facts = await generate(url, size)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            storage_root=work / "storage",
        )
        conn = await asyncpg.connect(url.replace("+asyncpg", ""))
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        await conn.close()
        dump_tool = pgtools.find("pg_dump", major)
        restore_tool = pgtools.find("pg_restore", major)

        started = time.monotonic()
        manifest = await create_backup(settings, work / "backup")
        ours_backup = time.monotonic() - started
        plain = work / "plain.dump"
        raw_backup = raw([str(dump_tool.path), "--format=custom", f"--file={plain}"], url)

        target = await empty_database(admin_db)
        other = await empty_database(admin_db)
        try:
            into = settings.model_copy(
                update={"database_url": target, "storage_root": work / "restored"}
            )
            started = time.monotonic()
            await restore_backup(into, work / "backup")
            ours_restore = time.monotonic() - started
            raw_restore = raw(
                [
                    str(restore_tool.path),
                    "--single-transaction",
                    "--no-owner",
                    "--no-privileges",
                    f"--dbname={pgtools.libpq_env(other)['PGDATABASE']}",
                    str(plain),
                ],
                other,
            )
        finally:
            await drop(admin_db, target)
            await drop(admin_db, other)
    dump_mib = manifest.files["database.dump"].bytes / 2**20
    rows = [
        {
            "step": "backup",
            "wfs s": round(ours_backup, 2),
            "pg tool s": round(raw_backup, 2),
            "ratio": round(ours_backup / raw_backup, 2),
            "MiB": round(dump_mib, 1),
        },
        {
            "step": "restore",
            "wfs s": round(ours_restore, 2),
            "pg tool s": round(raw_restore, 2),
            "ratio": round(ours_restore / raw_restore, 2),
            "MiB": round(dump_mib, 1),
        },
    ]
    notes = [
        f"{facts['counts']['executions']} executions, {facts['counts']['execution_events']} "
        f"events, {facts['counts']['ai_usage']} AI usage rows; {FILES} files of 64 KiB; "
        f"PostgreSQL {major}, pg_dump {dump_tool.major}, pg_restore {restore_tool.major}",
        "wfs backup = snapshot + pg_dump + exact row counts of every table + storage tar + "
        "sums; wfs restore = checksum pass + pg_restore + row counts + storage unpack",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}",
    ]
    return {"rows": rows, "notes": notes}


if __name__ == "__main__":
    from bench.run import table

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    result = asyncio.run(run(size))
    print(table(result["rows"]))
    for note in result["notes"]:
        print(f"  {note}")
