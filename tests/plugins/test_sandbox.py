"""The plugin sandbox process (app/plugins/sandbox.py, sandbox_child.py, fence.py), without
Temporal: each misbehaviour of the example plugin's `misbehave` step ends its own sandbox
process with the right outcome, and the next call in a fresh process answers.

Real processes, real rlimits, the real audit hook: nothing here is stood in for. The calls of
one test run concurrently (each is its own process) to keep the added test time small.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from app.plugins.api import PluginLimits, load_plugin
from app.plugins.sandbox import (
    SandboxSpec,
    child_env,
    effective_limits,
    is_dumpable,
    refused_env,
    run_sandboxed,
)
from app.settings import Settings

# Tight limits so a test spends little: the CPU limit in CPU seconds, a wall timeout far
# above it (the machine may be busy: the CPU limit must be what stops the loop).
LIMITS = PluginLimits(cpu_seconds=1, memory_mb=160, open_files=64, processes=0)
SPEC = SandboxSpec("example", LIMITS, env={"EXAMPLE_TOKEN": "declared-value"})
ROOMY = 60.0
WORDS = " ".join(f"distinct-word-number-{n}" for n in range(60))  # its top 50: over 1 KB


async def misbehave(mode: str, timeout: float = ROOMY, **extra: Any) -> Any:
    request = {"op": "run", "step": "misbehave", "input": {"mode": mode, **extra}, "ctx": {}}
    return await run_sandboxed(SPEC, request, timeout)


async def test_each_misbehaviour_ends_only_its_own_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The service's secrets in this (the plugin worker's) environment must not reach a plugin.
    monkeypatch.setenv("DATABASE_URL", "postgresql://secret@db/wfs")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    calls = {
        "loop": misbehave("loop"),
        "memory": misbehave("memory"),
        "crash": misbehave("crash"),
        "exit": misbehave("exit"),
        "raise": misbehave("raise"),
        "sleep": misbehave("sleep", timeout=2, seconds=600),
        "network": misbehave("network", host="127.0.0.1", port=5432),
        "files": misbehave("files", path="/etc/hostname"),
        "proc": misbehave("files", path=f"/proc/{os.getpid()}/environ"),
        "secrets": misbehave("secrets"),
        # subprocess with its audit event swapped out: _posixsubprocess.fork_exec raises none,
        # and its child would read this (the worker's) process's environment.
        "fork_exec": misbehave("fork_exec"),
        # A step declaring a heartbeat interval that goes quiet for three of them is stopped.
        "silent": run_sandboxed(
            SPEC,
            {"op": "run", "step": "misbehave", "input": {"mode": "sleep", "seconds": 600}},
            ROOMY,
            heartbeat_seconds=0.5,
        ),
        # An answer over the output bound is cut off, not read into memory.
        "output": run_sandboxed(
            SandboxSpec("example", LIMITS, max_output_bytes=64),
            {"op": "run", "step": "word_stats", "input": {"text": WORDS, "top": 50}},
            ROOMY,
        ),
    }
    done = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
    got = {name: (o.kind, o.message) for name, o in done.items()}

    assert got["loop"] == ("cpu", "exceeded its CPU limit (1 s)"), got["loop"]
    assert got["memory"] == ("memory", "exceeded its memory limit (160 MB)"), got["memory"]
    assert got["crash"] == ("crashed", "plugin process crashed (signal 6, SIGABRT)")
    assert got["exit"] == ("exited", "plugin process exited with code 3")
    assert got["raise"] == ("raised", "RuntimeError: the example plugin was told to fail")
    assert got["sleep"] == ("timeout", "timed out after 2 s")
    assert got["silent"] == ("silent", "sent no heartbeat for 1.5 s")
    assert got["output"] == ("output", "answered more than 64 bytes of output")
    for name in ("network", "files", "proc", "fork_exec"):
        assert got[name][0] == "refused", got[name]
    assert "refused starting a process (_posixsubprocess.fork_exec" in got["fork_exec"][1]
    leaked = done["fork_exec"]
    assert leaked.output is None and "PATH=" not in leaked.log_tail + leaked.message
    assert "127.0.0.1:5432 (not in its declared network)" in got["network"][1]
    assert "'/etc/hostname' (outside its temp dir)" in got["files"][1]
    secrets = done["secrets"]
    assert secrets.ok, secrets.message
    env = set(secrets.output["env"])
    assert "EXAMPLE_TOKEN" in env  # declared: passed on
    assert not env & {"DATABASE_URL", "OPENAI_API_KEY", "REDIS_URL", "TEMPORAL_ADDRESS"}
    assert env <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "TMPDIR",
        "PYTHONUNBUFFERED",
        "MALLOC_ARENA_MAX",
        "EXAMPLE_TOKEN",
    }

    # Nothing of those calls is left: the next one runs in a fresh process and answers.
    after = await misbehave("ok")
    assert after.ok and after.output["mode"] == "ok"
    assert after.output["pid"] not in {o.output and o.output.get("pid") for o in done.values()}


def plugin_temp_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("wfs-plugin-example-*"))


def escaped() -> bool:
    return Path("/tmp/wfs-fence-escape").exists()


async def test_word_stats_runs_and_the_temp_dir_goes_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This call's temp dir is made under tmp_path (the standard library's temp root, like
    # TMPDIR), so the other test process's plugin calls in /tmp cannot blur what it counts.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    request = {
        "op": "run",
        "step": "word_stats",
        "input": {"text": "the cat and the hat", "top": 1},
        "ctx": {"tenant_id": "t", "execution_id": "e", "step_id": "s", "attempt": 1},
    }
    before = plugin_temp_dirs()
    outcome = await run_sandboxed(SPEC, request, ROOMY)
    assert outcome.ok, outcome.message
    assert outcome.output == {"words": 5, "distinct": 4, "top": [["the", 2]]}
    after = plugin_temp_dirs()
    assert before == after == set()  # its private temp dir was made here, and removed
    # The process that runs sandboxes made itself non-dumpable: a same-uid process (a plugin's
    # child past the fence) cannot read its /proc/<pid>/environ or memory.
    assert not is_dumpable()


async def test_describe_gives_the_declaration_as_data() -> None:
    outcome = await run_sandboxed(SPEC, {"op": "describe"}, ROOMY)
    assert outcome.ok, outcome.message
    declared = load_plugin("example")
    assert outcome.output["version"] == declared.version
    assert [s["name"] for s in outcome.output["steps"]] == [s.name for s in declared.steps]
    assert outcome.output["limits"]["memory_mb"] == declared.limits.memory_mb


def test_operator_limits_only_lower_and_service_settings_never_pass() -> None:
    declared = PluginLimits(cpu_seconds=5, memory_mb=256, call_timeout_seconds=20)
    lowered = effective_limits(declared, {"memory_mb": 128, "cpu_seconds": 50})
    assert (lowered.memory_mb, lowered.cpu_seconds) == (128, 5)  # 50 would raise: ignored
    assert isinstance(lowered.cpu_seconds, int)
    assert refused_env(
        [
            "DATABASE_URL",
            "openai_api_key",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "ACME_KEY",
            "LD_PRELOAD",
        ],
        Settings.model_fields,
    ) == ["AWS_SECRET_ACCESS_KEY", "DATABASE_URL", "LD_PRELOAD", "PGPASSWORD", "openai_api_key"]
    env = child_env(SandboxSpec("x", declared, env={"ACME_KEY": "k"}), "/tmp/call")
    assert env["HOME"] == env["TMPDIR"] == "/tmp/call" and env["ACME_KEY"] == "k"
    with pytest.raises(ValueError, match="unknown limits"):
        Settings(_env_file=None, plugin_limits={"example": {"memry_mb": 1}})  # type: ignore[call-arg]


# Run in a child interpreter behind the fence (as a plugin step would be): each probe says
# whether it was refused by the sandbox.
FENCE_PROBES = r"""
import asyncio, gc, glob, json, os, socket, sqlite3, sys
from app.plugins.fence import Fence, SandboxRefusal
port, tmp = int(sys.argv[1]), sys.argv[2]
Fence("probe", [f"127.0.0.1:{port}"], tmp, 0, [sys.prefix, sys.base_prefix]).install()

