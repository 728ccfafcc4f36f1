"""Alembic environment (async). The URL is taken from the config's sqlalchemy.url attribute set
by `app.migrate`, or from DATABASE_URL / a running `wfs dev`."""

import asyncio

from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from app.db import normalise_url
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.settings import get_settings

    settings = get_settings().require("database_url")
    assert settings.database_url
    return settings.database_url


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(normalise_url(_url()))
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=normalise_url(_url()), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
