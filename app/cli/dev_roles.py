"""`wfs dev`'s roles (API, worker, AI worker, webhook worker, one worker per installed
plugin) run as child processes, and the child's side.

One Python process runs its event loop on one core: a slow step or a large document in the
worker stalls the API beside it. So `wfs dev` starts each role in its own process (the
production topology, `wfs api` and `wfs worker`, in miniature) and supervises them:

* A child is `python -m app.cli.dev_roles ROLE...`. It imports its roles' code (only theirs:
  `import_roles`) first and then waits for two lines on stdin: the parent's resolved
  `Settings` as JSON (the embedded services' URLs included), then the plugin manifests the
  parent read (app/plugins/registry.py: `use_read`; the child checks them, it does not read
  them again). The parent spawns the children before it starts the embedded services, so the
  children's second of imports overlaps that start instead of following it.
* The child's stdin stays open as a lifeline: when it closes, the parent is gone (even after a
  SIGKILL), and the child stops as on SIGTERM. Children run in their own session, so a
  terminal's Ctrl-C reaches only the parent, which stops them before the services they use.
* A plugin's worker runs plugin code (in sandbox processes it starts), so its child gets only
  what it needs: a minimal environment (`plugin_env`: no API keys, no AWS or database
  variables) and only the settings a plugin worker reads (`role_settings`), never the
  database, Redis or AI keys. It is always a process of its own, also with `--processes 1`.
* Several worker roles share one process (the `workers` group, `--processes 1`) and all take
  WORKER_HEALTH_PORT from one configuration: when it is set, each worker role of the plan gets
  its own port, WORKER_HEALTH_PORT + its index (`role_settings`), instead of the second one
  failing to listen.
* Each child's stdout and stderr are relayed line by line with its name as a prefix
  (`worker    | ...`); a child that exits wakes the parent, which reports it and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

import click
from pydantic import SecretStr

from app.plugins.api import env_prefix
from app.settings import Settings

ROLES = ("api", "worker", "ai-worker", "webhook-worker")
PLUGIN_ROLE_PREFIX = "plugin:"  # plus the plugin's name
_output_lock = threading.Lock()


# What a plugin worker's process inherits of `wfs dev`'s environment (see the module doc).
PLUGIN_ENV_NAMES = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
# ...and PLUGIN_<NAME>_* of its own plugin only (app/plugins/api.py: env_prefix).
PLUGIN_ENV_PREFIXES = ("TEMPORAL_", "WORKER_", "LOG_", "OTEL_")
# ...but not the collector's credentials: a plugin that declared them in `env` would be
# handed them by its worker.
PLUGIN_ENV_REFUSED = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
# The settings a plugin worker reads (runner.run_plugin_worker, workers/plugin_worker.py).
PLUGIN_SETTINGS_PREFIXES = ("temporal_", "plugin_", "worker_", "log_", "otel_")
PLUGIN_SETTINGS = frozenset({"max_step_output_bytes", "state_dir"})


def plan(processes: int, plugins: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """(name, roles) of each process for `wfs dev --processes N`: 1 is only the plugins'
    workers (the other roles run in `wfs dev` itself); 2 is the API and one process with all
    the workers; 3 gives the AI and webhook workers their own; more add main-queue workers.
    Each installed plugin's worker is a process of its own on top, as in production (its
    calls run in sandbox processes it starts), whatever N."""
    extra = [(f"plugin-{name}", [plugin_role(name)]) for name in plugins]
    if processes == 1:
        return extra
    if processes == 2:
        return [("api", ["api"]), ("workers", ["worker", "ai-worker", "webhook-worker"]), *extra]
    workers = [("worker" if n == 1 else f"worker-{n}", ["worker"]) for n in range(1, processes - 1)]
    return [("api", ["api"]), *workers, ("ai-worker", ["ai-worker", "webhook-worker"]), *extra]


def plugin_role(name: str) -> str:
    """The role serving plugin `name` (`wfs worker --plugin NAME`)."""
    return f"{PLUGIN_ROLE_PREFIX}{name}"


def _role(
    role: str, settings: Settings, stop: asyncio.Event, ready: asyncio.Event | None
) -> Coroutine[Any, Any, None]:
    from app.cli.runner import (
        run_ai_worker,
        run_api,
        run_plugin_worker,
        run_webhook_worker,
        run_worker,
    )

    if role.startswith(PLUGIN_ROLE_PREFIX):
        return run_plugin_worker(settings, stop, role.removeprefix(PLUGIN_ROLE_PREFIX))
    if role == "api":
        return run_api(settings, stop, ready)
    if role == "worker":
        return run_worker(settings, stop)
    if role == "ai-worker":
        return run_ai_worker(settings, stop)
    if role == "webhook-worker":
        return run_webhook_worker(settings, stop)
    raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")


def _health_port(settings: Settings, workers: list[str], role: str) -> Settings:
    """The k-th worker role of a process listens on WORKER_HEALTH_PORT + k (role_settings
    offset the process's first). A process runs each role at most once."""
    if settings.worker_health_port is None or role not in workers or role == workers[0]:
        return settings
    port = settings.worker_health_port + workers.index(role)
    return settings.model_copy(update={"worker_health_port": min(port, 65535)})


async def serve_roles(
    settings: Settings,
    roles: Sequence[str],
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Run roles in this event loop until `stop`, or until one of them ends (then stop the
    others: nothing keeps running half). Raises when a role failed; `ready` is the API's."""
    workers = [r for r in roles if r != "api"]
    tasks = [
        asyncio.create_task(_role(r, _health_port(settings, workers, r), stop, ready), name=r)
        for r in roles
    ]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [f"{t.get_name()}: {r}" for t, r in zip(tasks, results, strict=True) if r]
    if failures:
        raise RuntimeError("; ".join(failures))


def is_plugin_process(roles: Sequence[str]) -> bool:
    return any(role.startswith(PLUGIN_ROLE_PREFIX) for role in roles)


IN_PROCESS = "wfs dev"  # --processes 1: the roles run in wfs dev itself


def health_offsets(processes: int, plugins: Sequence[str] = ()) -> dict[str, int]:
    """Each process's WORKER_HEALTH_PORT offset, by name: the number of worker roles (the API
    is none) of the processes before it in the plan, so every worker role on this machine gets
    a port of its own. With --processes 1, `IN_PROCESS` comes first."""
    groups = [(IN_PROCESS, list(ROLES))] if processes == 1 else []
    offsets, count = {}, 0
    for name, roles in [*groups, *plan(processes, plugins)]:
        offsets[name] = count
        count += sum(1 for role in roles if role != "api")
    return offsets


def role_settings(settings: Settings, roles: Sequence[str], health_offset: int = 0) -> Settings:
    """The settings of the process of `wfs dev` that runs `roles` (see the module doc): a
    plugin's worker gets only the fields it reads (the others keep their defaults: no
    database, Redis or AI keys); WORKER_HEALTH_PORT, when set, moves up by the process's
    `health_offset` (health_offsets; `serve_roles` offsets a process's further roles)."""
    if settings.worker_health_port is not None and health_offset:
        port = settings.worker_health_port + health_offset
        settings = settings.model_copy(update={"worker_health_port": min(port, 65535)})
    if is_plugin_process(roles):
        fields = {
            name: getattr(settings, name)
            for name in type(settings).model_fields
            if name.startswith(PLUGIN_SETTINGS_PREFIXES) or name in PLUGIN_SETTINGS
        }
        settings = Settings.model_construct(**fields)
    return settings


def handover(settings: Settings) -> bytes:
    """The settings as one JSON line for a child, secrets included: `model_dump_json` masks
    SecretStr values as `**********`, which a child would take for the key itself (or refuse,
    for the length-checked ones). The line goes through the child's stdin pipe, never a log."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data).encode()


def plugin_env(environ: dict[str, str], roles: Sequence[str]) -> dict[str, str]:
    """A plugin worker's environment: what Python and the worker need, and its plugin's own
    variables (PLUGIN_<NAME>_*), nothing else."""
    own = tuple(
        env_prefix(role.removeprefix(PLUGIN_ROLE_PREFIX))
        for role in roles
        if role.startswith(PLUGIN_ROLE_PREFIX)
    )
    return {
        name: value
        for name, value in environ.items()
        if (name in PLUGIN_ENV_NAMES or name.startswith((*PLUGIN_ENV_PREFIXES, *own)))
        and name not in PLUGIN_ENV_REFUSED
    }


class RoleProcess:
    """The parent's handle on one child: spawn, hand over settings, relay output, stop."""

    def __init__(self, name: str, roles: Sequence[str], exited: threading.Event) -> None:
        self.name = name
        self.roles = list(roles)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli.dev_roles", *roles],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # prints reach the relay at once; a plugin's worker gets a minimal environment
            env=(
                plugin_env(dict(os.environ), roles)
                if is_plugin_process(roles)
                else dict(os.environ)
            )
            | {"PYTHONUNBUFFERED": "1"},
        )
        self._relay = threading.Thread(
            target=self._relay_output, args=(exited,), name=f"relay-{name}", daemon=True
        )
        self._relay.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def returncode(self) -> int | None:
        return self.popen.poll()

    def start(
        self,
        settings: Settings,
        health_offset: int = 0,
        manifests: dict[str, dict[str, Any] | str] | None = None,
    ) -> None:
        """Hand over the settings (only what its roles need: role_settings) and the plugin
        manifests the parent read (not to a plugin's worker, which reads its own); the child
        then starts its roles. Past the pipe's buffer (64 KiB: manifests are a few KB, at most
        2 MB each) the write waits for the child to finish its imports and read."""
        assert self.popen.stdin is not None
        handed = {} if is_plugin_process(self.roles) else (manifests or {})
        try:
            line = handover(role_settings(settings, self.roles, health_offset))
            self.popen.stdin.write(line + b"\n" + json.dumps(handed).encode() + b"\n")
            self.popen.stdin.flush()
        except BrokenPipeError:
            pass  # it died already: the relay reports its exit

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for the exit (SIGKILL after timeout), close the lifeline, drain the output."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            click.echo(f"{self.name} did not stop in {timeout:.0f}s: killed", err=True)
            self.popen.kill()
            self.popen.wait()
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self._relay.join(5)

    def _relay_output(self, exited: threading.Event) -> None:
        assert self.popen.stdout is not None
        prefix = f"{self.name:<9} | ".encode()
        for line in self.popen.stdout:
            with _output_lock:
                click.echo(prefix + line.rstrip(b"\n") + b"\n", err=True, nl=False)
        self.popen.wait()
        exited.set()


def start_processes(
    processes: int, exited: threading.Event, plugins: Sequence[str] = ()
) -> list[RoleProcess]:
    return [RoleProcess(name, roles, exited) for name, roles in plan(processes, plugins)]


def stop_processes(children: Sequence[RoleProcess], timeout: float = 15) -> None:
    """SIGTERM them all at once (each stops gracefully, in parallel), then wait for each."""
    for child in children:
        child.terminate()
    for child in children:
        child.wait(timeout)


async def _serve_child(settings: Settings, roles: Sequence[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lifeline = sys.stdin.fileno()

    def on_lifeline() -> None:
        if not os.read(lifeline, 4096):  # EOF: the parent is gone
            loop.remove_reader(lifeline)
            stop.set()

    loop.add_reader(lifeline, on_lifeline)
    await serve_roles(settings, roles, stop)


def import_roles(roles: Sequence[str]) -> None:
    """Import the code `roles` run, and only that, before the settings arrive: the imports
    overlap the parent's start. Only the API's process imports the API (Strawberry and the
    schema), only the workers' processes the workers; four processes each importing both cost
    ~2.5 s of CPU more on a 2-core machine (docs/performance.md, "wfs dev start")."""
    import app.cli.runner  # noqa: F401

    if "api" in roles:
        import app.api.app  # noqa: F401
    if any(role != "api" and not role.startswith(PLUGIN_ROLE_PREFIX) for role in roles):
        import workers.main  # noqa: F401
    if is_plugin_process(roles):
        import workers.plugin_worker  # noqa: F401


def child_main(roles: Sequence[str]) -> None:
    import_roles(roles)
    from app import tracing
    from app.cli.process import hard_exit
    from app.log_config import configure
    from app.plugins.registry import use_read

    line = sys.stdin.buffer.readline()
    manifests = sys.stdin.buffer.readline()
    code = 0
    if line and manifests:  # else the parent ended before it started us
        settings = Settings.model_validate_json(line)
        use_read(json.loads(manifests))
        configure(settings.log_level, settings.log_json)
        tracing.configure(settings)  # off unless OTEL_* (inherited from `wfs dev`) asks
        try:
            asyncio.run(_serve_child(settings, roles))
        except Exception as exc:
            click.echo(f"error: {exc}", err=True)
            code = 1
    hard_exit(code)


if __name__ == "__main__":
    child_main(sys.argv[1:])
