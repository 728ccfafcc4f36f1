"""The plugin worker's side of the sandbox: run one plugin call in a fresh, limited process and
say how it ended.

Each call (and the one `describe` at worker start) is a new interpreter,
`python -I -B -m app.plugins.sandbox_child`, started with:

- a scrubbed environment: PATH, LANG, HOME and TMPDIR (its temp dir) and the variables the
  plugin declares in `env` - never one of the service's settings (DATABASE_URL, OPENAI_API_KEY,
  AWS_* ...: `refused_env`);
- its own temp dir as working directory, removed after the call;
- its own session (process group), so a timeout kills everything it started;
- the request on stdin; the answer comes back as JSON lines on a pipe of its own (what the
  plugin prints goes to a bounded log tail instead), bounded in size; what it prints is
  bounded too where the spec says so (`max_printed_bytes`: the process is killed past it).

Before its first sandbox process, this process makes itself non-dumpable
(prctl(PR_SET_DUMPABLE, 0), Linux): a process of the same (non-root) uid - a plugin's child
that got past the fence - cannot read its /proc/<pid>/environ or memory. Root (or
CAP_SYS_PTRACE) still can: run workers as an unprivileged user (docs/plugins-sandbox.md).

The child sets its OS limits and the audit-hook fence before the plugin's first line runs
(app/plugins/sandbox_child.py, app/plugins/fence.py). The child never gets the Temporal
connection or anything of this process's memory: it is exec'd, not forked. A fresh process per
call costs ~30-60 ms of interpreter start (bench/plugin_call.py measures it) and buys that no
call sees another's state - tenants' data included - and that a crash or kill takes nothing
else down.

`run_sandboxed` returns a `CallOutcome` (kind: ok, timeout, cpu, memory, file_size, silent,
killed, crashed, exited, raised, refused, output); workers/plugin_worker.py turns it into the
activity's result or a Temporal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from app.plugins.api import PluginLimits
from app.plugins.sandbox_child import LIFELINE_EXIT_CODE, MEMORY_EXIT_CODE

CHILD_MODULE = "app.plugins.sandbox_child"
LOG_TAIL_BYTES = 4096  # of what the plugin printed, kept for the log
# The service's own configuration never reaches a plugin, even if it declares the name.
# (LD_* and MALLOC_* would change what runs before the fence: LD_PRELOAD loads any library.)
REFUSED_ENV_PREFIXES = ("AWS_", "PG", "TEMPORAL_", "WFS_", "PYTHON", "LD_", "MALLOC_")
BASE_ENV = ("PATH", "LANG", "LC_ALL")
# Per heartbeat interval the step declares, how many may pass without one before it is killed.
MISSED_BEATS = 3
LIMIT_FIELDS = tuple(f.name for f in fields(PluginLimits))


@dataclass(frozen=True)
class SandboxSpec:
    """How one plugin's calls run: its effective limits, network and environment."""

    plugin: str
    limits: PluginLimits
    network: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None  # declared variables with their values
    max_file_mb: int = 64
    max_output_bytes: int = 1024 * 1024
    # What the plugin may print (stdout and stderr) before it is killed; None: no bound.
    max_printed_bytes: int | None = None
    # Folders put first on the child's sys.path (and readable through the fence): set by the
    # service only (tests' throwaway distributions), never by a plugin.
    paths: tuple[str, ...] = ()


@dataclass
class CallOutcome:
    kind: str
    output: Any = None
    message: str = ""
    seconds: float = 0.0
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def effective_limits(declared: PluginLimits, override: Mapping[str, float] | None) -> PluginLimits:
    """The plugin's declared limits, each lowered (never raised) by the operator's override
    (PLUGIN_LIMITS)."""
    if not override:
        return declared
    lowered = {
        name: type(getattr(declared, name))(min(getattr(declared, name), value))
        for name, value in override.items()
        if name in LIMIT_FIELDS
    }
    return replace(declared, **lowered)


