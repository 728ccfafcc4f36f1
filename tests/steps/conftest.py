"""Fixtures for the step activity tests: settings with a temporary storage root, contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.db import SessionFactory, make_engine, make_sessionmaker
from app.settings import Settings
from app.steps import StepContext

MakeContext = Callable[..., StepContext]


@pytest.fixture
def step_settings(tmp_path: Path) -> Settings:
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
