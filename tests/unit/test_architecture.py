"""The import graph keeps its shape: every import-linter contract in pyproject.toml holds.

The contracts ([tool.importlinter]) say: app never imports workers (the CLI, the process entry
point, excepted); the production entry points (`wfs api`, `wfs worker`, `wfs migrate`) import
nothing of the dev extra (embedded servers, mail catcher); cli -> api -> domains -> models, with
workers beside the api; in each domain the service sits above its repository; workflow code
imports no I/O; and no package or module of app and workers is part of an import cycle. Each
contract is its own test, run by `lint-imports` (the CLI of import-linter), so a broken one
fails with import-linter's report of the offending import chains. Run `.venv/bin/lint-imports`
to see the same report.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"
]


def test_every_contract_has_an_id() -> None:
    """An id is how each contract below runs alone (`--contract ID`)."""
    assert CONTRACTS, "pyproject.toml declares no import contract"
    assert all(contract.get("id") for contract in CONTRACTS), CONTRACTS


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.get("id", "?") for c in CONTRACTS])
def test_import_contract_is_kept(contract: dict[str, object]) -> None:
    # Run from the repository root: import-linter reads pyproject.toml there and analyses the
    # working tree's app/ and workers/ (never an installed copy). No cache: no files written.
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "--contract", str(contract["id"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = done.stdout + done.stderr
    broken = report[report.find("Broken contracts") :] if "Broken contracts" in report else report
    assert done.returncode == 0, f"import contract {contract['name']!r} is broken:\n{broken}"
    assert "KEPT" in report, report
