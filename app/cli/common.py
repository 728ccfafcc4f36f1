"""What the `wfs` commands share: settings from the environment (with logging, and tracing for
the long-running ones), running a coroutine until a signal, a database session factory for a
one-shot command, and plain-text tables."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import click

from app.cli.process import hard_exit
from app.errors import DomainError
from app.log_config import configure
from app.settings import Settings


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with these overrides (None: not given), logging set up."""
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure(settings.log_level, settings.log_json)
    return settings


def serving_settings(**overrides: Any) -> Settings:
    """Settings of a long-running role: logging, and tracing when OTEL_* asks for it."""
    from app import tracing

    settings = load_settings(**overrides)
    tracing.configure(settings)
    return settings


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
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


def day(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}" if at else "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def with_sessions(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `fn(sessionmaker)` on a one-connection engine; a DomainError is one line, exit 1."""
    from app.db import make_engine, make_sessionmaker  # SQLAlchemy: not for `wfs dev`'s start

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


def answer_from_database(fn: Callable[[Any], Awaitable[str]]) -> None:
    """A one-shot command's end: print what `fn(sessionmaker)` returns, run against
    DATABASE_URL, and exit 0 (a DomainError: one line, exit 1)."""
    click.echo(with_sessions(load_settings().require("database_url"), fn))
    hard_exit(0)


def progress(line: str) -> None:
    click.echo(line, err=True)


def run_ops(job: Awaitable[Any]) -> Any:
    """Run a backup/restore coroutine; a refusal or failure is one line and exit status 1."""
    try:
        return asyncio.run(job)  # type: ignore[arg-type]
    except DomainError as exc:
        click.echo(f"error: {exc.message}", err=True)
        hard_exit(1)
