"""`wfs dev` from an empty state dir: embedded services, migrations, seeds, API, worker, and a
clean stop on SIGINT and SIGTERM; a second run reuses the state and its keys."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.support import GraphQLClient, free_port

ROOT = Path(__file__).resolve().parents[2]
WFS = Path(sys.executable).parent / "wfs"


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "STATE_DIR")
    }
    return env | {"LOG_LEVEL": "warning"}


def _start(state_dir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(WFS), "dev", "--state-dir", str(state_dir), "--port", str(port)],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if line.startswith("Ctrl-C stops everything"):
            return proc, "".join(out)
    proc.kill()
    raise AssertionError("wfs dev did not become ready:\n" + "".join(out))


def _ours(state_dir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(state_dir) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def _stop(proc: subprocess.Popen[str], sig: int, state_dir: Path) -> str:
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    deadline = time.monotonic() + 10
    while _ours(state_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours(state_dir), f"left running: {[p.cmdline() for p in _ours(state_dir)]}"
    return rest


async def _exercise(port: int, key: str) -> None:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"postgres": True, "redis": True, "temporal": True}
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert "graphiql" in page.text.lower()
    client = GraphQLClient(base, key)
    viewer = await client.data("{ viewer { role tenant { name tier } } }")
    assert viewer["viewer"] == {
        "role": "ADMIN",
        "tenant": {"name": "demo-premium", "tier": "PREMIUM"},
    }
    template = await client.data('{ template(name: "order-summary") { exampleParams } }')
    params = template["template"]["exampleParams"] | {"wait_seconds": 0}
    started = await client.data(
        'mutation($p: JSON!) { startExecution(input: {templateName: "order-summary", params: $p})'
        " { ... on Execution { id } } }",
        {"p": params},
    )
    execution_id = started["startExecution"]["id"]
    async with asyncio.timeout(60):
        while True:
            status = (
                await client.data(
                    "query($id: ID!) { execution(id: $id) { status } }", {"id": execution_id}
                )
            )["execution"]["status"]
            if status == "COMPLETED":
                break
            assert status in ("PENDING", "RUNNING"), status
            await asyncio.sleep(0.2)


def _keys(banner: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(demo-\w+)\s+(wfs_\S+)$", banner, re.MULTILINE))


async def test_wfs_dev_from_empty_state_then_again(tmp_path_factory: object) -> None:
    state_dir = ROOT / ".wfs-test" / f"dev-{os.getpid()}"
    port = free_port()
    try:
        proc, banner = await asyncio.to_thread(_start, state_dir, port)
        keys = _keys(banner)
        assert set(keys) == {"demo-free", "demo-pro", "demo-premium", "demo-enterprise"}
        assert f"http://127.0.0.1:{port}/graphql" in banner
        assert re.search(r"Temporal UI\s+http://127\.0\.0\.1:\d+", banner)
        assert (state_dir / "services.json").exists()
        await _exercise(port, keys["demo-premium"])

        # Another wfs command from the same state dir uses the running services.
        created = await asyncio.to_thread(
            subprocess.run,
            [str(WFS), "apikey", "create", "--tenant", "demo-free", "--role", "viewer"],
            cwd=ROOT,
            env=_env() | {"STATE_DIR": str(state_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        new_key = created.stdout.strip().splitlines()[-1]
        viewer = await GraphQLClient(f"http://127.0.0.1:{port}", new_key).data(
            "{ viewer { role } }"
        )
        assert viewer["viewer"]["role"] == "VIEWER"

        await asyncio.to_thread(_stop, proc, signal.SIGINT, state_dir)
        assert not (state_dir / "services.json").exists()

        # Second run: same state, same keys, stopped by SIGTERM this time.
        proc, banner = await asyncio.to_thread(_start, state_dir, port)
        assert _keys(banner) == keys
        await _exercise(port, keys["demo-premium"])
        await asyncio.to_thread(_stop, proc, signal.SIGTERM, state_dir)
    finally:
        for p in _ours(state_dir):
            p.kill()
        shutil.rmtree(state_dir, ignore_errors=True)
