"""`wfs apikey create/list/revoke`, `wfs platform key create/list/revoke` and `wfs tenant
suspend`, run as the operator runs them (the installed `wfs`, DATABASE_URL of the test
database): a secret is printed once and works, listings never show one, bounds are errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from app.errors import Unauthenticated
from app.models.base import utcnow
from app.tenants.service import TenantService

WFS = Path(sys.executable).parent / "wfs"


@pytest.fixture
def wfs(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run `wfs ARGS` against the test database (from an empty folder: no .env is read)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TEMPORAL_ADDRESS")}
    env |= {"DATABASE_URL": database_url, "LOG_LEVEL": "warning"}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(WFS), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert (done.returncode == 0) == ok, (args, done.stdout, done.stderr)
        return done

    return run


def row_of(listing: str, marker: str) -> list[str]:
    return next(line.split() for line in listing.splitlines() if marker in line)


async def test_apikey_create_list_revoke(wfs, sessions) -> None:  # type: ignore[no-untyped-def]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    wfs("tenant", "create", name, "--tier", "pro")
    made = wfs("apikey", "create", "--tenant", name, "--role", "operator", "--expires", "90d")
    first_line, secret = made.stdout.strip().splitlines()
    assert secret.startswith("wfs_") and "expires" in first_line
    async with sessions() as session:
        principal = await TenantService(session).authenticate(f"Bearer {secret}")
        await session.rollback()
    assert principal.tenant_name == name and principal.role == "operator"

    day = (utcnow() + timedelta(days=365)).strftime("%Y-%m-%d")
    dated = wfs("apikey", "create", "--tenant", name, "--name", "dated", "--expires", day)
    assert f"expires {day} 00:00 UTC" in dated.stdout
    forever = wfs("apikey", "create", "--tenant", name, "--role", "viewer").stdout
    assert "expires" not in forever

    listing = wfs("apikey", "list", "--tenant", name).stdout
    assert listing.splitlines()[0].split()[:4] == ["ID", "PREFIX", "ROLE", "STATE"]
    assert len(listing.splitlines()) == 4
    assert "wfs_" not in listing  # no secret, nor anything that looks like one
    prefix = secret.split("_")[1]
    key_id, _, role, state = row_of(listing, prefix)[:4]
    assert (role, state) == ("operator", "active")
    expected_day = (utcnow() + timedelta(days=90)).strftime("%Y-%m-%d")
    assert expected_day in " ".join(row_of(listing, prefix))

    revoked = wfs("apikey", "revoke", key_id)
    assert f"revoked key {prefix}" in revoked.stdout
    assert row_of(wfs("apikey", "list", "--tenant", name).stdout, prefix)[3] == "revoked"
    wfs("apikey", "revoke", key_id)  # idempotent


async def test_apikey_bounds_are_errors(wfs) -> None:  # type: ignore[no-untyped-def]
    name = f"cli-{uuid.uuid4().hex[:8]}"
    wfs("tenant", "create", name)
    for expires, says in (
        ("soon", "expected a duration"),
        ("731d", "at most 730 days ahead"),
        ("2001-01-01", "in the future"),
    ):
        refused = wfs("apikey", "create", "--tenant", name, "--expires", expires, ok=False)
        assert says in refused.stderr, refused.stderr
    assert "no API keys" in wfs("apikey", "list", "--tenant", name).stdout
    missing = wfs("apikey", "list", "--tenant", "no-such-tenant", ok=False)
    assert "not found" in missing.stderr
    unknown = wfs("apikey", "revoke", str(uuid.uuid4()), ok=False)
    assert "no API key" in unknown.stderr


async def test_platform_key_commands_and_suspension(wfs, sessions) -> None:  # type: ignore[no-untyped-def]
    label = f"ops-{uuid.uuid4().hex[:6]}"
    made = wfs("platform", "key", "create", "--name", label).stdout.strip().splitlines()
    secret = made[-1]
    assert secret.startswith("wfsp_")
    async with sessions() as session:
        caller = await TenantService(session).authenticate_any(f"Bearer {secret}")
        await session.rollback()
    assert caller.name == label  # type: ignore[union-attr]

    listing = wfs("platform", "key", "list").stdout
    assert "wfsp_" not in listing
    key_id, prefix, state = row_of(listing, label)[:3]
    assert prefix == secret.split("_")[1] and state == "active"
    wfs("platform", "key", "revoke", key_id)
    assert row_of(wfs("platform", "key", "list").stdout, label)[2] == "revoked"

    name = f"cli-{uuid.uuid4().hex[:8]}"
    wfs("tenant", "create", name)
    key = wfs("apikey", "create", "--tenant", name).stdout.strip().splitlines()[-1]
    assert f"tenant {name}: suspended" in wfs("tenant", "suspend", name).stdout
    async with sessions() as session:
        with pytest.raises(Unauthenticated, match="tenant suspended"):
            await TenantService(session).authenticate(f"Bearer {key}")
    assert f"tenant {name}: active" in wfs("tenant", "suspend", name, "--resume").stdout
