"""`executions(filter, first, after, last, before) { totalCount }` and `cancelExecutions(filter)`.

The executions are rows written straight into PostgreSQL (the list reads rows; running
hundreds of workflows would only make the test slow), for the tenant under test and for another
tenant with the same templates and params, so that every answer can be compared with what a
plain Python filter over the written rows says, and another tenant's rows can never hide in it.

Active rows have no workflow, so they are written as the worker's background loops leave them
alone: with a run id (admission's sweep starts only queued rows, those without one) and
changed "in the future" (the reconciler finishes only rows quiet for its grace period). They
stay as written for the whole session, and no test's SQL count sees their cleanup.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from app.api.relay import to_global_id
from app.models import Execution, Template, TemplateVersion, Tenant
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import TenantKeys
from tests.support import GraphQLClient

T0 = datetime(2026, 6, 1, tzinfo=UTC)
UNTOUCHED = datetime(2100, 1, 1, tzinfo=UTC)  # updated_at of active rows (see the docstring)
ACTIVE = {"PENDING", "RUNNING", "PAUSED"}
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "frontend.md"
LIST = """query($filter: ExecutionFilter, $first: Int, $after: String, $last: Int,
  $before: String) {
  executions(filter: $filter, first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id status } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
COUNT = """query($filter: ExecutionFilter) {
  executions(filter: $filter, first: 0) { totalCount totalCountIsExact edges { cursor } }
}"""
# graphql/operations/Executions.graphql before the filter: clients that copied it keep working.
OLD_EXECUTIONS = """query Executions($first: Int = 20, $after: String, $status: ExecutionStatus) {
  executions(first: $first, after: $after, status: $status) {
    edges {
      cursor
      node { id status progress createdAt template { name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""
CANCEL = """mutation($filter: ExecutionFilter) {
  cancelExecutions(filter: $filter, reason: "filtered") {
    __typename
    ... on CancelledExecutions { count executions { id status } }
    ... on UserError { code message }
  }
}"""


@dataclass
class Row:
    template: int  # index into the platform templates used
    status: str
    minutes: int  # created T0 + minutes
    params: dict[str, Any]
    id: uuid.UUID | None = None

    @property
    def created_at(self) -> datetime:
        return T0 + timedelta(minutes=self.minutes)


async def platform_templates(sessions: Any) -> list[tuple[uuid.UUID, str, uuid.UUID]]:
    """Two platform templates: (id, name, latest version id)."""
    async with sessions() as s:
        rows = await s.execute(
            select(Template.id, Template.name, TemplateVersion.id)
            .join(TemplateVersion, TemplateVersion.template_id == Template.id)
            .where(Template.tenant_id.is_(None), TemplateVersion.version == 1)
            .order_by(Template.name)
            .limit(2)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def write(sessions: Any, tenant: TenantKeys, rows: list[Row]) -> None:
    """Insert the rows as the tenant's executions (ids set on the rows)."""
    templates = await platform_templates(sessions)
    async with sessions() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.name == tenant.name))
        for row in rows:
            row.id = uuid.uuid4()
            template_id, _, version_id = templates[row.template]
            active = row.status in ACTIVE
            s.add(
                Execution(
                    id=row.id,
                    tenant_id=tenant_id,
                    template_id=template_id,
                    template_version_id=version_id,
                    params=row.params,
                    status=row.status,
                    progress=0.0,
                    workflow_id=f"exec-{row.id}",
                    run_id=f"no-such-run-{row.id}" if active else None,
                    created_at=row.created_at,
                    updated_at=UNTOUCHED if active else row.created_at,
                )
            )
        await s.commit()


def newest_first(rows: list[Row]) -> list[str]:
    ordered = sorted(rows, key=lambda r: (r.created_at, str(r.id)), reverse=True)
    return [to_global_id("Execution", r.id) for r in ordered if r.id is not None]


def sample() -> list[Row]:
    """20 executions over 20 hours: two templates, every status, a few params shapes."""
    statuses = ["COMPLETED", "FAILED", "RUNNING", "PENDING", "CANCELLED", "PAUSED", "COMPLETED"]
    regions = ["eu", "us", "ap"]
    return [
        Row(
            template=i % 2,
            status=statuses[i % len(statuses)],
            minutes=60 * i,
            params={"region": regions[i % 3], "order": {"priority": i % 4, "lines": [i]}},
        )
        for i in range(20)
    ]


