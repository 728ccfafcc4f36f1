"""The security tests' stall detector (tests/support.py loop_watch) must see CPU work that holds
the event loop, whatever the machine's load, and a wait that blocks it; not an awaited wait."""

import asyncio
import time

from tests.support import loop_watch


def _burn(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


async def test_work_holding_the_loop_counts_as_a_stall() -> None:
    async with loop_watch() as watch:
        await asyncio.sleep(0.02)
        _burn(0.3)  # on the loop, as a mistaken synchronous parse would be
        await asyncio.sleep(0.02)
    assert watch.ticks > 0
    assert watch.worst >= 0.25, watch
    assert watch.worst_wall >= watch.worst


async def test_waiting_is_not_a_stall() -> None:
    async with loop_watch() as watch:
        await asyncio.sleep(0.3)
    assert watch.ticks > 10
    assert watch.worst < 0.05, watch


async def test_a_long_blocking_wait_on_the_loop_counts_though_it_uses_no_cpu() -> None:
    async with loop_watch() as watch:
        await asyncio.sleep(0.02)
        time.sleep(1.4)  # noqa: ASYNC251 (the point: as a sync socket call without a timeout)
        await asyncio.sleep(0.02)
    assert watch.worst >= 0.3, watch
