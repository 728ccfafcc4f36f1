"""Tenants' storage usage for the tenant comparison, measured off the event loop and cached.

`tenant_storage_bytes` is the one place that asks the storage how much a tenant holds, through
the storage interface (app/steps/backends.storage_usage_bytes), so it counts what the
configured backend holds: on the local backend a walk of the tenant's folder, on S3 the shared
usage counter in Redis (measured from a listing when missing). It neither creates nor seeds a
tenant's storage: a tenant that never stored a file holds 0.

Measuring may walk a tenant's tree (local: up to quota / 4 KiB entries, millions for the big
tiers) or list its keys (S3, when the counter is missing), so it never runs on the event loop
nor once per request: the
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

import structlog

from app.settings import Settings
from app.steps.backends import storage_usage_bytes

log = structlog.get_logger(__name__)

FRESH_SECONDS = 300.0
WAIT_SECONDS = 2.0


def tenant_storage_bytes(settings: Settings, tenant_id: uuid.UUID) -> int:
    """Bytes the tenant's storage holds, counted as its quota counts them (blocking)."""
    return storage_usage_bytes(settings, str(tenant_id))


@dataclass(frozen=True)
class StorageReading:
    bytes: int
    at: datetime
    taken: float  # time.monotonic() of the reading


@dataclass
class StorageGauge:
    settings: Settings
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
                used = await asyncio.to_thread(tenant_storage_bytes, self.settings, tenant_id)
            except Exception as exc:  # OSError, S3 or Redis unreachable: no reading this time
                log.warning("storage.measure_failed", tenant_id=str(tenant_id), error=str(exc))
                continue
            self.readings[tenant_id] = StorageReading(used, datetime.now(UTC), time.monotonic())


_GAUGES: dict[tuple[object, ...], StorageGauge] = {}


def gauge_for(settings: Settings) -> StorageGauge:
    """The process's gauge of one storage (shared, so its readings are): the local root, or
    the S3 bucket and prefix."""
    where = (
        settings.storage_backend,
        settings.files_root,
        settings.s3_endpoint_url,
        settings.s3_bucket,
        settings.s3_prefix,
    )
    return _GAUGES.setdefault(where, StorageGauge(settings))
