"""`wfs dev`: everything on one machine with nothing else installed.

Starts the services whose URLs are unset (embedded PostgreSQL, Valkey and the Temporal dev
server with its UI, state under --state-dir), migrates, seeds the standard templates and one
demo tenant per tier, then runs the API, the worker, the AI worker, the webhook worker and one
worker per installed plugin (`wfs worker --plugin NAME`) in child processes by default
(app/cli/dev_roles.py; `--processes 1`: all but the plugins' workers in this one; a plugin's
worker is always a process of its own, with a minimal environment), until Ctrl-C, SIGTERM
or a role's exit, and stops every child it started. It publishes its URLs in
`<state dir>/services.json` so other `wfs` commands run from the same directory use these
services.

Start-up order (docs/performance.md, "wfs dev start"): the role processes are spawned first,
before this module's heavier imports (hence the imports inside functions below), so their
imports overlap everything else; the plugin manifests are read once, here, beside the
embedded services' start, and handed to the roles (app/plugins/registry.py: `use_read`); the
model check runs once the banner is out, which says its lines follow.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import click
import structlog

from app.cli.dev_banner import BannerModelCheck, banner
from app.cli.dev_roles import (
    IN_PROCESS,
    ROLES,
    RoleProcess,
    health_offsets,
    role_settings,
    serve_roles,
    start_processes,
    stop_processes,
)
from app.embedded.process import listens_on
from app.plugins.api import installed_entry_points
from app.settings import Settings, remove_services_file, write_services_file

log = structlog.get_logger(__name__)


def _start_embedded(settings: Settings) -> tuple[Settings, list[Any]]:
    """Start what is not configured, in parallel; returns updated settings and started servers."""
    from app.embedded import EmbeddedPostgres, EmbeddedTemporal, EmbeddedValkey
    from app.embedded.mail import DevMailSink, listening
    from app.temporal import SEARCH_ATTRIBUTES

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


def run_dev(settings: Settings, *, fake_llm: bool = False, processes: int = 3) -> int:
    """Start, serve until Ctrl-C/SIGTERM or a failure, stop; returns the exit code.

    processes: 1 runs the API and both workers in this process; more runs them in child
    processes (app/cli/dev_roles.py) that this one supervises.
    """
    t0 = _process_start()
    if "worker_graceful_shutdown_seconds" not in settings.model_fields_set:
        # Ctrl-C should not wait production's 60 s for a running activity (the children are
        # killed after 15 s anyway); WORKER_GRACEFUL_SHUTDOWN_SECONDS still wins when set.
        settings = settings.model_copy(update={"worker_graceful_shutdown_seconds": 10.0})
    # Ctrl-C during start-up must still stop what was started, so signals only set a flag here
    # (and wake the supervisor).
    interrupted: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        interrupted.append(signum)
        wake.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started: list[Any] = []
    children: list[RoleProcess] = []
    try:
        # Installed plugins get a worker each; their names come from the packages' metadata,
        # their code runs only in those workers' sandbox processes.
        plugins = sorted(installed_entry_points())
        # Plugins' workers are processes of their own whatever --processes says: one runs
        # plugin code (in sandboxes it starts) and must not hold the service's secrets.
        children = start_processes(processes, wake, plugins)
        offsets = health_offsets(processes, plugins)
        settings, started, manifests = _start_services(settings)
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
        from app.migrate import upgrade

        upgrade(settings.database_url)
        # What `wfs migrate` does for Temporal (workers only check); the embedded server has
        # them from its start, a configured TEMPORAL_ADDRESS may not.
        asyncio.run(_register_search_attributes(settings))
        if interrupted:
            return 130
        start = Start(t0, offsets, manifests)
        if processes > 1:
            return _supervise(settings, children, start, interrupted, wake)
        return asyncio.run(_serve(settings, start, interrupted, children))
    except Exception as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    finally:
        stop_processes(children)  # before the services they use
        remove_services_file(settings.state_dir)
        _stop_all(started)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo("wfs dev stopped", err=True)


def _process_start() -> float:
    """When this process started, on the time.monotonic() clock: the banner's "ready (N s)"
    counts the `wfs` command's own imports too (before, it began at run_dev, after them)."""
    import psutil

    return time.monotonic() - max(0.0, time.time() - psutil.Process().create_time())


