"""Process helpers shared by the embedded servers: spawning, pid/lock files, ports, teardown.

* `spawn` starts a server in its own session (a terminal Ctrl-C reaches only our process,
  which then stops the servers in order) with a Linux parent-death signal, so a server
  never outlives the Python process that started it, even after SIGKILL. The kernel sends
  that signal when the *thread* that forked the child exits, so every child is forked on
  one long-lived daemon thread instead of the caller's (which may be a short-lived worker).
* `ServerProcess` owns one server of a state dir: an exclusive flock on `<name>.lock`
  (released by the kernel when the owner dies), a pid file, a rotated log file, cleanup of
  orphans from a crashed run, and a deterministic stop (signal, wait, SIGKILL the tree).
* `pick_port`/`load_ports`/`save_ports` choose and remember TCP ports.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import psutil

T = TypeVar("T")
logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
LOG_ROTATE_BYTES = 10 * 1024 * 1024

_prctl: Any = None
if sys.platform.startswith("linux"):  # resolved before any fork: no dlsym in the child
    _prctl = ctypes.CDLL(None, use_errno=True).prctl


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started (the message includes its log tail)."""


def _preexec(pdeath_signal: int, parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child between fork and exec (after setuid)
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(pdeath_signal), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), pdeath_signal)

    return preexec


_Job = tuple[Callable[[], Any], concurrent.futures.Future[Any]]
_jobs: queue.SimpleQueue[_Job] | None = None
_jobs_pid = 0
_jobs_lock = threading.Lock()


