"""Fixtures for the step activity tests: settings with a temporary storage root, contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.db import SessionFactory, make_engine, make_sessionmaker
from app.settings import Settings
from app.steps import StepContext
from tests.conftest import s3_settings

MakeContext = Callable[..., StepContext]


@pytest.fixture
def backend() -> str:
    """The storage backend of `step_settings`; a test runs on S3 too with
    `@pytest.mark.parametrize("backend", ["local", "s3"])`."""
    return "local"


@pytest.fixture
def step_settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    settings = _step_settings(tmp_path)
    if backend == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        redis_url = request.getfixturevalue("services").redis_url
        return s3_settings(settings, endpoint, redis_url)
    return settings


def _step_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        state_dir=tmp_path / "state",
        storage_root=tmp_path / "storage",
        http_allowed_hosts=["127.0.0.1"],
        # The local test servers listen on 127.0.0.1 at ephemeral ports, some reached by name.
        http_allowed_ports=list(range(1024, 65536)),
        http_allowed_networks=["127.0.0.0/8", "::1/128"],
    )


@pytest.fixture
def make_ctx(step_settings: Settings) -> MakeContext:
    def make(
        tenant_id: str = "tenant-a",
        *,
        settings: Settings | None = None,
        sessions: SessionFactory | None = None,
        execution_id: str = "exec-1",
        step_id: str = "step-1",
        **handles: Any,
    ) -> StepContext:
        return StepContext(
            tenant_id=tenant_id,
            execution_id=execution_id,
            step_id=step_id,
            attempt=1,
            settings=settings or step_settings,
            sessions=sessions,
            **handles,
        )

    return make


@pytest.fixture(scope="session")
async def step_sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    """Sessions on the suite's fresh migrated database, without seeding templates: these tests
    need only the tenants and step_idempotency tables."""
    engine = make_engine(database_url, pool_size=2)
    yield make_sessionmaker(engine)
    await engine.dispose()
