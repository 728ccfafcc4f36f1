"""The workflow answers a progress query while it runs, from Temporal itself."""

from __future__ import annotations

import asyncio
import base64

from temporalio.client import Client

from app.executions.workflow_io import Progress
from app.settings import Settings
from tests.api.test_execution_flow import ORDER, start, wait_terminal
from tests.support import GraphQLClient


async def test_progress_query_mid_run_and_at_the_end(
    client: GraphQLClient, settings: Settings
) -> None:
    started = await start(client, {**ORDER, "wait_seconds": 3})
    execution_id = base64.urlsafe_b64decode(started["id"] + "==").decode().split(":", 1)[1]
    assert settings.temporal_address
    temporal = await Client.connect(settings.temporal_address)
    handle = temporal.get_workflow_handle(f"exec-{execution_id}")
    async with asyncio.timeout(30):
        while True:
            progress = await handle.query("progress", result_type=Progress)
            if progress.current_step == "hold":
                break
            await asyncio.sleep(0.1)
    assert (progress.done, progress.total, progress.status) == (1, 3, "RUNNING")
    assert progress.percent == 33.33
    await wait_terminal(client, started["id"])
    final = await handle.query("progress", result_type=Progress)
    assert (final.done, final.total, final.current_step, final.status) == (3, 3, None, "COMPLETED")
    description = await handle.describe()
    attrs = {k.name: v for k, v in description.typed_search_attributes}  # type: ignore[attr-defined]
    assert attrs["WfsTemplate"] == "order-summary"
    assert attrs["WfsTier"] == "pro"
