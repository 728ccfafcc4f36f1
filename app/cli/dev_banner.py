"""What `wfs dev` prints once the API listens: the banner (URLs, demo keys, processes) and,
after it, the model check's lines (`BannerModelCheck`)."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import click

from app.settings import Settings

if TYPE_CHECKING:
    from app.cli.dev_roles import RoleProcess


class BannerModelCheck:
    """The model check's lines (`model_check_lines`), run in a thread once the banner is out
    and printed when done. Readiness does not depend on it (/readyz shows the AI workers' own
    check and never fails on it), a provider's model list can take seconds (5 s at most here),
    and before the banner its imports (both providers' SDKs) took CPU from the API's start."""

    NOTE = "  AI models    checking the providers' model lists (printed below when done)"

    def __init__(self, settings: Settings, done: threading.Event | None = None) -> None:
        self.lines: list[str] = []
        self._finished = threading.Event()
        self._wake = done
        threading.Thread(
            target=self._run, args=(settings,), name="model-check", daemon=True
        ).start()

    def _run(self, settings: Settings) -> None:
        try:
            self.lines = asyncio.run(model_check_lines(settings))
        except Exception as exc:
            self.lines = [f"  AI models    the model check failed ({type(exc).__name__})"]
        self._finished.set()
        if self._wake is not None:
            self._wake.set()

    def finished(self) -> bool:
        return self._finished.is_set()

    def report(self) -> str:
        """Once finished: what to print."""
        return "\n".join(self.lines or ["  AI models    no AI provider configured to check"])

    def wait(self) -> None:
        self._finished.wait()


async def model_check_lines(settings: Settings) -> list[str]:
    """What the banner says about the catalogue's models that the providers do not list."""
    from app.ai.model_check import check_models
    from app.ai.providers import build_providers

    providers = build_providers(settings)
    try:
        result = await check_models(providers, settings.catalog(), timeout=5)
    finally:
        for provider in providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
    lines = [
        f"  AI models    {p.provider}: model list failed ({p.error})"
        for p in result.providers
        if p.error
    ]
    missing = result.missing()
    if missing:
        lines.append(f"  AI models    not offered by the provider: {', '.join(missing)}")
        lines.append("               (calls fail over; fix AI_CATALOG, see docs/ai.md)")
    elif result.providers and not lines:
        lines.append(
            f"  AI models    all {sum(len(p.configured) for p in result.providers)}"
            f" catalogue models listed (catalogue of {settings.catalog().as_of})"
        )
    return lines


def _files_line(settings: Settings) -> str:
    if settings.storage_backend == "s3":
        where = settings.s3_endpoint_url or "AWS"
        return f"s3://{settings.s3_bucket}/{settings.s3_prefix}<tenant id>/ at {where}"
    return f"{settings.files_root} (one folder per tenant, each with samples/)"


def _ai_line(settings: Settings) -> str:
    providers = [
        f"{name} ({url or 'api'})"
        for name, key, url in (
            ("openai", settings.openai_api_key, settings.openai_base_url),
            ("anthropic", settings.anthropic_api_key, settings.anthropic_base_url),
        )
        if key
    ]
    return ", ".join(providers) if providers else "baseline only (no keys; try --fake-llm)"


def _signed_in_graphiql(base: str, keys: dict[str, str]) -> list[str]:
    """A GraphiQL link carrying a demo key in its fragment, which never reaches the server (nor
    its access log); the page moves it into the Authorization header and off the address bar."""
    for name in ("demo-pro", *keys):
        if name in keys:
            return ["", f"GraphiQL signed in as {name}: {base}/graphql#apiKey={keys[name]}"]
    return []


def banner(
    settings: Settings,
    keys: dict[str, str],
    seconds: float,
    children: list[RoleProcess],
) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    processes = ", ".join(f"{c.name} {c.pid}" for c in children)
    if not any(c.name == "api" for c in children):  # --processes 1
        processes = "all other roles in this one" + (f", {processes}" if processes else "")
    lines = [
        "",
        f"workflow-service is ready ({seconds:.1f}s)",
        f"  GraphiQL     {base}/graphql",
        f"  WebSocket    {base.replace('http', 'ws', 1)}/graphql (graphql-transport-ws)",
        f"  Health       {base}/healthz  {base}/readyz  {base}/metrics",
        f"  Temporal UI  {settings.temporal_ui_url or '(not started: TEMPORAL_ADDRESS is set)'}",
        f"  AI           {_ai_line(settings)}",
        BannerModelCheck.NOTE,
        f"  Mail         SMTP {settings.smtp_host}:{settings.smtp_port}"
        f" (dev catcher: {settings.state_dir.resolve() / 'mail'}, a Maildir)",
        f"  Files        {_files_line(settings)}",
        f"  State        {settings.state_dir.resolve()}",
        f"  Processes    {processes} (pids; --processes / DEV_PROCESSES)",
        "",
        "Demo API keys (send as `Authorization: Bearer <key>`):",
        *[f"  {name:<17} {key}" for name, key in keys.items()],
        *_signed_in_graphiql(base, keys),
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    click.echo("\n".join(lines))
