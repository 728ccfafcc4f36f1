"""`wfs dev` from an empty state dir: embedded services, migrations, seeds, API, worker, and a
clean stop on SIGINT and SIGTERM; a second run reuses the state and its keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.cli.dev_roles import (
    _health_port,
    handover,
    health_offsets,
    plan,
    plugin_env,
    role_settings,
)
from app.embedded.process import listens_on
from app.settings import Settings
from tests.support import GraphQLClient, free_port

ROOT = Path(__file__).resolve().parents[2]
WFS = Path(sys.executable).parent / "wfs"


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "STATE_DIR", "DEV_PROCESSES")
    }
    # info: the children's start-up lines show their role prefix.
    return env | {"LOG_LEVEL": "info"}


class Dev:
    """A `wfs dev` child process; its output is read all along (a full pipe would stall it)."""

    def __init__(
        self, state_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [str(WFS), "dev", "--state-dir", str(state_dir), "--port", str(port), *args],
            cwd=ROOT,
            env=_env() | (env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The output once a line matches pattern (fails if wfs dev exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output, re.MULTILINE):
                return self.output
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"no line matching {pattern!r}:\n{self.output}")

    def family(self) -> list[psutil.Process]:
        """wfs dev and every process under it (roles and embedded servers)."""
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def roles(self) -> dict[str, list[psutil.Process]]:
        """Its role children by role (the last word of `python -m app.cli.dev_roles ROLE`)."""
        found: dict[str, list[psutil.Process]] = {}
        for child in psutil.Process(self.proc.pid).children():
            cmdline = child.cmdline()
            if "app.cli.dev_roles" in cmdline:
                role = " ".join(cmdline[cmdline.index("app.cli.dev_roles") + 1 :])
                found.setdefault(role, []).append(child)
        return found

    def stop(self, sig: int, expect: int = 0, timeout: float = 60) -> str:
        """Send sig, wait for the exit code, and check nothing it started is left running."""
        family = self.family()
        self.proc.send_signal(sig)
        return self.wait_exit(family, expect, timeout)

    def wait_exit(self, family: list[psutil.Process], expect: int, timeout: float = 60) -> str:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        assert code == expect, self.output
        _assert_gone(family)
        return self.output


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two questions is gone."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _assert_gone(family: list[psutil.Process], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in family if _alive(p)]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"left running: {[p.cmdline() for p in alive]}")


def _start(
    state_dir: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> tuple[Dev, str]:
    dev = Dev(state_dir, port, *args, env=env)
    return dev, dev.wait_for(r"^Ctrl-C stops everything")


def _ours(state_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(state_dir) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


async def _until_ready(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not 200 within {timeout} s")


async def _exercise(port: int, key: str) -> None:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": True, "redis": True, "temporal": True}
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert "graphiql" in page.text.lower()
    client = GraphQLClient(base, key)
    viewer = await client.data("{ viewer { role tenant { name tier } } }")
    assert viewer["viewer"] == {
        "role": "ADMIN",
        "tenant": {"name": "demo-premium", "tier": "PREMIUM"},
    }
    template = await client.data('{ template(name: "order-summary") { exampleParams } }')
    params = template["template"]["exampleParams"] | {"wait_seconds": 0}
    started = await client.data(
        'mutation($p: JSON!) { startExecution(input: {templateName: "order-summary", params: $p})'
        " { ... on Execution { id } } }",
        {"p": params},
    )
    execution_id = started["startExecution"]["id"]
    async with asyncio.timeout(60):
        while True:
            status = (
                await client.data(
                    "query($id: ID!) { execution(id: $id) { status } }", {"id": execution_id}
                )
            )["execution"]["status"]
            if status == "COMPLETED":
                break
            assert status in ("PENDING", "RUNNING"), status
            await asyncio.sleep(0.2)


def _keys(banner: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(demo-\w+)\s+(wfs_\S+)$", banner, re.MULTILINE))


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    """One state dir for the module: the later runs reuse what the first one created."""
    path = ROOT / ".wfs-test" / f"dev-{os.getpid()}"
    yield path
    for p in _ours(path):
        p.kill()
    shutil.rmtree(path, ignore_errors=True)


def test_plan_of_processes() -> None:
    assert plan(2) == [("api", ["api"]), ("workers", ["worker", "ai-worker", "webhook-worker"])]
    assert plan(3)[2] == ("ai-worker", ["ai-worker", "webhook-worker"])
    assert [name for name, _ in plan(3)] == ["api", "worker", "ai-worker"]
    assert [name for name, _ in plan(5)] == ["api", "worker", "worker-2", "worker-3", "ai-worker"]
    # Each installed plugin's worker is a process of its own, whatever the number.
    assert plan(2, ["example"])[-1] == ("plugin-example", ["plugin:example"])
    assert [name for name, _ in plan(3, ["a", "b"])][-2:] == ["plugin-a", "plugin-b"]
    # --processes 1: the plugins' workers still are processes of their own.
    assert plan(1, ["example"]) == [("plugin-example", ["plugin:example"])]


def test_what_each_role_process_is_handed() -> None:
    """A plugin's worker gets a minimal environment and only the settings it reads; every
    worker role of the plan gets its own WORKER_HEALTH_PORT (one process may run several)."""
    settings = Settings.model_validate(
        {
            "database_url": "postgresql://u:secret@db/wfs",
            "redis_url": "redis://:secret@redis:6379",
            "openai_api_key": "sk-secret",
            "temporal_address": "temporal:7233",
            "temporal_api_key": "temporal-key",
            "worker_health_port": 9100,
        }
    )
    # Each process's offset: the worker roles before it. --processes 4: worker, worker-2,
    # then ai-worker (with webhook-worker), then the plugin's; 1: wfs dev's own three first.
    assert health_offsets(4, ["example"]) == {
        "api": 0,
        "worker": 0,
        "worker-2": 1,
        "ai-worker": 2,
        "plugin-example": 4,
    }
    assert health_offsets(1, ["example"]) == {"wfs dev": 0, "plugin-example": 3}
    offsets = health_offsets(2, ["example"])
    handed = {
        name: Settings.model_validate_json(handover(role_settings(settings, roles, offsets[name])))
        for name, roles in plan(2, ["example"])
    }
    plugin = handed["plugin-example"]
    assert (plugin.database_url, plugin.redis_url, plugin.openai_api_key) == (None, None, None)
    assert plugin.temporal_address == "temporal:7233"  # what it needs it gets
    assert plugin.temporal_api_key and plugin.temporal_api_key.get_secret_value() == "temporal-key"
    assert handed["workers"].openai_api_key is not None  # the others are unchanged
    # `workers` runs worker, ai-worker and webhook-worker on 9100-9102 (serve_roles offsets
    # the 2nd and 3rd); the plugin's process takes 9103.
    ports = {name: s.worker_health_port for name, s in handed.items()}
    assert ports == {"api": 9100, "workers": 9100, "plugin-example": 9103}
    group = ["worker", "ai-worker", "webhook-worker"]
    in_group = [_health_port(handed["workers"], group, r).worker_health_port for r in group]
    assert in_group == [9100, 9101, 9102]
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "OPENAI_API_KEY": "k",
        "AWS_SECRET_ACCESS_KEY": "k",
        "DATABASE_URL": "u",
        "PGPASSWORD": "p",
        "TEMPORAL_ADDRESS": "t:7233",
        "PLUGIN_EXAMPLE_LLM_API_KEY": "k",
        "PLUGIN_OTHER_TOKEN": "another plugin's",
        "OTEL_SERVICE_NAME": "wfs",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer x",
        "LOG_LEVEL": "info",
    }
    assert sorted(plugin_env(environ, ["plugin:example"])) == [
        "HOME",
        "LOG_LEVEL",
        "OTEL_SERVICE_NAME",
        "PATH",
        "PLUGIN_EXAMPLE_LLM_API_KEY",
        "TEMPORAL_ADDRESS",
    ]


async def test_wfs_dev_runs_roles_in_separate_processes(state_dir: Path) -> None:
    """From an empty state dir: API, worker, AI worker (with the webhook worker) and the example
    plugin's worker are four child processes with their own pids and prefixed logs; an
    execution completes through them; SIGINT stops them and every embedded server."""
    port = free_port()
    dev = Dev(state_dir, port)
    try:
        # Scripts wait for /readyz and then read the demo keys (bench/stack.py does): the API
        # answering means the seed is done.
        await _until_ready(port)
        on_ready = json.loads((state_dir / "demo-keys.json").read_text())
        banner = await asyncio.to_thread(dev.wait_for, r"^Ctrl-C stops everything")
        keys = _keys(banner)
        assert on_ready == keys
        assert set(keys) == {"demo-free", "demo-pro", "demo-premium", "demo-enterprise"}
        assert f"http://127.0.0.1:{port}/graphql" in banner
        assert f"http://127.0.0.1:{port}/graphql#apiKey={keys['demo-pro']}" in banner
        assert re.search(r"Temporal UI\s+http://127\.0\.0\.1:\d+", banner)
        assert (state_dir / "services.json").exists()

        roles = dev.roles()
        # The example plugin is installed (make install): its worker is a fourth process.
        assert sorted(roles) == ["ai-worker webhook-worker", "api", "plugin:example", "worker"]
        pids = {p.pid for found in roles.values() for p in found}
        assert len(pids) == 4 and dev.proc.pid not in pids
        api = roles["api"][0]
        assert listens_on(api.pid, port) and not listens_on(dev.proc.pid, port)
        assert f"api {api.pid}, worker {roles['worker'][0].pid}" in banner
        await _exercise(port, keys["demo-premium"])
        # Each role logs from its own process, under its name.
        await asyncio.to_thread(dev.wait_for, rf"^api +\| .*Started server process \[{api.pid}\]")
        await asyncio.to_thread(dev.wait_for, r"^worker +\| .*worker\.started.*wfs-main")
        await asyncio.to_thread(dev.wait_for, r"^ai-worker +\| .*worker\.started.*task_queue=ai")
        await asyncio.to_thread(
            dev.wait_for, r"^ai-worker +\| .*worker\.started.*task_queue=webhooks"
        )
        await asyncio.to_thread(
            dev.wait_for, r"^plugin-example +\| .*plugin_worker\.started.*plugin-example"
        )

        # Another wfs command from the same state dir uses the running services.
        created = await asyncio.to_thread(
            subprocess.run,
            [str(WFS), "apikey", "create", "--tenant", "demo-free", "--role", "viewer"],
            cwd=ROOT,
            env=_env() | {"STATE_DIR": str(state_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        new_key = created.stdout.strip().splitlines()[-1]
        viewer = await GraphQLClient(f"http://127.0.0.1:{port}", new_key).data(
            "{ viewer { role } }"
        )
        assert viewer["viewer"]["role"] == "VIEWER"
        # The banner does not wait for the model check: it says so, and the lines follow it.
        assert "AI models    checking the providers' model lists" in banner
        await asyncio.to_thread(dev.wait_for, r"^Ctrl-C stops everything\.\n(?:.*\n)*  AI models ")
    finally:
        await asyncio.to_thread(dev.stop, signal.SIGINT)
    assert not (state_dir / "services.json").exists()
    assert not _ours(state_dir)


async def test_wfs_dev_in_one_process_reuses_state(state_dir: Path) -> None:
    """`--processes 1`, the former mode: the roles in wfs dev itself but the plugin's worker,
    a child with none of the service's secrets in its environment; a second run keeps the
    keys."""
    keys_file = state_dir / "demo-keys.json"
    before = json.loads(keys_file.read_text()) if keys_file.exists() else None
    port = free_port()
    canary = {"AWS_SECRET_ACCESS_KEY": "canary-secret", "PLUGIN_EXAMPLE_TOKEN": "its-own"}
    dev, banner = await asyncio.to_thread(_start, state_dir, port, "--processes", "1", env=canary)
    try:
        if before is not None:
            assert _keys(banner) == before
        roles = dev.roles()
        assert list(roles) == ["plugin:example"]
        plugin = roles["plugin:example"][0]
        assert f"plugin-example {plugin.pid}" in banner
        environ = plugin.environ()
        assert "AWS_SECRET_ACCESS_KEY" in psutil.Process(dev.proc.pid).environ()
        assert environ["PLUGIN_EXAMPLE_TOKEN"] == "its-own"
        assert not set(environ) & {
            "AWS_SECRET_ACCESS_KEY",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "DATABASE_URL",
            "REDIS_URL",
        }
        assert listens_on(dev.proc.pid, port)
        await _exercise(port, _keys(banner)["demo-premium"])
    finally:
        await asyncio.to_thread(dev.stop, signal.SIGTERM)
    assert not _ours(state_dir)


async def test_wfs_dev_stops_when_a_role_dies_or_it_is_killed(state_dir: Path) -> None:
    """A worker that dies is reported and ends wfs dev with exit 1, stopping the rest; a
    SIGKILLed wfs dev leaves nothing behind either (children watch their stdin)."""
    dev, _ = await asyncio.to_thread(_start, state_dir, free_port(), "--processes", "4")
    family = dev.family()
    try:
        workers = dev.roles()["worker"]
        assert len(workers) == 2
        workers[1].kill()
        await asyncio.to_thread(dev.wait_exit, family, 1)
    finally:
        dev.proc.kill()
    died = rf"^error: worker-2 \(pid {workers[1].pid}\) exited with code -9; stopping wfs dev"
    assert re.search(died, dev.output, re.MULTILINE), dev.output

    dev, _ = await asyncio.to_thread(_start, state_dir, free_port())
    family = dev.family()
    dev.proc.kill()
    await asyncio.to_thread(_assert_gone, family, 60)
    assert not _ours(state_dir)