def refused_env(names: Iterable[str], settings_names: Iterable[str]) -> list[str]:
    """Declared variables that are the service's own configuration (never passed on)."""
    own = {n.upper() for n in settings_names}
    return sorted(
        n for n in names if n.upper() in own or n.upper().startswith(REFUSED_ENV_PREFIXES)
    )


def child_env(spec: SandboxSpec, temp_dir: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env |= dict(spec.env or {})
    # One malloc arena: each thread's own would reserve 64 MB of the address-space limit.
    env |= {"HOME": temp_dir, "TMPDIR": temp_dir, "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"}
    return env


def operator_paths() -> list[str]:
    """This process's PYTHONPATH folders: `-I` keeps the child from reading the variable, but
    a plugin installed there (by the operator) must be found by its sandbox too."""
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


_protected = False


def protect_this_process() -> None:
    """prctl(PR_SET_DUMPABLE, 0) once (Linux; elsewhere nothing): other processes of this uid
    may no longer read /proc/<pid>/environ, mem, maps or ptrace this one. Undone by nothing
    but exec; children start dumpable again (exec resets it), which is what we want."""
    global _protected
    if _protected or not sys.platform.startswith("linux"):
        return
    _protected = True
    import ctypes  # here, not at the top: the sandbox child imports this module's neighbours

    pr_set_dumpable = 4
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def is_dumpable() -> bool:
    """Whether this process is dumpable (prctl(PR_GET_DUMPABLE)); True off Linux."""
    if not sys.platform.startswith("linux"):
        return True
    import ctypes

    pr_get_dumpable = 3
    return bool(ctypes.CDLL(None).prctl(pr_get_dumpable, 0, 0, 0, 0))


class _Overflow(Exception):
    """The child sent a line longer than the output bound."""


class SandboxProcess:
    """One started sandbox process, for one call: it has set its limits, installed the fence
    and imported the plugin (or is doing so) and waits for the call on stdin."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        pipe: asyncio.BaseTransport,
        answers: asyncio.StreamReader,
        output_tail: asyncio.Task[tuple[bytes, bool]],
        temp_dir: str,
    ) -> None:
        self.proc = proc
        self.pipe = pipe
        self.answers = answers
        self.output_tail = output_tail
        self.temp_dir = temp_dir

    @classmethod
    async def start(cls, spec: SandboxSpec, op: str = "run") -> SandboxProcess:
        temp_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"wfs-plugin-{spec.plugin}-")
        try:
            started = cls(*await _spawn(spec, temp_dir), temp_dir)
        except BaseException:
            shutil.rmtree(temp_dir, True)  # not in a thread: we may be cancelled
            raise
        setup = {
            "op": op,
            "plugin": spec.plugin,
            "limits": {name: getattr(spec.limits, name) for name in LIMIT_FIELDS},
            "network": list(spec.network),
            "max_file_mb": spec.max_file_mb,
            "paths": [*spec.paths, *operator_paths()],
        }
        try:
            await started.send(setup)
        except BaseException:  # cancelled (the pool closing): leave no process behind
            await asyncio.shield(started.close())
            raise
        return started

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()

    async def close(self) -> None:
        """Kill it if it still runs, reap it, remove its temp dir. Safe to call twice."""
        if self.proc.returncode is None:
            _kill(self.proc)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(self.proc.wait())
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.pipe.close()
        await asyncio.to_thread(shutil.rmtree, self.temp_dir, True)


class WarmPool:
    """Sandbox processes started ahead of their calls, so a call does not wait for the
    interpreter's start and the plugin's import (~0.1-0.5 s here). Each serves one call and
    ends, as without the pool: only the start moves off the call's path. Taking one starts
    its replacement."""

    def __init__(self, spec: SandboxSpec, size: int) -> None:
        self.spec = spec
        self.size = size
        self.ready: list[SandboxProcess] = []
        self.starting: set[asyncio.Task[None]] = set()
        self.closed = False

    def fill(self) -> None:
        while not self.closed and len(self.ready) + len(self.starting) < self.size:
            task = asyncio.create_task(self._start_one())
            self.starting.add(task)
            task.add_done_callback(self.starting.discard)

    async def _start_one(self) -> None:
        try:
            spare = await SandboxProcess.start(self.spec)
        except Exception:  # the next take() starts one itself and reports its failure
            return
        if self.closed:
            await spare.close()
        else:
            self.ready.append(spare)

    async def take(self) -> SandboxProcess:
        """A started process still alive (one that died idle is dropped), else a new one."""
        try:
            while self.ready:
                spare = self.ready.pop(0)
                if spare.alive():
                    return spare
                await spare.close()
            return await SandboxProcess.start(self.spec)
        finally:
            self.fill()

    async def close(self) -> None:
        self.closed = True
        for task in list(self.starting):
            task.cancel()
        await asyncio.gather(*self.starting, return_exceptions=True)
        spares, self.ready = self.ready, []
        await asyncio.gather(*(spare.close() for spare in spares))


async def run_sandboxed(
    spec: SandboxSpec,
    request: dict[str, Any],
    timeout: float,
    on_heartbeat: Callable[..., None] | None = None,
    heartbeat_seconds: float | None = None,
    pool: WarmPool | None = None,
) -> CallOutcome:
    """Run `request` (op describe, or op run with step, input, ctx) in a sandbox process,
    from `pool` when given. Cancelling this kills the process."""
    started = time.monotonic()
    op = request.get("op", "run")
    if pool is not None and op == "run":
        sandbox = await pool.take()
    else:
        sandbox = await SandboxProcess.start(spec, op)
    try:
        if op == "run":
            await sandbox.send({k: v for k, v in request.items() if k != "op"})
        silence = heartbeat_seconds * MISSED_BEATS if heartbeat_seconds else None
        try:
            async with asyncio.timeout(timeout):
                final = await _read_answers(sandbox.answers, on_heartbeat, silence)
                returncode = await sandbox.proc.wait()
        except TimeoutError:
            outcome = CallOutcome("timeout", message=f"timed out after {timeout:g} s")
        except _Silent:
            outcome = CallOutcome("silent", message=f"sent no heartbeat for {silence:g} s")
        except _Overflow:
            outcome = CallOutcome(
                "output", message=f"answered more than {spec.max_output_bytes} bytes of output"
            )
        else:
            outcome = _judge(final, returncode, spec.limits)
        await sandbox.close()
        outcome.log_tail, over = await _tail(sandbox.output_tail)
        if over:
            outcome = CallOutcome(
                "output",
                message=f"printed more than {spec.max_printed_bytes} bytes",
                log_tail=outcome.log_tail,
            )
        outcome.seconds = time.monotonic() - started
        return outcome
    finally:
        await sandbox.close()  # cancelled: leave nothing running


async def _spawn(
    spec: SandboxSpec, temp_dir: str
) -> tuple[
    asyncio.subprocess.Process,
    asyncio.BaseTransport,
    asyncio.StreamReader,
    asyncio.Task[tuple[bytes, bool]],
]:
    protect_this_process()
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # no PYTHON* variables, no user site, no script folder on sys.path
            "-B",
            "-m",
            CHILD_MODULE,
            str(write_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=temp_dir,
            env=child_env(spec, temp_dir),
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        return await _connect(spec, proc, read_fd)
    except BaseException:  # cancelled half-way: the process must not outlive this
        _kill(proc)
        raise


async def _connect(
    spec: SandboxSpec, proc: asyncio.subprocess.Process, read_fd: int
) -> tuple[
    asyncio.subprocess.Process,
    asyncio.BaseTransport,
    asyncio.StreamReader,
    asyncio.Task[tuple[bytes, bool]],
]:
    loop = asyncio.get_running_loop()
    # An answer line holds the output as JSON (escapes may make it longer than its compact
    # size, which is checked exactly afterwards): twice the bound and a little.
    answers = asyncio.StreamReader(limit=2 * spec.max_output_bytes + 1024)
    pipe, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(answers), os.fdopen(read_fd, "rb", 0)
    )
    assert proc.stdout is not None
    printed = asyncio.create_task(_keep_tail(proc.stdout, proc, spec.max_printed_bytes))
    return proc, pipe, answers, printed


class _Silent(Exception):
    """The step declared a heartbeat interval and stopped beating."""


async def _read_answers(
    answers: asyncio.StreamReader,
    on_heartbeat: Callable[..., None] | None,
    silence: float | None,
) -> dict[str, Any] | None:
    """Heartbeats are passed on; returns the final answer (None if the pipe closed first)."""
    while True:
        try:
            line = await asyncio.wait_for(answers.readline(), silence)
        except TimeoutError as exc:
            raise _Silent from exc
        except ValueError as exc:  # asyncio's LimitOverrunError comes out of readline so
            raise _Overflow from exc
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            continue  # not ours to trust: a final answer is required, the rest is ignored
        if not isinstance(message, dict):
            continue
        if "heartbeat" in message:
            if on_heartbeat is not None:
                details = message["heartbeat"]
                on_heartbeat(*(details if isinstance(details, list) else []))
            continue
        if "ok" in message or "error" in message:
            return message


def _judge(final: dict[str, Any] | None, returncode: int, limits: PluginLimits) -> CallOutcome:
    if final is not None and "ok" in final:
        return CallOutcome("ok", output=final["ok"])
    if final is not None:
        error = final["error"] if isinstance(final.get("error"), dict) else {}
        kind = str(error.get("kind")) if error.get("kind") in ("refused", "output") else "raised"
        return CallOutcome(kind, message=str(error.get("message", "failed"))[:500])
    if returncode == MEMORY_EXIT_CODE:
        return CallOutcome("memory", message=f"exceeded its memory limit ({limits.memory_mb} MB)")
    if returncode == -signal.SIGXCPU:
        return CallOutcome("cpu", message=f"exceeded its CPU limit ({limits.cpu_seconds} s)")
    if returncode == -signal.SIGXFSZ:
        return CallOutcome("file_size", message="wrote a file over its size limit")
    if returncode == -signal.SIGKILL:
        # Nobody here sent it: the CPU hard limit (a second past the soft one, when SIGXCPU
        # was ignored) or the kernel's OOM killer (a container's memory limit).
        return CallOutcome(
            "killed",
            message=f"plugin process was killed (signal 9): over its CPU limit "
            f"({limits.cpu_seconds} s) or out of memory",
        )
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
        return CallOutcome(
            "crashed", message=f"plugin process crashed (signal {-returncode}, {name})"
        )
    if returncode == LIFELINE_EXIT_CODE:  # stdin closed early: only we close it
        return CallOutcome("exited", message="plugin process lost its lifeline (stdin closed)")
    if returncode > 0:
        return CallOutcome("exited", message=f"plugin process exited with code {returncode}")
    return CallOutcome("exited", message="plugin process ended without an answer")


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL its whole process group (it is its own session leader)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _keep_tail(
    stream: asyncio.StreamReader, proc: asyncio.subprocess.Process, limit: int | None
) -> tuple[bytes, bool]:
    """Drain what the plugin prints (a full pipe would block it), keeping the last bytes;
    past `limit` bytes, kill it. Returns (tail, whether it printed over the limit)."""
    tail = b""
    total = 0
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-LOG_TAIL_BYTES:]
        total += len(chunk)
        if limit is not None and total > limit:
            _kill(proc)
            return tail, True
    return tail, False


async def _tail(task: asyncio.Task[tuple[bytes, bool]]) -> tuple[str, bool]:
    try:
        data, over = await asyncio.wait_for(task, 2)
    except TimeoutError:  # a grandchild holds the pipe open: drop the tail
        task.cancel()
        return "", False
    return data.decode("utf-8", "replace"), over
