"""A real headless Chromium (Debian's `chromium`, driven by Python playwright) for the tests of
what a browser does with the API: GraphiQL, CORS, the socket Origin rule.

Playwright's own browser downloads (`playwright install`) are never used: `make test` installs
Debian's chromium when it is missing and it can (root with apt-get); without it the tests that
need a browser skip and say so. `launch()` gives each browser a fresh temporary profile
(user-data-dir), and each test its own context (no cookies or localStorage from another).
One browser per module keeps these tests fast.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_MS = 30_000  # the longest a browser step may take (the machine is shared and slow)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "no `chromium` on PATH: `make test` installs Debian's chromium when run as root "
            "with apt-get; elsewhere install it (apt-get install chromium) to run tests/browser"
        )
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=STEP_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class PageServer:
    """A plain HTTP server on 127.0.0.1 serving one empty page: another origin for the API."""

    server: ThreadingHTTPServer

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class _EmptyPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve() -> Iterator[PageServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PageServer(server)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def allowed_site() -> Iterator[PageServer]:
    """A page origin the API lists in CORS_ALLOWED_ORIGINS."""
    yield from _serve()


@pytest.fixture(scope="module")
def foreign_site() -> Iterator[PageServer]:
    """A page origin the API does not list."""
    yield from _serve()
