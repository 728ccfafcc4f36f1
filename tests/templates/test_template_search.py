"""Full-text search, filters and every ordering, with keyset pagination that neither skips
nor repeats, over the real API and PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import make_spec, op, published, start

ORDERS = ("NAME", "CREATED", "POPULARITY", "RELEVANCE")


@dataclass
class Catalog:
    owner: TenantKeys
    word: str
    tag: str
    names: dict[str, str]


async def search(client: GraphQLClient, **variables: Any) -> dict[str, Any]:
    return (await client.data(op("SearchTemplates"), variables))["templates"]


async def names(client: GraphQLClient, **variables: Any) -> list[str]:
    page = await search(client, first=100, **variables)
    return [e["node"]["name"] for e in page["edges"]]


async def paged(client: GraphQLClient, **variables: Any) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await search(client, first=2, after=after, **variables)
        seen += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return seen
        after = page["pageInfo"]["endCursor"]


@pytest.fixture(scope="module")
async def catalog(server: str, sessions) -> Catalog:  # type: ignore[no-untyped-def]
    """Five templates of one tenant, with a tag and a word no other test uses."""
    owner = await make_tenant(sessions)
    client = GraphQLClient(server, owner.admin)
    word = f"zork{uuid.uuid4().hex[:6]}"
    tag = f"grp{uuid.uuid4().hex[:6]}"  # neither the tag nor the names contain the word
    suffix = uuid.uuid4().hex[:6]
    entries = {
        "invoice": make_spec(
            f"invoice-{suffix}",
            title=f"Invoice reminder {word}",
            description="Emails a reminder for unpaid invoices.",
            tags=[tag, "billing", "email"],
            category="finance",
        ),
        "report": make_spec(
            f"report-{suffix}",
            title="Monthly report",
            description=f"Builds the monthly {word} report from invoices.",
            tags=[tag, "billing"],
            category="finance",
        ),
        "onboard": make_spec(
            f"onboard-{suffix}",
            title="Customer onboarding",
            description="Welcomes a new customer.",
            tags=[tag, "email"],
            category="crm",
        ),
        "backup": make_spec(
            f"backup-{suffix}", title="Nightly backup", tags=[tag, "files"], category="ops"
        ),
        "sync": make_spec(f"sync-{suffix}", title="Contact sync", tags=[tag], category="crm"),
    }
    ids = {}
    for key, spec in entries.items():
        ids[key] = (await published(client, spec))["id"]
    # Popularity: sync runs 3 times, invoice twice, report once.
    for key, runs in (("sync", 3), ("invoice", 2), ("report", 1)):
        for _ in range(runs):
            started = await start(client, templateId=ids[key], params={"rows": []})
            assert started["__typename"] == "Execution", started
    return Catalog(owner, word, tag, {k: s["name"] for k, s in entries.items()})


async def test_full_text_search_ranks_title_matches_first(server: str, catalog: Catalog) -> None:
    client, n, tag = GraphQLClient(server, catalog.owner.viewer), catalog.names, catalog.tag
    word = catalog.word
    # The word is in invoice's title (weight A) and in report's description (weight C).
    assert await names(client, search=word) == [n["invoice"], n["report"]]
    assert await names(client, search="invoices reminder", tags=[tag]) == [n["invoice"]]
    assert await names(client, search=f"{word} -monthly") == [n["invoice"]]
    assert await names(client, search=f"nightly {word}") == []  # every word must match
    assert await names(client, search="files", tags=[tag]) == [n["backup"]]  # tags too


async def test_filters_by_all_tags_category_and_visibility(
    server: str,
    catalog: Catalog,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    client, n, tag = GraphQLClient(server, catalog.owner.viewer), catalog.names, catalog.tag
    assert await names(client, tags=[tag, "billing", "email"]) == [n["invoice"]]
    assert await names(client, tags=["billing", tag]) == [n["invoice"], n["report"]]
    assert await names(client, tags=[tag], category="crm") == [n["onboard"], n["sync"]]
    assert await names(client, tags=[tag], visibility="PUBLIC") == []
    assert len(await names(client, tags=[tag], visibility="PRIVATE")) == 5
    stranger = GraphQLClient(server, (await make_tenant(sessions)).viewer)
    assert await names(stranger, tags=[tag]) == []
    assert await names(stranger, search=catalog.word) == []


@pytest.mark.parametrize("order", ORDERS)
async def test_every_ordering_pages_without_gaps_or_repeats(
    server: str, catalog: Catalog, order: str
) -> None:
    client, n = GraphQLClient(server, catalog.owner.viewer), catalog.names
    criteria: dict[str, Any] = {"tags": [catalog.tag], "orderBy": order}
    if order == "RELEVANCE":
        criteria["search"] = f"{catalog.word} or billing or email or customer"
    everything = await names(client, **criteria)
    assert len(everything) == (3 if order == "RELEVANCE" else 5), everything
    assert await paged(client, **criteria) == everything
    if order == "NAME":
        assert everything == sorted(everything)
    if order == "POPULARITY":
        assert everything[:3] == [n["sync"], n["invoice"], n["report"]]
    if order == "CREATED":
        assert everything == [n[k] for k in ("sync", "backup", "onboard", "report", "invoice")]
    if order == "RELEVANCE":
        assert everything[0] == n["invoice"]


async def test_popularity_counts_runs_of_the_last_30_days(server: str, catalog: Catalog) -> None:
    client, n = GraphQLClient(server, catalog.owner.viewer), catalog.names
    page = await search(client, tags=[catalog.tag], orderBy="POPULARITY", first=10)
    counts = {e["node"]["name"]: e["node"]["runCount30d"] for e in page["edges"]}
    assert counts == {
        n["sync"]: 3,
        n["invoice"]: 2,
        n["report"]: 1,
        n["onboard"]: 0,
        n["backup"]: 0,
    }


async def test_bad_cursors_and_orders_are_validation_errors(server: str, catalog: Catalog) -> None:
    client = GraphQLClient(server, catalog.owner.viewer)
    by_name = await search(client, tags=[catalog.tag], first=1)
    name_cursor = by_name["pageInfo"]["endCursor"]
    for variables in (
        {"after": "not-a-cursor"},
        {"after": name_cursor, "orderBy": "CREATED"},  # a cursor of another ordering
        {"after": "WyJOQU1FIiwgMSwgIngiXQ=="},  # ["NAME", 1, "x"]: wrong types
        {"orderBy": "RELEVANCE"},  # relevance needs a search
        {"first": 1000},
    ):
        body = await client.raw(op("SearchTemplates"), variables)
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", variables
