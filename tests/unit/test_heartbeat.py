"""workers/heartbeat.py inside a real activity context (temporalio.testing.ActivityEnvironment):
liveness beats while a step runs, the step's own progress details are repeated, and a
cancelled activity cancels the step and waits for it to unwind, but not forever."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

import workers.heartbeat as hb
from workers.heartbeat import Beats, beat_every, heartbeating


async def test_beats_while_the_step_runs_and_repeats_its_details() -> None:
    env = ActivityEnvironment()
    seen: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: seen.append(details)

    async def activity() -> str:
        beats = Beats()

        async def step() -> str:
            beats({"done": 1})
            await asyncio.sleep(0.35)
            return "ok"

        return await heartbeating(step(), 0.1, beats)

    assert await env.run(activity) == "ok"
    assert seen[0] == ({"done": 1},)  # the step's own beat
    assert len(seen) >= 3 and all(d == ({"done": 1},) for d in seen)  # repeated by liveness


async def test_cancelling_the_activity_cancels_the_step() -> None:
    env = ActivityEnvironment()
    unwound = asyncio.Event()

    async def step() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # cleanup that takes a moment
            unwound.set()

    async def activity() -> None:
        await heartbeating(step(), 0.1)

    task = asyncio.ensure_future(env.run(activity))
    await asyncio.sleep(0.2)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert unwound.is_set()  # it waited for the step's cleanup


async def test_a_step_ignoring_cancellation_does_not_hold_the_activity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hb, "CANCEL_GRACE_SECONDS", 0.2)
    env = ActivityEnvironment()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue  # swallows cancellation

    async def activity() -> None:
        await heartbeating(stubborn(), 0.1)

    task = asyncio.ensure_future(env.run(activity))
    await asyncio.sleep(0.2)
    env.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    release.set()


async def test_the_pace_is_a_third_of_the_heartbeat_timeout_it_was_scheduled_with() -> None:
    env = ActivityEnvironment()
    paces = []
    for timeout in (timedelta(seconds=15), timedelta(seconds=90), None):
        env.info = dataclasses.replace(env.info, heartbeat_timeout=timeout)
        paces.append(env.run(lambda: beat_every(activity.info())))
    assert paces == [5.0, 30.0, 10.0]  # the last: no timeout, the liveness default