async def ids_of(client: GraphQLClient, filter: dict[str, Any] | None) -> list[str]:
    page = await client.data(LIST, {"filter": filter, "first": 100})
    assert not page["executions"]["pageInfo"]["hasNextPage"]
    return [e["node"]["id"] for e in page["executions"]["edges"]]


async def test_each_filter_field_alone_and_combined_matches_exactly_and_counts(
    client: GraphQLClient, tenant: TenantKeys, other_tenant: TenantKeys, sessions: Any
) -> None:
    mine, theirs = sample(), sample()  # the other tenant's rows match every filter too
    await write(sessions, tenant, mine)
    await write(sessions, other_tenant, theirs)
    templates = await platform_templates(sessions)
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda r: True),
        ({"status": ["FAILED"]}, lambda r: r.status == "FAILED"),
        ({"status": ["RUNNING", "PAUSED"]}, lambda r: r.status in ("RUNNING", "PAUSED")),
        ({"status": []}, lambda r: True),
        ({"templateName": templates[1][1]}, lambda r: r.template == 1),
        ({"templateId": to_global_id("Template", templates[0][0])}, lambda r: r.template == 0),
        (
            {"startedAfter": (T0 + timedelta(hours=5)).isoformat()},
            lambda r: r.minutes >= 300,
        ),
        (
            {"startedBefore": (T0 + timedelta(hours=5)).isoformat()},
            lambda r: r.minutes < 300,
        ),
        (
            # A time without an offset is UTC.
            {"startedAfter": "2026-06-01T03:00:00", "startedBefore": "2026-06-01T07:00:00"},
            lambda r: 180 <= r.minutes < 420,
        ),
        ({"paramsContains": {"region": "eu"}}, lambda r: r.params["region"] == "eu"),
        (
            {"paramsContains": {"order": {"priority": 2}}},
            lambda r: r.params["order"]["priority"] == 2,
        ),
        (
            {"paramsContains": {"order": {"lines": [7]}}},
            lambda r: r.params["order"]["lines"] == [7],
        ),
        ({"paramsContains": {"region": "mars"}}, lambda r: False),
        (
            {
                "status": ["COMPLETED", "FAILED", "RUNNING"],
                "templateName": templates[0][1],
                "startedAfter": (T0 + timedelta(hours=2)).isoformat(),
                "startedBefore": (T0 + timedelta(hours=18)).isoformat(),
                "paramsContains": {"region": "us"},
            },
            lambda r: (
                r.status in ("COMPLETED", "FAILED", "RUNNING")
                and r.template == 0
                and 120 <= r.minutes < 1080
                and r.params["region"] == "us"
            ),
        ),
    ]
    for filter, keep in cases:
        expected = newest_first([r for r in mine if keep(r)])
        assert await ids_of(client, filter) == expected, filter
        counted = (await client.data(COUNT, {"filter": filter}))["executions"]
        assert counted["totalCount"] == len(expected), filter
        assert counted["totalCountIsExact"] is True
        assert counted["edges"] == []
    combined = cases[-1][1]
    assert [r for r in mine if combined(r)], "the combined case must match something"


async def test_unknown_or_foreign_template_ids_match_nothing(
    client: GraphQLClient, tenant: TenantKeys, other_tenant: TenantKeys, sessions: Any
) -> None:
    await write(sessions, tenant, [Row(0, "COMPLETED", 1, {})])
    await write(sessions, other_tenant, [Row(1, "COMPLETED", 2, {})])
    templates = await platform_templates(sessions)
    # Only the other tenant ran template 1: its executions never show.
    assert await ids_of(client, {"templateId": to_global_id("Template", templates[1][0])}) == []
    assert await ids_of(client, {"templateId": to_global_id("Template", uuid.uuid4())}) == []
    assert await ids_of(client, {"templateName": "no-such-template"}) == []


