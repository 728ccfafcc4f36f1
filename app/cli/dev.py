"""`wfs dev`: everything on one machine with nothing else installed.

Starts the services whose URLs are unset (embedded PostgreSQL, Valkey and the Temporal dev
server with its UI, state under --state-dir), migrates, seeds the standard templates and one
demo tenant per tier, then runs the API and a worker in this process until Ctrl-C or SIGTERM,
and stops every child it started. It publishes its URLs in `<state dir>/services.json` so
other `wfs` commands run from the same directory use these services.
"""

from __future__ import annotations

import asyncio
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click
import structlog

from app.db import make_engine, make_sessionmaker
from app.migrate import upgrade
from app.seed import seed_demo_tenants, seed_templates
from app.settings import Settings, remove_services_file, write_services_file
from app.temporal import SEARCH_ATTRIBUTES

log = structlog.get_logger(__name__)


def _start_embedded(settings: Settings) -> tuple[Settings, list[Any]]:
    """Start what is not configured, in parallel; returns updated settings and started servers."""
    from app.embedded import EmbeddedPostgres, EmbeddedTemporal, EmbeddedValkey
    from app.embedded.mail import DevMailSink, listening

    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    starters: dict[str, Any] = {}
    if settings.database_url is None:
        starters["database_url"] = EmbeddedPostgres(state / "pg")
    if settings.redis_url is None:
        starters["redis_url"] = EmbeddedValkey(state / "valkey")
    if settings.temporal_address is None:
        # Temporal's usual ports when free, so the UI is where its docs say.
        starters["temporal_address"] = EmbeddedTemporal(
            state / "temporal", port=7233, ui_port=8233, search_attributes=SEARCH_ATTRIBUTES
        )
    started: list[Any] = []
    updates: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(server.start) for name, server in starters.items()}
        errors = []
        for name, future in futures.items():
            try:
                updates[name] = future.result()
                started.append(starters[name])
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            _stop_all(started)
            raise RuntimeError("could not start embedded services:\n" + "\n".join(errors))
    temporal = starters.get("temporal_address")
    if temporal is not None and settings.temporal_ui_url is None:
        updates["temporal_ui_url"] = temporal.ui_url
    if not listening(settings.smtp_host, settings.smtp_port):
        sink = DevMailSink(state / "mail", settings.smtp_host, settings.smtp_port)
        try:
            sink.start()
            started.append(sink)
        except OSError as exc:
            log.warning("dev.mail_sink_failed", error=str(exc))
    return settings.model_copy(update=updates), started


def _start_fake_llm(settings: Settings, started: list[Any]) -> Settings:
    """The fake answers every AI task like a model would (valid output, tokens, cost)."""
    from app.ai.fake_llm import FakeLLM, FakeLLMServer
    from app.ai.fake_responder import task_responder

    server = FakeLLMServer(FakeLLM(responder=task_responder))
    server.start()
    started.append(server)
    return settings.model_copy(
        update={
            "openai_api_key": "fake-openai-key",
            "openai_base_url": server.openai_base_url,
            "anthropic_api_key": "fake-anthropic-key",
            "anthropic_base_url": server.anthropic_base_url,
        }
    )


def _stop_all(servers: list[Any]) -> None:
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as exc:
            log.warning("dev.stop_failed", server=type(server).__name__, error=str(exc))


def run_dev(settings: Settings, *, fake_llm: bool = False) -> int:
    t0 = time.monotonic()
    # Ctrl-C during start-up must still stop what was started, so signals only set a flag here.
    interrupted: list[int] = []
    previous = {
        s: signal.signal(s, lambda n, f: interrupted.append(n))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    started: list[Any] = []
    try:
        settings, started = _start_embedded(settings)
        if fake_llm:
            settings = _start_fake_llm(settings, started)
        write_services_file(
            settings.state_dir,
            {
                "database_url": settings.database_url,
                "redis_url": settings.redis_url,
                "temporal_address": settings.temporal_address,
                "temporal_ui_url": settings.temporal_ui_url,
            },
        )
        assert settings.database_url
        upgrade(settings.database_url)
        if interrupted:
            return 130
        return asyncio.run(_serve(settings, t0, interrupted))
    except Exception as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    finally:
        remove_services_file(settings.state_dir)
        _stop_all(started)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("wfs dev stopped", err=True)


async def _serve(settings: Settings, t0: float, interrupted: list[int]) -> int:
    from app.cli.runner import run_api, run_worker

    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    await seed_templates(sessions)
    keys = await seed_demo_tenants(sessions, settings.state_dir, settings.files_root)
    await engine.dispose()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if interrupted:
        stop.set()
    ready = asyncio.Event()
    tasks = [
        asyncio.create_task(run_api(settings, stop, ready), name="api"),
        asyncio.create_task(run_worker(settings, stop), name="worker"),
        asyncio.create_task(run_worker(settings, stop, settings.ai_task_queue), name="ai-worker"),
    ]
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait([ready_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        _banner(settings, keys, time.monotonic() - t0)
    # Run until a signal, or until either role fails (then stop the other).
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    ready_wait.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures:
        click.echo(f"error: {failure}", err=True)
    return 1 if failures else 0


def _ai_line(settings: Settings) -> str:
    providers = [
        f"{name} ({url or 'api'})"
        for name, key, url in (
            ("openai", settings.openai_api_key, settings.openai_base_url),
            ("anthropic", settings.anthropic_api_key, settings.anthropic_base_url),
        )
        if key
    ]
    return ", ".join(providers) if providers else "baseline only (no keys; try --fake-llm)"


def _banner(settings: Settings, keys: dict[str, str], seconds: float) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    lines = [
        "",
        f"workflow-service is ready ({seconds:.1f}s)",
        f"  GraphiQL     {base}/graphql",
        f"  WebSocket    {base.replace('http', 'ws', 1)}/graphql (graphql-transport-ws)",
        f"  Health       {base}/healthz  {base}/readyz  {base}/metrics",
        f"  Temporal UI  {settings.temporal_ui_url or '(not started: TEMPORAL_ADDRESS is set)'}",
        f"  AI           {_ai_line(settings)}",
        f"  Mail         SMTP {settings.smtp_host}:{settings.smtp_port}"
        f" (dev catcher: {settings.state_dir.resolve() / 'mail'}, a Maildir)",
        f"  Files        {settings.files_root} (one folder per tenant; samples/ for the demos)",
        f"  State        {settings.state_dir.resolve()}",
        "",
        "Demo API keys (send as `Authorization: Bearer <key>`):",
        *[f"  {name:<17} {key}" for name, key in keys.items()],
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    click.echo("\n".join(lines))