def _start_services(
    settings: Settings,
) -> tuple[Settings, list[Any], dict[str, dict[str, Any] | str]]:
    """The embedded services, and beside them the plugin manifests: read (a sandbox process
    each) and checked once, here; returns the settings, the started servers and what was read
    of each manifest, for the role processes."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        plugins = pool.submit(_read_plugins, settings)
        settings, started = _start_embedded(settings)
        try:
            return settings, started, plugins.result()
        except Exception:
            _stop_all(started)
            raise


def _read_plugins(settings: Settings) -> dict[str, dict[str, Any] | str]:
    from app.plugins.registry import activate  # its imports too run beside the services' start

    return activate(settings).read


async def _register_search_attributes(settings: Settings) -> None:
    from app.temporal import connect, register_search_attributes

    added = await register_search_attributes(await connect(settings))
    if added:
        log.info("dev.search_attributes_added", names=added)


@dataclass(frozen=True)
class Start:
    """What the start hands on to the serving part: when it began, each process's health
    port offset, and the plugin manifests read here."""

    t0: float
    offsets: dict[str, int]
    manifests: dict[str, dict[str, Any] | str]


async def _seed(settings: Settings) -> dict[str, str]:
    """Standard templates and demo tenants; returns the demo keys."""
    from app.db import make_engine, make_sessionmaker
    from app.seed import seed_demo_tenants, seed_templates

    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    await seed_templates(sessions, settings)
    keys = await seed_demo_tenants(sessions, settings.state_dir, settings)
    await engine.dispose()
    return keys


def _supervise(
    settings: Settings,
    children: list[RoleProcess],
    start: Start,
    interrupted: list[int],
    wake: threading.Event,
) -> int:
    """Start the workers, seed meanwhile, then the API (so that its /readyz answering means
    the templates and demo keys are there: scripts wait for it, then read demo-keys.json);
    print the banner once the API listens (and the model check's lines once they are in),
    then wait for a signal (exit 0) or a child's exit (reported, exit 1). The API's process
    was spawned with the others: its imports overlap the seed, only its serving waits."""
    api, workers = children[0], children[1:]
    for child in workers:
        child.start(settings, start.offsets[child.name], start.manifests)
    keys = asyncio.run(_seed(settings))
    api.start(settings, start.offsets[api.name], start.manifests)
    check, printed = None, False
    while not interrupted:
        wake.clear()
        if _report_dead(children):
            return 1
        if check is None and listens_on(api.pid, settings.api_port):
            banner(settings, keys, time.monotonic() - start.t0, children)
            check = BannerModelCheck(settings, wake)
        elif check is not None and check.finished() and not printed:
            click.echo(check.report())
            printed = True
        wake.wait(None if check is not None else 0.05)
    return 0


def _report_dead(children: list[RoleProcess]) -> bool:
    dead = [c for c in children if c.returncode() is not None]
    for c in dead:
        message = f"{c.name} (pid {c.pid}) exited with code {c.returncode()}"
        click.echo(f"error: {message}; stopping wfs dev", err=True)
    return bool(dead)


async def _watch(children: list[RoleProcess], stop: asyncio.Event) -> bool:
    """Until `stop`: True (and `stop` set) once a child has exited."""
    while not stop.is_set():
        if _report_dead(children):
            stop.set()
            return True
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    return False


async def _serve(
    settings: Settings, start: Start, interrupted: list[int], children: list[RoleProcess]
) -> int:
    """All roles but the plugins' workers in this process (`--processes 1`); those are the
    `children` (started here), supervised beside the roles."""
    for child in children:
        child.start(settings, start.offsets[child.name], start.manifests)
    keys = await _seed(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if interrupted:
        stop.set()
    ready = asyncio.Event()
    following: asyncio.Task[None] | None = None
    own = role_settings(settings, ROLES, start.offsets[IN_PROCESS])
    serving = asyncio.create_task(serve_roles(own, ROLES, stop, ready))
    watching = asyncio.create_task(_watch(children, stop))
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait([ready_wait, serving], return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if ready.is_set():
        banner(settings, keys, time.monotonic() - start.t0, children)
        following = asyncio.create_task(_follow_up(BannerModelCheck(settings)))
    await serving  # until a signal, or a role fails (raised: exit 1)
    stop.set()
    if following is not None:
        following.cancel()
    return 1 if await watching else 0


async def _follow_up(check: BannerModelCheck) -> None:
    await asyncio.to_thread(check.wait)
    click.echo(check.report())
