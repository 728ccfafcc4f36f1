"""The dispatcher: turns new notifications into deliveries and starts their workflows.

Every WEBHOOK_DISPATCH_INTERVAL_SECONDS the worker runs `run_round`:
1. For each enabled webhook behind its tenant's log (one query finds them), under its row lock
   (SKIP LOCKED: another worker busy with it moves it on), read the tenant's notifications
   after the webhook's `last_seq` (NotificationService.read_after), insert a delivery row for
   each one whose event the webhook wants (unique per (webhook, seq)), and advance `last_seq`,
   in one transaction: a worker that dies before the commit leaves nothing done, after it
   nothing undone.
2. Start a delivery workflow for every row not yet started, a batch at a time until none is
   left or one interval is spent. A batch is claimed with FOR UPDATE SKIP LOCKED (two
   workers never take the same row) and interleaves tenants (each one's oldest row first, so
   a tenant with a large backlog does not hold back another's delivery); its rows are
   marked started in the transaction that claimed them. The workflow id derives from
   (webhook id, seq) with REJECT_DUPLICATE, so a crash between a start and the commit only
   repeats a start that Temporal refuses.
3. Upkeep: delete a batch of DELIVERED/FAILED rows older than WEBHOOK_DELIVERY_RETENTION_DAYS,
   and mark FAILED the PENDING rows that have shown no sign of life for STALLED_AFTER and
   whose workflow has closed (it failed or was terminated before recording an outcome).
Latency is at most one interval (default 5 s) plus the delivery itself.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from app.db import SessionFactory
from app.models import WebhookDelivery
from app.models.base import utcnow
from app.notifications.service import NotificationService
from app.settings import Settings
from app.webhooks.events import EVENT_OF_TYPE, payload
from app.webhooks.repository import WebhookRepository
from app.webhooks.workflow_io import WEBHOOK_WORKFLOW, DeliveryJob, workflow_id

log = structlog.get_logger(__name__)
START_BATCH = 100
PURGE_BATCH = 1000
SWEEP_BATCH = 100
# A PENDING delivery this long past its start or its next attempt's due time is checked: an
# attempt lasts at most WEBHOOK_TIMEOUT_SECONDS (<= 60) plus 30 s.
STALLED_AFTER = timedelta(minutes=10)


class Dispatcher:
    def __init__(self, sessions: SessionFactory, temporal: Client, settings: Settings) -> None:
        self.sessions, self.temporal, self.settings = sessions, temporal, settings

    async def run_round(self) -> int:
        """Dispatch every enabled webhook with new notifications, then start unstarted
        deliveries; returns how many workflows were started. Upkeep (the retention purge,
        the sweep of stalled deliveries) follows, and a failure there stops nothing else."""
        async with self.sessions() as session:
            webhook_ids = await WebhookRepository(session).behind_ids()
        for webhook_id in webhook_ids:
            await self.dispatch(webhook_id)
        started = await self.start_pending()
        for upkeep in (self.purge, self.sweep_stalled):
            try:
                await upkeep()
            except Exception as exc:
                log.warning(f"webhook.{upkeep.__name__}_failed", error=str(exc))
        return started

    async def purge(self) -> int:
        """Delete a batch of DELIVERED/FAILED deliveries older than the retention."""
        cutoff = utcnow() - timedelta(days=self.settings.webhook_delivery_retention_days)
        async with self.sessions() as session:
            deleted = await WebhookRepository(session).delete_finished_before(cutoff, PURGE_BATCH)
            await session.commit()
        if deleted:
            log.info("webhook.deliveries_purged", count=deleted)
        return deleted

    async def sweep_stalled(self) -> int:
        """Mark FAILED the stalled PENDING deliveries whose workflow has closed (or is gone):
        a workflow that failed, timed out or was terminated before recording an outcome
        would leave its row PENDING for ever. Returns how many were marked."""
        async with self.sessions() as session:
            rows = await WebhookRepository(session).stalled(utcnow() - STALLED_AFTER, SWEEP_BATCH)
        failed = 0
        for row in rows:
            status = await self._workflow_status(row)
            if status == WorkflowExecutionStatus.RUNNING:
                continue
            ended = status.name if status is not None else "NOT_FOUND"
            async with self.sessions() as session:
                failed += await WebhookRepository(session).fail_pending(
                    row.id, f"the delivery workflow ended without an outcome ({ended})"
                )
                await session.commit()
        return failed

    async def _workflow_status(self, row: WebhookDelivery) -> WorkflowExecutionStatus | None:
        """The status of the row's workflow; None when Temporal has no such workflow."""
        redelivery = str(row.id) if row.redelivery_of is not None else None
        handle = self.temporal.get_workflow_handle(
            workflow_id(str(row.webhook_id), row.seq, redelivery)
        )
        try:
            return (await handle.describe()).status
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def dispatch(self, webhook_id: uuid.UUID) -> int:
        """Add deliveries for one webhook's new notifications (one read, at most
        READ_LIMIT) and advance its cursor; returns how many rows were added."""
        async with self.sessions() as session:
            repo = WebhookRepository(session)
            webhook = await repo.lock_enabled(webhook_id)
            if webhook is None:
                return 0
            notes = await NotificationService(session).read_after(
                webhook.tenant_id, webhook.last_seq
            )
            rows = [
                {
                    "webhook_id": webhook.id,
                    "tenant_id": webhook.tenant_id,
                    "seq": note.seq,
                    "event_type": EVENT_OF_TYPE[note.type],
                    "payload": payload(note),
                    "status": "PENDING",
                    "attempts": 0,
                    "created_at": utcnow(),
                }
                for note in notes
                if EVENT_OF_TYPE[note.type] in webhook.events
            ]
            added = len(await repo.add_deliveries(rows))
            if notes:
                webhook.last_seq = notes[-1].seq
            await session.commit()
        return added

    async def start_pending(self) -> int:
        """Start the workflows of deliveries not yet started, a claimed batch at a time, until
        none is left or the round's time (one dispatch interval) is spent; returns how many."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.webhook_dispatch_interval_seconds
        started = 0
        while True:
            count = await self._start_batch()
            started += count
            if count < START_BATCH or loop.time() >= deadline:
                return started

    async def _start_batch(self) -> int:
        """Claim a batch (rows locked until commit, see claim_unstarted), start each row's
        workflow and mark the started ones in the same transaction."""
        async with self.sessions() as session:
            repo = WebhookRepository(session)
            rows = await repo.claim_unstarted(START_BATCH)
            started: list[uuid.UUID] = []
            try:
                for row in rows:
                    await self._start(row)
                    started.append(row.id)
            finally:
                if started:
                    await repo.mark_started(started, utcnow())
                    await session.commit()
        return len(started)

    async def _start(self, row: WebhookDelivery) -> None:
        settings = self.settings
        redelivery = str(row.id) if row.redelivery_of is not None else None
        job = DeliveryJob(
            delivery_id=str(row.id),
            max_attempts=settings.webhook_max_attempts,
            retry_initial_seconds=settings.webhook_retry_initial_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
        )
        try:
            await self.temporal.start_workflow(
                WEBHOOK_WORKFLOW,
                job,
                id=workflow_id(str(row.webhook_id), row.seq, redelivery),
                task_queue=settings.webhook_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # started by another worker, or before a crash: once is enough
        log.info(
            "webhook.delivery_started", delivery_id=str(row.id), webhook_id=str(row.webhook_id)
        )