def _spawner_loop(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        fn, future = jobs.get()
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            future.set_exception(exc)


def _on_spawner_thread(fn: Callable[[], T]) -> T:
    """Run fn on the process-lifetime spawner thread (the parent of every child we fork)."""
    global _jobs, _jobs_pid
    with _jobs_lock:
        if _jobs is None or _jobs_pid != os.getpid():  # first use, or after a fork
            _jobs, _jobs_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(
                target=_spawner_loop, args=(_jobs,), name="wfs-embedded-spawner", daemon=True
            ).start()
        jobs = _jobs
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    jobs.put((fn, future))
    return future.result()


def spawn(
    argv: Sequence[str], *, log: IO[bytes], cwd: Path, env: dict[str, str] | None = None,
    user: str | None = None, pdeath_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start argv in a new session with stdout/stderr to `log` and a parent-death signal."""

    def run() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(cwd), env=env, start_new_session=True,
            preexec_fn=_preexec(pdeath_signal, os.getpid()),
            user=user, group=user, extra_groups=None if user is None else [],
        )  # fmt: skip

    return _on_spawner_thread(run)


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process exited (zombies count as exited); return the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _send(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error, OSError):
        proc.send_signal(sig)


def terminate_tree(
    pid: int, *, sig: int = signal.SIGTERM, timeout: float = 10.0,
    popen: subprocess.Popen[bytes] | None = None,
) -> None:  # fmt: skip
    """Send sig to pid, wait up to timeout, then SIGKILL its process group and descendants.

    Returns once pid and every descendant it had are gone (bounded: timeout + ~5 s).
    """
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        if family:
            _send(family[0], sig)
            alive = _wait_gone(family[:1], timeout)
            if alive:  # graceful shutdown timed out: kill the group and every descendant
                with contextlib.suppress(OSError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)
            # descendants normally exit with the leader; give them a moment, then kill them
            for proc in _wait_gone(family, 0 if alive else 3.0):
                _send(proc, signal.SIGKILL)
            _wait_gone(family, 5.0)
    finally:
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5.0)


def find_processes(names: Iterable[str], marker: str) -> list[psutil.Process]:
    """Live processes named one of names whose command line contains marker."""
    wanted = set(names)
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        info = proc.info
        if info["name"] in wanted and marker in " ".join(info["cmdline"] or ()):
            if proc.pid != os.getpid() and not _gone(proc):
                found.append(proc)
    return found


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now (SO_REUSEADDR, like the servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(
    preferred: Iterable[int | None], host: str = "127.0.0.1", exclude: Iterable[int] = ()
) -> int:
    """The first free port of preferred (None skipped), else a free random one below the
    ephemeral range (outgoing connections do not take it, so it can be reused next run)."""
    excluded = set(exclude)
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    randoms = random.sample(range(20000, low), min(64, max(low - 20000, 0)))
    for port in [*preferred, *randoms]:
        if port and port not in excluded and port_is_free(port, host):
            return port
    while True:  # let the kernel choose
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in excluded:
            return port


def load_ports(path: Path) -> dict[str, int]:
    """The ports remembered in path ({} when missing or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    items = data.items() if isinstance(data, dict) else ()
    return {k: v for k, v in items if isinstance(v, int) and 0 < v < 65536}


def save_ports(path: Path, ports: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(path)


def listens_on(pid: int | None, port: int) -> bool:
    """True when process pid has a TCP socket listening on port (not some other process)."""
    if pid is None:
        return False
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


class ServerProcess:
    """One server process of a state dir (see the module docstring)."""

    def __init__(
        self, name: str, state_dir: Path, exe_names: Sequence[str], *,
        stop_signal: int = signal.SIGTERM, stop_timeout: float = 10.0,
    ) -> None:  # fmt: skip
        self.name, self.state_dir, self.exe_names = name, state_dir, tuple(exe_names)
        self.stop_signal, self.stop_timeout = stop_signal, stop_timeout
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = state_dir / f"{name}.log"
        self.marker = f"{state_dir}{os.sep}"  # in the server's command line: finds orphans
        self.popen: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._log_offset = 0

    def acquire(self) -> None:
        """Take the state dir's lock, then end orphans left by a crashed previous owner."""
        if self._lock_fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / f"{self.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedServerError(
                f"{self.name} in {self.state_dir} is in use by another live process "
                "(stop the other `wfs dev` first, or use another state dir)"
            ) from None
        self._lock_fd = fd
        for proc in find_processes(self.exe_names, self.marker):
            logger.warning("stopping orphaned %s (pid %s) from a previous run", self.name, proc.pid)
            terminate_tree(proc.pid, sig=self.stop_signal, timeout=self.stop_timeout)
        self.pid_file.unlink(missing_ok=True)

    def launch(
        self, argv: Sequence[str], *, env: dict[str, str] | None = None,
        user: str | None = None, pdeath_signal: int = signal.SIGTERM,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        if self.log_file.exists() and self.log_file.stat().st_size > LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".log.1"))
        with open(self.log_file, "ab") as log:
            self._log_offset = log.tell()
            self.popen = spawn(
                argv, log=log, cwd=self.state_dir, env=env, user=user, pdeath_signal=pdeath_signal
            )
        self.pid_file.write_text(f"{self.popen.pid}\n")
        return self.popen

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.poll() is None else None

    def is_running(self) -> bool:
        return self.pid is not None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server logged since its last launch."""
        with contextlib.suppress(OSError), open(self.log_file, "rb") as log:
            log.seek(self._log_offset)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        return ""

    def failure(self, message: str) -> EmbeddedServerError:
        """Stop everything and build an error carrying the log tail."""
        code = self.popen.poll() if self.popen is not None else None
        tail = self.log_tail()
        self.stop()
        exited = f" (exit code {code})" if code is not None else ""
        return EmbeddedServerError(
            f"{self.name}: {message}{exited}\n--- {self.log_file} (tail) ---\n{tail}"
        )

    def stop(self) -> None:
        """Idempotent: stop the server tree, remove the pid file, release the lock."""
        popen, self.popen = self.popen, None
        if popen is not None and popen.returncode is None:  # not reaped: pid not reusable
            terminate_tree(popen.pid, sig=self.stop_signal, timeout=self.stop_timeout, popen=popen)
        if self._lock_fd is not None:
            self.pid_file.unlink(missing_ok=True)
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def launch_on_free_ports(
        self, pick: Callable[[set[int]], tuple[int, ...]], launch: Callable[..., None]
    ) -> tuple[int, ...]:
        """Take the state dir, pick ports (`pick` gets those already tried) and `launch(*ports)`;
        when another process took a port meanwhile ("address already in use"), try other
        ports, three times in all. Returns the ports the server runs on."""
        tried: set[int] = set()
        for attempt in range(3):
            self.acquire()
            ports = pick(tried)
            tried.update(ports)
            try:
                launch(*ports)
            except EmbeddedServerError as exc:
                self.stop()  # no-op unless the failure left it running
                if attempt < 2 and "address already in use" in str(exc).lower():
                    continue  # lost a race for a port: pick others
                raise
            except BaseException as exc:
                raise self.failure(f"start failed: {exc!r}") from exc
            return ports
        raise AssertionError("unreachable")


class EmbeddedServer:
    """What the embedded servers share: a ServerProcess, `pid`, `is_running`, and use as a
    context manager (start on enter, stop on exit)."""

    _proc: ServerProcess

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc.is_running()

    def start(self, timeout: float = 60) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
