"""ruff check, ruff format and mypy are part of the suite, so CI fails on them: the service, its
tests and bench, and the plugins shipped in plugins/ (the example is what plugin authors copy)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"
# Each plugin's Python packages (plugins/<distribution>/<package>/__init__.py): the folders
# are distributions named with dashes, which mypy cannot take as packages.
PLUGIN_PACKAGES = sorted(
    str(p.parent.relative_to(ROOT)) for p in ROOT.glob("plugins/*/*/__init__.py")
)


def test_ruff_check_and_format() -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [str(RUFF), *args, "app", "workers", "tests", "bench", "alembic", "plugins"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_app_workers_and_plugins() -> None:
    assert PLUGIN_PACKAGES, "no plugin package found under plugins/"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "app", "workers", *PLUGIN_PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
