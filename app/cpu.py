"""The CPU pool: CPU-bound work of steps and the AI gateway runs here, off the event loop.

Apart from asyncio's default executor (DNS lookups, file I/O), so a few large inputs queue
behind each other instead of taking every thread, while heartbeats and other activities go on.
A kit module: it imports nothing of the application.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

CPU_POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="wfs-cpu")


async def run_cpu(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the CPU pool. A cancelled caller does not stop it (threads cannot be
    interrupted); it finishes in the background."""
    return await asyncio.get_running_loop().run_in_executor(CPU_POOL, functools.partial(fn, *args))
