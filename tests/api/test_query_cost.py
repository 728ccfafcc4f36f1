"""DataLoaders keep a page's SQL statement count flat, whatever the page size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.api.test_execution_flow import ORDER, start, wait_terminal
from tests.support import GraphQLClient

PAGE = """query($first: Int) { executions(first: $first) { edges { node {
  id status templateVersion template { name title steps { id } } } } } }"""


@contextmanager
def counting() -> Iterator[list[str]]:
    """The SQL statements the API ran while the block ran. The workers in this process run SQL
    of their own meanwhile (the webhook dispatcher, the reconciler, admission sweeps) on engines
    of their own: only the engine that authenticated the request (its api_keys lookup) counts."""
    seen: list[tuple[Any, str]] = []
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((conn.engine, statement))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)
        api = {engine for engine, statement in seen if "FROM api_keys" in statement}
        assert len(api) == 1, f"expected one API engine to authenticate, saw {len(api)}"
        statements += [statement for engine, statement in seen if engine in api]


async def test_execution_page_costs_the_same_sql_for_2_or_6_rows(client: GraphQLClient) -> None:
    ids = [(await start(client, {**ORDER, "wait_seconds": 0}))["id"] for _ in range(6)]
    for execution_id in ids:
        await wait_terminal(client, execution_id)
    await client.data("{ viewer { role } }")  # warm up: first use of a key writes last_used_at

    with counting() as small:
        page = await client.data(PAGE, {"first": 2})
    assert len(page["executions"]["edges"]) == 2
    with counting() as large:
        page = await client.data(PAGE, {"first": 6})
    assert len(page["executions"]["edges"]) == 6
    assert {e["node"]["template"]["name"] for e in page["executions"]["edges"]} == {"order-summary"}
    assert len(large) == len(small) >= 3, (small, large)  # at least auth, page, a loader
    assert len(large) <= 6, large  # auth, page, templates, latest versions, versions
