"""Liveness and readiness of a `wfs worker` over HTTP, for Kubernetes probes.

Served on WORKER_HEALTH_PORT (`wfs worker --health-port`), beside nothing else:

* `/healthz` (liveness): 200 while the event loop answers and the worker runs or was asked to
  stop; 503 once the worker shut down by itself. A loop blocked by a stuck call never answers,
  so the kubelet's probe times out and the pod is restarted.
* `/readyz` (readiness): 200 while the worker is running (polling its task queue); 503 before
  it started and from the moment it was asked to stop (its graceful shutdown), so rollouts wait
  for pollers and `kubectl get pods` shows a stopping worker as not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.worker import Worker


def health_app(worker: Worker, stop: asyncio.Event) -> Starlette:
    def answer(ok: bool, state: str) -> JSONResponse:
        body = {"status": "ok" if ok else "unavailable", "worker": state}
        return JSONResponse(body | {"task_queue": worker.task_queue}, 200 if ok else 503)

    def state() -> str:
        if stop.is_set():
            return "stopping"
        if worker.is_running:
            return "running"
        return "stopped" if worker.is_shutdown else "starting"

    async def healthz(request: Request) -> JSONResponse:
        now = state()
        return answer(now != "stopped", now)

    async def readyz(request: Request) -> JSONResponse:
        now = state()
        return answer(now == "running", now)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])


class _Server(uvicorn.Server):
    # The process owns signals (SIGTERM sets `stop`); uvicorn's own capture would swallow them.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """The probe endpoints of one worker on host:port, started and stopped by the caller."""

    def __init__(self, worker: Worker, stop: asyncio.Event, host: str, port: int) -> None:
        config = uvicorn.Config(
            health_app(worker, stop),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self._task.done():
            await self._task
            raise RuntimeError(f"worker health endpoint could not listen on {self._where()}")

    def _where(self) -> str:
        return f"{self._server.config.host}:{self._server.config.port}"

    async def close(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
