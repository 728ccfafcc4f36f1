"""A page of templates costs the same number of SQL statements for 2 rows or 6: every field
that needs more data goes through a DataLoader."""

from __future__ import annotations

import uuid

from tests.api.test_execution_flow import wait_terminal
from tests.api.test_query_cost import counting
from tests.conftest import make_tenant
from tests.support import GraphQLClient
from tests.templates.template_kit import make_spec, published, share, start, update_draft

PAGE = """query($first: Int, $tags: [String!]) {
  templates(first: $first, tags: $tags, orderBy: POPULARITY) { edges { node {
    id name category visibility latestVersion currentVersion ownedByViewer sharedWith draft
    runCount30d exampleParams parametersSchema publicVersion acceptedVersion
    publisher { name verified } qualifiedName capabilities { activities sendsMail }
    steps { id needs } enhancementPoints { stepId task }
    versions { version status publishedAt }
    v1: version(number: 1) { spec }
    diff(from: 1, to: 2) { addedSteps changedFields }
  } } } }"""


async def test_template_page_costs_the_same_sql_for_2_or_6_rows(
    server: str,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    owner, guest = await make_tenant(sessions), await make_tenant(sessions)
    client = GraphQLClient(server, owner.admin)
    tag = f"cost{uuid.uuid4().hex[:6]}"
    started = []
    for i in range(6):
        spec = make_spec(tags=[tag], category="cost")
        created = await published(client, spec)
        await update_draft(client, created["id"], {**spec, "title": f"Second {i}"})
        await client.data(
            "mutation($id: ID!) { publishTemplate(input: {templateId: $id}) { __typename } }",
            {"id": created["id"]},
        )
        await share(client, created["id"], [guest.name])
        started.append(await start(client, templateId=created["id"], params={"rows": []}))
    for execution in started:  # the worker's writes would be counted too
        await wait_terminal(client, execution["id"])
    await client.data("{ viewer { role } }")  # warm up: first use of a key writes last_used_at

    with counting() as small:
        page = await client.data(PAGE, {"first": 2, "tags": [tag]})
    assert len(page["templates"]["edges"]) == 2
    with counting() as large:
        page = await client.data(PAGE, {"first": 6, "tags": [tag]})
    nodes = [e["node"] for e in page["templates"]["edges"]]
    assert len(nodes) == 6
    assert all(n["sharedWith"] == [guest.name] and n["runCount30d"] == 1 for n in nodes)
    assert all(n["diff"]["changedFields"] == ["title"] for n in nodes)
    assert len(large) == len(small) >= 3, (small, large)  # at least auth, page, a loader
    assert all(n["publisher"] == {"name": owner.name, "verified": False} for n in nodes)
    # auth, the page, offered versions, all versions, run counts, shares, publishers
    assert len(large) <= 7, large

    # The guest sees them as another publisher's: its acceptances are one more statement.
    guest_client = GraphQLClient(server, guest.admin)
    await guest_client.data("{ viewer { role } }")
    with counting() as small:
        page = await guest_client.data(PAGE, {"first": 2, "tags": [tag]})
    with counting() as large:
        page = await guest_client.data(PAGE, {"first": 6, "tags": [tag]})
    nodes = [e["node"] for e in page["templates"]["edges"]]
    assert len(nodes) == 6
    assert all(n["acceptedVersion"] is None and n["sharedWith"] is None for n in nodes)
    assert all(n["qualifiedName"] == f"{owner.name}/{n['name']}" for n in nodes)
    assert len(large) == len(small) >= 3, (small, large)  # at least auth, page, a loader
    # auth, the page, offered versions, all versions, run counts, publishers, acceptances
    assert len(large) <= 7, large
