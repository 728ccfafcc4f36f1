"""http.request against a real local HTTP server (http.server in a thread)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.settings import Settings
from app.steps import StepInputError, StepTransientError
from app.steps.http import MAX_RESPONSE_BYTES, host_allowed
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        record = {"method": self.command, "path": url.path, "query": query, "body": body}
        record["headers"] = {k.lower(): v for k, v in self.headers.items()}
        self.seen.append(record)
        if url.path == "/json":
            self._reply(200, b'{"ok": true, "n": 1}', "application/json", ETag='"v1"', X_Other="x")
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            self._reply(code, f"status {code}".encode(), "text/plain")
        elif url.path == "/redirect":
            self._reply(int(query.get("code", "302")), b"", "text/plain", Location=query["to"])
        elif url.path == "/loop":
            self._reply(302, b"", "text/plain", Location="/loop")
        elif url.path == "/big":
            self._reply(200, b"z" * (MAX_RESPONSE_BYTES + 10), "text/plain")
        elif url.path == "/slow":
            time.sleep(1.0)
            self._reply(200, b"late", "text/plain")
        else:  # echo
            self._reply(200, json.dumps(record).encode(), "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(http_server: str) -> str:
    Recorder.seen = []
    return http_server


async def test_allowed_call_returns_parsed_json_and_kept_headers(
    make_ctx: MakeContext, server: str
) -> None:
    out = await run_step(
        "http.request",
        {"method": "GET", "url": f"{server}/json", "params": {"q": "a b"}},
        make_ctx(),
    )
    assert out["status"] == 200 and out["json"] == {"ok": True, "n": 1} and out["text"] is None
    assert out["headers"]["etag"] == '"v1"' and "x-other" not in out["headers"]
    assert out["truncated"] is False
    assert Recorder.seen[0]["query"] == {"q": "a b"}


async def test_post_sends_json_and_a_stable_idempotency_key(
    make_ctx: MakeContext, server: str
) -> None:
    input = {"method": "POST", "url": f"{server}/echo", "json": {"a": 1}}
    first = await run_step("http.request", input, make_ctx())
    second = await run_step("http.request", input, make_ctx())
    sent = first["json"]
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"a": 1}
    key = sent["headers"]["idempotency-key"]
    assert key == second["json"]["headers"]["idempotency-key"]
    other_step = await run_step("http.request", input, make_ctx(step_id="step-2"))
    assert other_step["json"]["headers"]["idempotency-key"] != key
    own = await run_step(
        "http.request", {**input, "headers": {"Idempotency-Key": "mine"}}, make_ctx()
    )
    assert own["json"]["headers"]["idempotency-key"] == "mine"


async def test_host_not_allowed_is_refused_before_any_connection(
    make_ctx: MakeContext, server: str
) -> None:
    port = server.rsplit(":", 1)[1]
    for url in (f"http://localhost:{port}/json", f"http://127.0.0.2:{port}/json"):
        with pytest.raises(StepInputError, match="is not allowed"):
            await run_step("http.request", {"method": "GET", "url": url}, make_ctx())
    with pytest.raises(StepInputError, match="does not match"):
        await run_step("http.request", {"method": "GET", "url": "file:///etc/passwd"}, make_ctx())
    assert Recorder.seen == []


@pytest.mark.parametrize(("status", "error"), [(500, StepTransientError), (503, StepTransientError),
    (429, StepTransientError), (404, StepInputError), (400, StepInputError)])  # fmt: skip
async def test_status_mapping(
    make_ctx: MakeContext, server: str, status: int, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"HTTP {status} from .*: status {status}"):
        await run_step(
            "http.request", {"method": "GET", "url": f"{server}/status/{status}"}, make_ctx()
        )


async def test_expect_status_turns_errors_into_results_and_others_into_errors(
    make_ctx: MakeContext, server: str
) -> None:
    out = await run_step(
        "http.request",
        {"method": "DELETE", "url": f"{server}/status/404", "expect_status": [200, 404]},
        make_ctx(),
    )
    assert out["status"] == 404 and out["text"] == "status 404"
    with pytest.raises(StepInputError, match="unexpected HTTP 200"):
        await run_step(
            "http.request",
            {"method": "GET", "url": f"{server}/json", "expect_status": [201]},
            make_ctx(),
        )


async def test_redirects_are_checked_at_every_hop(
    make_ctx: MakeContext, server: str, step_settings: Settings
) -> None:
    inside = await run_step(
        "http.request", {"method": "GET", "url": f"{server}/redirect?to=/json"}, make_ctx()
    )
    assert inside["status"] == 200 and inside["url"] == f"{server}/json"
    with pytest.raises(StepInputError, match="host 'evil.example.net' is not allowed"):
        await run_step(
            "http.request",
            {"method": "GET", "url": f"{server}/redirect?to=http://evil.example.net/steal"},
            make_ctx(),
        )
    unfollowed = await run_step(
        "http.request",
        {"method": "GET", "url": f"{server}/redirect?to=/json", "follow_redirects": False},
        make_ctx(),
    )
    assert unfollowed["status"] == 302 and unfollowed["headers"]["location"] == "/json"
    twice = f"{server}/redirect?to=/redirect%3Fto%3D/json"
    out = await run_step("http.request", {"method": "GET", "url": twice}, make_ctx())
    assert out["status"] == 200
    with pytest.raises(StepInputError, match="more than 5 redirects"):
        await run_step("http.request", {"method": "GET", "url": f"{server}/loop"}, make_ctx())
    assert len([r for r in Recorder.seen if r["path"] == "/loop"]) == 6


async def test_redirect_to_another_host_drops_credentials(
    make_ctx: MakeContext, server: str, step_settings: Settings
) -> None:
    port = server.rsplit(":", 1)[1]
    settings = step_settings.model_copy(update={"http_allowed_hosts": ["127.0.0.1", "localhost"]})
    out = await run_step(
        "http.request",
        {
            "method": "POST",
            "url": f"{server}/redirect?code=307&to=http://localhost:{port}/echo",
            "headers": {"Authorization": "Bearer secret", "X-Trace": "t1"},
            "body": "payload",
        },
        make_ctx(settings=settings),
    )
    echoed = out["json"]
    assert echoed["method"] == "POST" and echoed["body"] == "payload"  # 307 keeps both
    assert "authorization" not in echoed["headers"] and echoed["headers"]["x-trace"] == "t1"


async def test_big_bodies_are_cut_and_failures_are_transient(
    make_ctx: MakeContext, server: str
) -> None:
    big = await run_step("http.request", {"method": "GET", "url": f"{server}/big"}, make_ctx())
    assert big["truncated"] is True and len(big["text"]) == MAX_RESPONSE_BYTES
    with pytest.raises(StepTransientError, match="timed out"):
        await run_step(
            "http.request",
            {"method": "GET", "url": f"{server}/slow", "timeout_seconds": 0.2},
            make_ctx(),
        )
    from tests.support import free_port

    with pytest.raises(StepTransientError, match="failed"):
        await run_step(
            "http.request",
            {"method": "GET", "url": f"http://127.0.0.1:{free_port()}/"},
            make_ctx(),
        )


def test_allow_list_matching() -> None:
    allowed = ["api.example.com", "*.example.org", "10.0.0.5", "*.0.0.1", "[::1]"]
    assert host_allowed("::1", allowed)
    assert host_allowed("api.example.com", allowed)
    assert host_allowed("API.Example.Com.", allowed)
    assert not host_allowed("www.example.com", allowed)
    assert host_allowed("a.b.example.org", allowed)
    assert not host_allowed("example.org", allowed)  # the wildcard means subdomains
    assert not host_allowed("badexample.org", allowed)
    assert host_allowed("10.0.0.5", allowed)  # listed exactly: the operator's choice
    assert not host_allowed("10.0.0.1", allowed)  # a wildcard never opens an IP literal
    assert not host_allowed("169.254.169.254", ["*.169.254"])
    assert not host_allowed("::1", ["*"])


@pytest.mark.parametrize("host", ["a..example.org", "a" * 64 + ".example.org"])
async def test_a_host_name_idna_refuses_is_an_input_error(
    make_ctx: MakeContext, step_settings: Settings, host: str
) -> None:
    """An empty label or one over 63 characters makes getaddrinfo's IDNA codec raise
    UnicodeError: a typed input error, not an unexpected one."""
    settings = step_settings.model_copy(update={"http_allowed_hosts": ["*.example.org"]})
    with pytest.raises(StepInputError, match="not a valid host name"):
        await run_step(
            "http.request",
            {"method": "GET", "url": f"http://{host}:8080/"},
            make_ctx(settings=settings),
        )