async def page_through(
    client: GraphQLClient, filter: dict[str, Any] | None, size: int, forward: bool
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every page, following endCursor forward or startCursor backward; the ids in list
    order and each page's pageInfo."""
    ids: list[str] = []
    infos: list[dict[str, Any]] = []
    cursor = None
    while True:
        args = {"first": size, "after": cursor} if forward else {"last": size, "before": cursor}
        page = (await client.data(LIST, {"filter": filter, **args}))["executions"]
        got = [e["node"]["id"] for e in page["edges"]]
        info = page["pageInfo"]
        infos.append(info)
        ids = ids + got if forward else got + ids
        if page["edges"]:
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
        more = info["hasNextPage"] if forward else info["hasPreviousPage"]
        if not more:
            return ids, infos
        cursor = info["endCursor"] if forward else info["startCursor"]
        assert len(infos) < 50


async def test_paging_forward_and_backward_is_stable_without_holes_or_duplicates(
    client: GraphQLClient, tenant: TenantKeys, other_tenant: TenantKeys, sessions: Any
) -> None:
    rows = sample() + sample()  # 40, with equal created_at pairs: ties break on the id
    await write(sessions, tenant, rows)
    await write(sessions, other_tenant, sample())
    for filter, keep in [
        (None, lambda r: True),
        ({"status": ["COMPLETED", "FAILED"]}, lambda r: r.status in ("COMPLETED", "FAILED")),
    ]:
        expected = newest_first([r for r in rows if keep(r)])
        for size in (7, len(expected)):
            ids, infos = await page_through(client, filter, size, forward=True)
            assert ids == expected, (filter, size)
            assert [i["hasPreviousPage"] for i in infos] == [False] + [True] * (len(infos) - 1)
            assert [i["hasNextPage"] for i in infos] == [True] * (len(infos) - 1) + [False]
            ids, infos = await page_through(client, filter, size, forward=False)
            assert ids == expected, (filter, size)
            # Backward, the first page read is the list's last one.
            assert [i["hasNextPage"] for i in infos] == [False] + [True] * (len(infos) - 1)
            assert [i["hasPreviousPage"] for i in infos] == [True] * (len(infos) - 1) + [False]

    # `before` without `last` takes the default page size, ending right before the cursor.
    first = (await client.data(LIST, {"first": 3}))["executions"]
    back = (await client.data(LIST, {"before": first["edges"][2]["cursor"]}))["executions"]
    assert [e["node"]["id"] for e in back["edges"]] == newest_first(rows)[:2]
    assert back["pageInfo"]["hasPreviousPage"] is False
    assert back["pageInfo"]["hasNextPage"] is True


async def test_the_deprecated_status_argument_still_filters(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    rows = sample()
    await write(sessions, tenant, rows)
    old = await client.data(OLD_EXECUTIONS, {"first": 50, "status": "FAILED"})
    failed = newest_first([r for r in rows if r.status == "FAILED"])
    assert [e["node"]["id"] for e in old["executions"]["edges"]] == failed
    assert old["executions"]["pageInfo"]["hasNextPage"] is False
    counted = await client.data("{ executions(status: FAILED) { totalCount } }")
    assert counted["executions"]["totalCount"] == len(failed)
    both = await client.raw(
        "{ executions(status: FAILED, filter: {status: [RUNNING]}) { totalCount } }"
    )
    assert both["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"


async def test_counts_stop_at_the_cap_and_say_so(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    templates = await platform_templates(sessions)
    async with sessions() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.name == tenant.name))
        # 10,001 rows by SQL (the ORM would take a minute under load).
        await s.execute(
            text(
                "INSERT INTO executions (id, tenant_id, template_id, template_version_id, "
                "params, status, progress, workflow_id, last_seq, created_at, updated_at) "
                "SELECT gen_random_uuid(), :tenant, :template, :version, "
                "jsonb_build_object('n', i), 'COMPLETED', 100, 'cap-' || gen_random_uuid(), "
                "0, now() - i * interval '1 second', now() FROM generate_series(1, 10001) i"
            ),
            {"tenant": tenant_id, "template": templates[0][0], "version": templates[0][2]},
        )
        await s.commit()
    everything = (await client.data(COUNT, {"filter": None}))["executions"]
    assert (everything["totalCount"], everything["totalCountIsExact"]) == (10_000, False)
    few = (await client.data(COUNT, {"filter": {"paramsContains": {"n": 5}}}))["executions"]
    assert (few["totalCount"], few["totalCountIsExact"]) == (1, True)


async def test_bad_arguments_are_typed_validation_errors(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    await write(sessions, tenant, [Row(0, "COMPLETED", 1, {})])
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    big = {"blob": "x" * 70_000}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"first": 5, "last": 5}, "not both"),
        ({"after": "x", "last": 5}, "backward"),
        ({"first": 2, "before": "x"}, "backward"),
        ({"first": 101}, "`first` must be between 0 and 100"),
        ({"last": 101}, "`last` must be between 0 and 100"),
        ({"last": -1}, "`last`"),
        ({"before": "bm90IGEgY3Vyc29y"}, "invalid cursor"),
        (
            {
                "filter": {
                    "startedAfter": "2026-06-02T00:00:00Z",
                    "startedBefore": "2026-06-01T00:00:00Z",
                }
            },
            "startedAfter must not be later than startedBefore",
        ),
        ({"filter": {"paramsContains": [1, 2]}}, "paramsContains must be a JSON object"),
        ({"filter": {"paramsContains": "eu"}}, "paramsContains must be a JSON object"),
        ({"filter": {"paramsContains": deep}}, "nests deeper than"),
        ({"filter": {"paramsContains": big}}, "max_params_bytes"),
        ({"filter": {"templateId": "not-an-id"}}, "filter.templateId is not a Template id"),
        (
            {"filter": {"templateId": to_global_id("Execution", uuid.uuid4())}},
            "not a Template id",
        ),
        ({"filter": {"templateName": "x" * 201}}, "templateName must be"),
    ]
    for variables, message in bad:
        body = await client.raw(LIST, variables)
        assert body["data"] is None, variables
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "VALIDATION_FAILED", (variables, error)
        assert message in error["message"], (variables, error["message"])
    cancelled = await client.data(CANCEL, {"filter": {"paramsContains": [1]}})
    assert cancelled["cancelExecutions"]["code"] == "VALIDATION_FAILED"


