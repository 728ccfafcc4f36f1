"""The SQL of backup and restore: the snapshot a backup is taken in, what the database holds
(schema revision, tables, row counts), and the schema a forced restore replaces, kept aside
until the restore has succeeded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

SCHEMA = "public"
# Where a forced restore keeps the database it replaces until the restore has succeeded.
SET_ASIDE = "wfs_replaced_by_restore"


def _ident(name: str) -> str:
    """A table name from pg_tables as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


class BackupRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def export_snapshot(self) -> tuple[str, datetime]:
        """Export this (REPEATABLE READ) transaction's snapshot for pg_dump --snapshot, and the
        time it was taken at: nothing committed after that time is in the backup."""
        row = (
            await self.session.execute(text("SELECT pg_export_snapshot(), statement_timestamp()"))
        ).one()
        return str(row[0]), row[1]

    async def server_version(self) -> tuple[int, str]:
        """(major, full text), e.g. (15, '15.20')."""
        num = (await self.session.execute(text("SHOW server_version_num"))).scalar_one()
        full = (await self.session.execute(text("SHOW server_version"))).scalar_one()
        return int(num) // 10000, str(full).split()[0]

    async def revision(self) -> str | None:
        """The Alembic revision the schema is at; None without an alembic_version table."""
        exists = (
            await self.session.execute(text("SELECT to_regclass('public.alembic_version')"))
        ).scalar_one()
        if exists is None:
            return None
        return (
            await self.session.execute(text("SELECT version_num FROM alembic_version"))
        ).scalar_one_or_none()

    async def tables(self) -> list[str]:
        result = await self.session.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY tablename"),
            {"s": SCHEMA},
        )
        return list(result.scalars())

    async def count(self, table: str) -> int:
        result = await self.session.execute(text(f"SELECT count(*) FROM {SCHEMA}.{_ident(table)}"))
        return int(result.scalar_one())

    async def counts(self) -> dict[str, int]:
        """Exact rows of every table of the schema (in this transaction's snapshot)."""
        return {table: await self.count(table) for table in await self.tables()}

    async def objects(self) -> int:
        """Tables, indexes, views, sequences and types in the schema: 0 for a fresh database."""
        result = await self.session.execute(
            text(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s) + (SELECT count(*) FROM pg_type "
                "t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = :s "
                "AND t.typtype IN ('e', 'd', 'c') AND NOT EXISTS (SELECT 1 FROM pg_class c "
                "WHERE c.reltype = t.oid))"
            ),
            {"s": SCHEMA},
        )
        return int(result.scalar_one())

    async def set_aside(self) -> bool:
        """Move everything in the schema into SET_ASIDE and start an empty schema; False when
        SET_ASIDE exists already (a forced restore that stopped half way left it)."""
        exists = (
            await self.session.execute(text("SELECT to_regnamespace(:n)"), {"n": SET_ASIDE})
        ).scalar_one()
        if exists is not None:
            return False
        await self.session.execute(text(f"ALTER SCHEMA {SCHEMA} RENAME TO {SET_ASIDE}"))
        await self.session.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        return True

    async def put_back(self) -> None:
        """Undo `set_aside`: the schema as it was before the failed restore."""
        await self.session.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await self.session.execute(text(f"ALTER SCHEMA {SET_ASIDE} RENAME TO {SCHEMA}"))

    async def drop_set_aside(self) -> None:
        await self.session.execute(text(f"DROP SCHEMA {SET_ASIDE} CASCADE"))
