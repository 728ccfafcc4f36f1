"""Tenants' storage usage for the tenant comparison, measured off the event loop and cached.

`tenant_storage_bytes` is the one place that asks the storage how much a tenant holds; when
storage moves behind another backend, re-point that function and nothing else.

Measuring walks a tenant's tree (app/steps/storage.walk_usage: up to quota / 4 KiB entries,
millions for the big tiers), so it never runs on the event loop nor once per request: the
process keeps each tenant's last reading for FRESH_SECONDS, and a request that finds readings
missing or stale starts one background refresh (one at a time per process, one tenant after
the other in a worker thread), waits for it at most WAIT_SECONDS, and answers with what is
known then. A tenant not measured yet reads as null, with `storageMeasuredAt` null.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from app.steps.storage import walk_usage

log = structlog.get_logger(__name__)

FRESH_SECONDS = 300.0
WAIT_SECONDS = 2.0


def tenant_storage_bytes(files_root: Path, tenant_id: uuid.UUID) -> int:
    """Bytes the tenant's storage holds, counted as its quota counts them (blocking)."""
    root = files_root / str(tenant_id)
    return walk_usage(root) if root.is_dir() else 0


@dataclass(frozen=True)
class StorageReading:
    bytes: int
    at: datetime
    taken: float  # time.monotonic() of the reading


@dataclass
class StorageGauge:
    files_root: Path
    fresh_seconds: float = FRESH_SECONDS
    readings: dict[uuid.UUID, StorageReading] = field(default_factory=dict)
    refresh: asyncio.Task[None] | None = None

    def _stale(self, tenant_id: uuid.UUID) -> bool:
        found = self.readings.get(tenant_id)
        return found is None or time.monotonic() - found.taken > self.fresh_seconds

    async def read(
        self, tenant_ids: Iterable[uuid.UUID], wait: float = WAIT_SECONDS
    ) -> dict[uuid.UUID, StorageReading]:
        """The readings of those tenants that have one, after at most `wait` seconds of a
        refresh of the missing or stale ones."""
        wanted = list(tenant_ids)
        stale = [t for t in wanted if self._stale(t)]
        task = self.refresh
        # A task left behind by a loop that has ended (tests run several) is not running.
        running = (
            task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop()
        )
        if stale and not running:
            task = self.refresh = asyncio.create_task(self._measure(stale))
            running = True
        # Nothing to wait for when every reading is fresh; a refresh already running (for
        # another request's tenants) is waited for too, and this one's follow on the next.
        if stale and running and task is not None:
            await asyncio.wait({task}, timeout=wait)
        return {t: self.readings[t] for t in wanted if t in self.readings}

    async def _measure(self, tenant_ids: list[uuid.UUID]) -> None:
        for tenant_id in tenant_ids:
            try:
                used = await asyncio.to_thread(tenant_storage_bytes, self.files_root, tenant_id)
            except OSError as exc:
                log.warning("storage.measure_failed", tenant_id=str(tenant_id), error=str(exc))
                continue
            self.readings[tenant_id] = StorageReading(used, datetime.now(UTC), time.monotonic())


_GAUGES: dict[Path, StorageGauge] = {}


def gauge_for(files_root: Path) -> StorageGauge:
    """The process's gauge of one storage root (shared, so its readings are)."""
    return _GAUGES.setdefault(files_root, StorageGauge(files_root))