async def test_cancel_executions_cancels_exactly_the_matching_active_ones(
    client: GraphQLClient,
    server: str,
    tenant: TenantKeys,
    other_tenant: TenantKeys,
    sessions: Any,
) -> None:
    # The active rows' workflows do not exist on Temporal: the cancel finds none running and
    # finishes each CANCELLED itself.
    mine, theirs = sample(), sample()
    await write(sessions, tenant, mine)
    await write(sessions, other_tenant, theirs)
    templates = await platform_templates(sessions)
    filter = {
        "templateName": templates[0][1],
        "startedAfter": (T0 + timedelta(hours=1)).isoformat(),
        "paramsContains": {"region": "ap"},
    }
    operator = GraphQLClient(server, tenant.operator)
    denied = (await operator.data(CANCEL, {"filter": filter}))["cancelExecutions"]
    assert denied["code"] == "FORBIDDEN"

    def matching(r: Row) -> bool:
        return r.template == 0 and r.minutes >= 60 and r.params["region"] == "ap"

    expected = {to_global_id("Execution", r.id) for r in mine if matching(r) and r.status in ACTIVE}
    assert expected, "the sample must hold matching active executions"
    assert any(matching(r) and r.status not in ACTIVE for r in mine)  # ...and finished ones
    done = (await client.data(CANCEL, {"filter": filter}))["cancelExecutions"]
    assert done["__typename"] == "CancelledExecutions", done
    assert done["count"] == len(expected)
    assert {e["id"] for e in done["executions"]} == expected
    for execution_id in expected:
        assert (await wait_terminal(client, execution_id))["status"] == "CANCELLED"

    # Nothing else changed, here or at the other tenant.
    def statuses(page: dict[str, Any]) -> dict[str, str]:
        return {e["node"]["id"]: e["node"]["status"] for e in page["executions"]["edges"]}

    now = statuses(await client.data(LIST, {"first": 100}))
    assert now == {
        to_global_id("Execution", r.id): "CANCELLED"
        if to_global_id("Execution", r.id) in expected
        else r.status
        for r in mine
    }
    other = GraphQLClient(server, other_tenant.admin)
    assert statuses(await other.data(LIST, {"first": 100})) == {
        to_global_id("Execution", r.id): r.status for r in theirs
    }

    # A status filter narrows further; terminal statuses alone cancel nothing.
    again = (await client.data(CANCEL, {"filter": {"status": ["COMPLETED"]}}))["cancelExecutions"]
    assert again["count"] == 0


async def test_the_frontend_guides_filter_example_runs(
    client: GraphQLClient, tenant: TenantKeys, sessions: Any
) -> None:
    guide = GUIDE.read_text()  # noqa: ASYNC240 (a small local file)
    section = guide[guide.index("## Pagination") :]
    query = re.search(r"```graphql\n(query Executions.*?)```", section, re.S)
    variables = re.search(r"```json\n(.*?)```", section, re.S)
    assert query and variables
    await write(sessions, tenant, sample())
    body = await client.data(query.group(1), json.loads(variables.group(1)))
    assert body["executions"]["totalCount"] == 0  # no document-processing runs here
    assert body["executions"]["totalCountIsExact"] is True
