"""Engine and session factory. The edge (request, activity call) owns the transaction."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

SessionFactory = async_sessionmaker[AsyncSession]


def normalise_url(url: str) -> str:
    """Accept plain postgres:// URLs and use the asyncpg driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        normalise_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def make_sessionmaker(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


async def bound_statement_time(session: AsyncSession, seconds: float) -> None:
    """Cancel any statement of this transaction that runs (or waits on a lock) longer than
    `seconds`: for upkeep that must never stall the loop it runs in."""
    statement = text("SELECT set_config('statement_timeout', :ms, true)")
    await session.execute(statement, {"ms": str(max(1, int(seconds * 1000)))})
