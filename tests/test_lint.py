"""ruff check, ruff format and mypy are part of the suite, so CI fails on them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_check_and_format() -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [str(RUFF), *args, "app", "workers", "tests", "bench", "alembic"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_app_and_workers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "app", "workers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