def probe(fn):
    try:
        fn()
        return "allowed"
    except SandboxRefusal:
        return "refused"
    except Exception as exc:
        return f"failed: {type(exc).__name__}"

def connect(p):
    with socket.create_connection(("127.0.0.1", p), timeout=5):
        pass

def write_tmp():
    with open(os.path.join(tmp, "x"), "w") as f:
        f.write("ok")

def reimport(name):
    del sys.modules[name]
    __import__(name)

def udp_sendmsg(p):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendmsg([b"x"], [], 0, ("127.0.0.1", p))

def sqlite_at(path):
    sqlite3.connect(path).execute("create table t (x)").connection.close()

import resource
results = {
    # fork_exec raises no audit event: it is replaced before the fence goes on.
    "fork_exec": probe(lambda: sys.modules["_posixsubprocess"].fork_exec()),
    "reimport_posixsubprocess": probe(lambda: reimport("_posixsubprocess")),
    "gc_walk": probe(gc.get_objects),
    "udp_sendmsg": probe(lambda: udp_sendmsg(port + 1 if port < 65535 else port - 1)),
    "sqlite_outside": probe(lambda: sqlite_at("/tmp/wfs-fence-escape")),
    "sqlite_uri_outside": probe(
        lambda: sqlite3.connect("file:/tmp/wfs-fence-escape?mode=rwc", uri=True)
    ),
    "sqlite_tmp": probe(lambda: sqlite_at(os.path.join(tmp, "db.sqlite"))),
    "sqlite_memory": probe(lambda: sqlite_at(":memory:")),
    "listdir_etc": probe(lambda: os.listdir("/etc")),
    "scandir_proc": probe(lambda: list(os.scandir("/proc"))),
    "glob_etc": probe(lambda: glob.glob("/etc/*")),
    "listdir_tmp": probe(lambda: os.listdir(tmp)),
    "chdir_etc": probe(lambda: os.chdir("/etc")),
    "reverse_lookup": probe(lambda: socket.gethostbyaddr("127.0.0.1")),
    "getnameinfo": probe(lambda: socket.getnameinfo(("127.0.0.1", 80), 0)),
    "subprocess": probe(lambda: __import__("subprocess").run(["true"])),
    "fork": probe(os.fork),
    "system": probe(lambda: os.system("true")),
    "ctypes": probe(lambda: __import__("ctypes")),
    "kill_parent": probe(lambda: os.kill(os.getppid(), 0)),
    "parent_environ": probe(lambda: open(f"/proc/{os.getppid()}/environ").read()),
    "write_outside": probe(lambda: open("/tmp/wfs-fence-escape", "w")),
    "remove_outside": probe(lambda: os.remove("/tmp/wfs-fence-nothing")),
    "raise_limit": probe(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))),
    "listen": probe(lambda: socket.socket().bind(("127.0.0.1", 0))),
    "undeclared_port": probe(lambda: connect(port + 1 if port < 65535 else port - 1)),
    "undeclared_name": probe(lambda: socket.getaddrinfo("example.org", 443)),
    "declared": probe(lambda: connect(port)),
    "write_tmp": probe(write_tmp),
    "stdlib": probe(lambda: __import__("decimal")),
    "asyncio": probe(lambda: asyncio.run(asyncio.sleep(0))),  # async steps run under it
}
print(json.dumps(results))
"""


async def test_fence_refuses_what_a_plugin_may_not_do(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-B",
            "-c",
            FENCE_PROBES,
            str(port),
            str(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        server.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    results = json.loads(out)
    allowed = {
        "declared",
        "write_tmp",
        "stdlib",
        "asyncio",
        "sqlite_tmp",
        "sqlite_memory",
        "listdir_tmp",
    }
    assert {k for k, v in results.items() if v == "allowed"} == allowed, results
    assert all(v == "refused" for k, v in results.items() if k not in allowed), results
    assert not escaped()
