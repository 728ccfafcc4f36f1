"""Bounded time and a fair share for validations (and other CPU-bound checks of tenant input).

`run_bounded` runs a check in a small thread pool with a deadline; every keyword looks at the
deadline of its thread (`check_deadline`), so a schema that is merely expensive (nested `anyOf`
over shared `$defs`) stops by itself instead of burning a core after the caller left. The pool
is shared by every tenant; `run_bounded` lets one tenant hold at most MAX_RUNNING_PER_TENANT of
its threads, and its other calls wait within their own deadline.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class ValidationTimeout(Exception):
    """The deadline of the current validation passed before it finished."""


# --- the deadline of the current thread ------------------------------------------------------

_local = threading.local()


def check_deadline() -> None:
    """Raise ValidationTimeout if this thread's validation is past its deadline (no-op when
    none is set, as for the trusted schemas of step inputs checked on a worker)."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise ValidationTimeout


@contextmanager
def deadline_at(deadline: float) -> Iterator[None]:
    """Validation in this thread stops at `deadline` (time.monotonic())."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


# One small pool: validations queue behind each other rather than take every thread, and a
# queued one whose deadline passes while it waits stops at its first keyword.
_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="wfs-json")

# Validations of one tenant that may hold a pool thread at once. The pool is shared by every
# tenant: without this, one tenant's loop of expensive validations takes every thread and
# everyone else's params queue behind it. Its other validations wait for its slot within
# their own deadline, so it is the abusive tenant whose requests time out.
MAX_RUNNING_PER_TENANT = 1


class _TenantGate:
    """The pool threads one tenant holds on one event loop, and its calls waiting for one in
    arrival order. Everything here runs on the loop; a freed slot is handed to the first
    waiter, so a newcomer never overtakes a waiting call."""

    def __init__(self) -> None:
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def enter(self, timeout: float) -> None:
        """Take a slot within `timeout` seconds, or raise TimeoutError."""
        if self.running < MAX_RUNNING_PER_TENANT and not self.waiting:
            self.running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            # Shielded: on timeout or cancellation we look at `turn` ourselves, so a slot
            # handed over just as the caller gave up is passed on, never lost.
            await asyncio.wait_for(asyncio.shield(turn), timeout)
        except BaseException:
            if turn.done():
                self.leave()
            else:
                turn.cancel()
                self.waiting.remove(turn)
            raise

    def leave(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot changes hands; `running` stays
                return
        self.running -= 1

    @property
    def idle(self) -> bool:
        return self.running == 0 and not self.waiting


# Per loop: the futures of waiting calls belong to their loop. Idle gates are dropped, so
# tenants cost nothing between their validations.
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, _TenantGate]] = (
    weakref.WeakKeyDictionary()
)


async def _enter(tenant: Hashable, deadline: float) -> Callable[[Any], None]:
    """Take one of the tenant's slots before `deadline`; returns what frees it (callable
    from any thread, once)."""
    loop = asyncio.get_running_loop()
    gates = _GATES.setdefault(loop, {})
    gate = gates.setdefault(tenant, _TenantGate())

    def drop_if_idle() -> None:
        if gate.idle and gates.get(tenant) is gate:
            del gates[tenant]

    def on_loop() -> None:
        gate.leave()
        drop_if_idle()

    try:
        await gate.enter(_remaining(deadline))
    except BaseException as exc:
        drop_if_idle()
        if isinstance(exc, TimeoutError):
            raise ValidationTimeout from exc
        raise

    def release(_: Any) -> None:
        try:
            loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # the loop closed before the thread finished: nobody waits
            pass

    return release


def _call_before(deadline: float, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    with deadline_at(deadline):
        check_deadline()
        return fn(*args)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def run_bounded(
    fn: Callable[..., T], *args: Any, deadline: float, tenant: Hashable | None = None
) -> T:
    """`fn(*args)` off the event loop, bound by `deadline` (time.monotonic()). Raises
    ValidationTimeout when the deadline passes first; the thread then stops at its next
    keyword (a thread cannot be interrupted: the bound on work is that check, the linear
    keywords and the size caps).

    `tenant` (whoever sent the work) holds at most MAX_RUNNING_PER_TENANT pool threads: its
    other calls wait for a slot, and the wait counts against their deadline. A slot is freed
    when the thread is done, not when the caller gives up, so a timed-out call's thread still
    counts until it reaches its next keyword. None (trusted work: seeding, workers) skips it."""
    release: Callable[[Any], None] | None = None
    if tenant is not None:
        release = await _enter(tenant, deadline)
    try:
        work = _POOL.submit(_call_before, deadline, fn, args)
    except BaseException:
        if release is not None:
            release(None)
        raise
    if release is not None:
        # Runs when the thread is done, or at once if the work is cancelled before it starts.
        work.add_done_callback(release)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(work), _remaining(deadline))
    except TimeoutError as exc:
        raise ValidationTimeout from exc
