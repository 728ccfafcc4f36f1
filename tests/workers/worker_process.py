"""A `wfs worker` in a process of its own, for tests that kill it.

`WorkerProcess` starts `wfs worker --queue NAME` (the `wfs` next to this interpreter) with the
test session's settings as environment variables, knows it is ready once Temporal lists its
identity (`<pid>@<host>`) among the queue's activity pollers, and SIGKILLs it together with any
children, as a crash would, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from app.settings import Settings

WFS = Path(sys.executable).parent / "wfs"


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment in which `Settings()` in the child equals `settings`."""
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        key = name.upper()
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


async def pollers(client: Client, queue: str) -> list[str]:
    """Identities Temporal lists as recent activity pollers of `queue`."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return [p.identity for p in resp.pollers]


class WorkerProcess:
    """One `wfs worker --queue <queue>` subprocess; its output goes to `log_path`."""

    def __init__(self, settings: Settings, queue: str, log_path: Path) -> None:
        self.settings = settings.model_copy(
            update={"temporal_task_queue": queue, "log_level": "warning"}
        )
        self.queue = queue
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(WFS), "worker", "--queue", self.queue],
            cwd=self.log_path.parent,  # no stray .env is read from the checkout
            env=worker_env(self.settings),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C is not ours to deliver
        )

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def wait_polling(self, client: Client, timeout: float = 30) -> None:
        """Until Temporal sees this process polling the queue for activities."""
        prefix = f"{self.pid}@"
        async with asyncio.timeout(timeout):
            while not any(i.startswith(prefix) for i in await pollers(client, self.queue)):
                if not self.running():
                    raise AssertionError(
                        f"wfs worker exited with {self.proc and self.proc.returncode}:\n"
                        + self.output()
                    )
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (no graceful shutdown), and reap it.

        The worker leads a session of its own, so its process group holds exactly its family.
        """
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def leftovers(self) -> list[int]:
        """Live (non-zombie) processes of this worker's process group."""
        if self.proc is None:
            return []
        alive = []
        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == self.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        return alive
