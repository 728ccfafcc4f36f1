"""The stack under test: `wfs dev` as a subprocess with its own state dir, and its memory.

Only the CLI, its readiness (`/readyz`) and the files it writes (`services.json`,
`demo-keys.json`) are used, so however `wfs dev` arranges its processes (API and workers in one
process or several), the bench starts, measures and stops it the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from app.settings import read_services_file

# What the bench changes in the stack, and why: the defaults protect a shared service from one
# tenant; the bench is that one tenant, on purpose.
BENCH_ENV = {
    # 10,000 executions open at once across 4 tenants (enterprise's default is 500)
    "TIER_CONCURRENCY": json.dumps({t: 20_000 for t in ("free", "pro", "premium", "enterprise")}),
    "WS_MAX_SOCKETS_PER_TENANT": "5000",  # 1,000 subscribers over a few tenants (default 200)
    "RATE_LIMIT_PER_MINUTE": "10000000",  # thousands of starts a minute from one tenant
    "LOG_LEVEL": "warning",
}
SERVICE_URLS = ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS")  # unset: embedded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wfs_binary() -> str:
    return str(Path(sys.executable).parent / "wfs")


@dataclass
class Stack:
    """A running `wfs dev`: where its API is, its demo keys, its services, its process tree."""

    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    dev_args: list[str] = field(default_factory=list)  # e.g. --fake-llm
    api_port: int = 0
    api_url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 180) -> None:
        """Fresh state (the last run's executions would skew this one), then wait for /readyz."""
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"`wfs dev` exited during start-up:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"`wfs dev` not ready after {timeout}s:\n{self.log_tail()}")
                try:
                    if (await http.get(f"{self.api_url}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        self.services = read_services_file(self.state_dir)
        self.keys = json.loads((self.state_dir / "demo-keys.json").read_text())

    def _spawn(self) -> subprocess.Popen[bytes]:
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True)
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_URLS}
        # Its own mail catcher: another engineer's `wfs dev` may hold the default port.
        env |= {**BENCH_ENV, "SMTP_PORT": str(free_port()), **self.env}
        argv = [wfs_binary(), "dev", "--state-dir", str(self.state_dir)]
        argv += ["--port", str(self.api_port), *self.dev_args]
        # Its own session: a Ctrl-C of the bench reaches the bench, which then stops the stack.
        with (self.state_dir / "dev.log").open("wb") as log:
            return subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_tail(self, lines: int = 30) -> str:
        path = self.state_dir / "dev.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 90) -> int | None:
        """SIGINT, as Ctrl-C would (it stops every child it started); SIGKILL as a last resort."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    @property
    def pid(self) -> int:
        """The root of the stack's process tree (a test running the API itself: its own)."""
        return self.proc.pid if self.proc is not None else os.getpid()

    def api_pid(self) -> int:
        """The process listening on the API port (`wfs dev` itself, or a child of it)."""
        root = psutil.Process(self.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                conns = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            if any(c.status == "LISTEN" and c.laddr.port == self.api_port for c in conns):
                return proc.pid
        raise RuntimeError(f"no process of the stack listens on {self.api_port}")


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def label(proc: psutil.Process) -> str:
    """`wfs dev`, `wfs worker --queue ai`, `bench.raw_worker`, `postgres`, `temporal`, ..."""
    name, argv = proc.name(), proc.cmdline()
    words = [Path(a).name for a in argv]
    if "wfs" in words:  # `wfs dev --state-dir X --port N`: the command and a queue, no values
        rest, kept = words[words.index("wfs") + 1 :], ["wfs"]
        for i, word in enumerate(rest):
            after_option = i > 0 and rest[i - 1].startswith("-") and rest[i - 1] != "--queue"
            if word == "--queue" or not (word.startswith("-") or after_option):
                kept.append(word)
        return " ".join(kept)
    if "-m" in argv:  # python -m bench.raw_worker QUEUE
        return argv[argv.index("-m") + 1]
    return name


class MemorySampler:
    """Peak memory per process of one or more trees, sampled while a scenario runs.

    Python processes, Temporal and Valkey: the largest RSS seen (VmRSS). PostgreSQL is one
    postmaster and a backend per connection that share its buffers, so its line is the largest
    sum of PSS (shared pages split between the processes that map them) seen.
    """

    def __init__(self, roots: list[int], every: float = 0.5) -> None:
        self.roots, self.every = roots, every
        self.peak: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        seen: dict[str, int] = {}
        for root_pid in self.roots:
            try:
                root = psutil.Process(root_pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in procs:
                try:
                    name = label(proc)
                    if name == "postgres":
                        value = int(proc.memory_full_info().pss)
                    else:
                        value = int(proc.memory_info().rss)
                except psutil.Error:
                    continue
                if name == "postgres":
                    seen[name] = seen.get(name, 0) + value
                else:  # two processes of one role (two workers) are two lines
                    seen[name if name not in seen else f"{name} [{proc.pid}]"] = value
        for key, value in seen.items():
            self.peak[key] = max(self.peak.get(key, 0), value)

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> MemorySampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.sample()

    def mib(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in sorted(self.peak.items())}


def cpu_seconds(roots: list[int]) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) so far of every process in the trees: {pid: (label, seconds)}."""
    found: dict[int, tuple[str, float]] = {}
    for root_pid in roots:
        try:
            root = psutil.Process(root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
                found[proc.pid] = (label(proc), times.user + times.system)
            except psutil.Error:
                continue
    return found


class CpuMeter:
    """Cores each process role used while the meter ran (summed over its windows): which one
    is saturated says what bounds a rate. A process that ended inside a window is missed."""

    def __init__(self, roots: list[int] | None = None) -> None:
        self.roots = roots or [os.getpid()]  # the bench: clients, `wfs dev`, the raw worker
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._start: dict[int, tuple[str, float]] = {}
        self._t0 = 0.0

    def __enter__(self) -> CpuMeter:
        self._start, self._t0 = cpu_seconds(self.roots), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.monotonic() - self._t0
        for pid, (name, seconds) in cpu_seconds(self.roots).items():
            before = self._start.get(pid, (name, 0.0))[1]
            self.used[name] = self.used.get(name, 0.0) + seconds - before

    def cores(self, at_least: float = 0.05) -> dict[str, float]:
        wall = self.wall or 1.0
        return {k: round(v / wall, 2) for k, v in sorted(self.used.items()) if v / wall >= at_least}
