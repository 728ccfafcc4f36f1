"""Log lines operators can use: a JSON line keeps its traceback, and a refused caller is logged
as a security event with the reason (the ids every line carries are checked end to end in
test_tracing.py, in a process of its own)."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from app.log_config import configure


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """This process's logging as production configures it (JSON), into a buffer; the suite's
    own configuration after."""
    buffer = io.StringIO()
    configure("warning", json=True, stream=buffer)
    try:
        yield buffer
    finally:
        configure("warning")


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_keeps_the_traceback_of_ours_and_of_a_library(
    json_lines: io.StringIO,
) -> None:
    try:
        {}["missing-key"]  # noqa: B018 - the error to log
    except KeyError:
        structlog.get_logger("tests.logs").exception("step.crashed", step_id="s1")
        logging.getLogger("some.library").exception("library failed")
    ours, theirs = lines(json_lines)
    assert ours["event"] == "step.crashed" and ours["step_id"] == "s1"
    for line in (ours, theirs):
        assert line["level"] == "error"
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "KeyError: 'missing-key'" in line["exception"]
        assert "exc_info" not in line


async def test_an_auth_failure_is_a_security_event_with_its_reason(
    server: str, json_lines: io.StringIO
) -> None:
    # A caller of its own (uvicorn trusts X-Forwarded-For from 127.0.0.1, as behind a proxy),
    # so no other test's refusals share its line.
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    async with httpx.AsyncClient(base_url=server, timeout=10) as http:
        response = await http.post(
            "/graphql",
            json={"query": "{ viewer { role } }"},
            headers={
                "Authorization": "Bearer wfs_not-a-real-key",
                "X-Forwarded-For": address,
                "X-Request-ID": "req-auth-test-1",
            },
        )
    assert response.headers["x-request-id"] == "req-auth-test-1"
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    (event,) = [
        line
        for line in lines(json_lines)
        if line["event"] == "security.auth_failed" and line.get("address") == address
    ]
    assert event["logger"] == "security" and event["level"] == "warning"
    assert event["reason"] and event["code"] == "UNAUTHENTICATED"
    assert event["request_id"] == "req-auth-test-1"
    assert "wfs_not-a-real-key" not in json.dumps(event)  # never the key itself
