"""Outbound webhooks against the real stack: the API and worker of the session (its dispatcher
polls every 0.5 s, retries start at 0.2 s), a real HTTP receiver on 127.0.0.1 that verifies
every delivery with the `standardwebhooks` package, PostgreSQL and Temporal."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier
from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from app.errors import QuotaExceeded
from app.models import Webhook, WebhookDelivery
from app.models.base import utcnow
from app.notifications.service import NotificationService
from app.settings import Settings
from app.tenants.service import Principal, TenantService
from app.webhooks.dispatcher import START_BATCH, Dispatcher
from app.webhooks.policy import DestinationRefused
from app.webhooks.repository import WebhookRepository
from app.webhooks.secret_box import SecretBox
from app.webhooks.sender import WebhookSender
from app.webhooks.service import WebhookService
from app.webhooks.workflow_io import DELIVER_ACTIVITY, WEBHOOK_WORKFLOW, DeliveryJob
from tests.conftest import TenantKeys
from tests.support import GraphQLClient
from workers.main import PASSTHROUGH
from workers.webhook_activities import WebhookActivities
from workers.workflows import WebhookDeliveryWorkflow

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "graphql" / "operations"
GUIDE = ROOT / "docs" / "webhooks.md"
# A delivery that failed once and then succeeded, replayed against today's workflow code (not
# under tests/histories: those are execution histories). Re-record: delete it, run the retry
# test with WFS_RECORD_HISTORIES=1.
RETRIED_HISTORY = Path(__file__).resolve().parent / "webhook_histories" / "delivery-retried.json"
ORDER = {"customer": "Ada", "items": [{"sku": "n-1", "qty": 1, "price": 3}], "wait_seconds": 0}


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


class Receiver:
    """A webhook endpoint: answers the scripted statuses in turn (then 200) and keeps every
    request's headers and raw body."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        script = list(statuses or [])
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = script.pop(0) if script else 200
                reply = b"receiver says no" if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wfs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(60):
            while len(self.requests) < count:
                await asyncio.sleep(0.1)
        return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


async def create(client: GraphQLClient, url: str, events: list[str]) -> dict[str, Any]:
    data = await client.data(op("CreateWebhook"), {"input": {"url": url, "events": events}})
    return data["createWebhook"]


async def deliveries(client: GraphQLClient, webhook_id: str) -> list[dict[str, Any]]:
    data = await client.data(op("WebhookDeliveries"), {"webhookId": webhook_id, "first": 50})
    return [edge["node"] for edge in data["webhookDeliveries"]["edges"]]


async def wait_deliveries(
    client: GraphQLClient, webhook_id: str, count: int, status: str = "DELIVERED"
) -> list[dict[str, Any]]:
    """The webhook's deliveries once `count` of them have `status`."""
    async with asyncio.timeout(60):
        while True:
            rows = await deliveries(client, webhook_id)
            if sum(r["status"] == status for r in rows) >= count:
                return rows
            await asyncio.sleep(0.2)


async def tenant_uuid(sessions: Any, keys: TenantKeys) -> uuid.UUID:
    async with sessions() as session:
        return (await TenantService(session).get_by_name(keys.name)).id


async def publish(sessions: Any, tenant_id: uuid.UUID, data: dict[str, Any]) -> int:
    """A PUBLISHED notification in the tenant's log, as the events.publish step writes it."""
    async with sessions() as session:
        seq = await NotificationService(session).add(
            tenant_id, "PUBLISHED", {"channel": "orders", "stepId": "notify", "data": data}
        )
        await session.commit()
    return seq


def verified(secret: str, request: dict[str, Any]) -> dict[str, Any]:
    """The payload, after the receiver-side check of the Standard Webhooks signature."""
    return Verifier(secret).verify(request["body"], request["headers"])


async def test_execution_completed_is_delivered_once_signed(
    server: str, tenant: TenantKeys, other_tenant: TenantKeys, receiver: Any
) -> None:
    mine, theirs = receiver(), receiver()
    client = GraphQLClient(server, tenant.admin)
    created = await create(client, mine.url, ["EXECUTION_COMPLETED", "EXECUTION_FAILED"])
    assert created["__typename"] == "CreatedWebhook", created
    secret, webhook = created["secret"], created["webhook"]
    assert secret.startswith("whsec_") and webhook["enabled"] is True
    other = GraphQLClient(server, other_tenant.admin)
    assert (await create(other, theirs.url, ["EXECUTION_COMPLETED"]))["secret"] != secret

    started = await client.data(
        op("StartExecution"), {"input": {"templateName": "order-summary", "params": ORDER}}
    )
    execution_id = started["startExecution"]["id"]
    [request] = await mine.wait_for(1)
    body = verified(secret, request)
    assert body["type"] == "execution.completed"
    assert body["data"]["executionId"] == execution_id
    assert body["data"]["status"] == "COMPLETED" and body["data"]["seq"] >= 1
    assert request["path"] == "/hooks/wfs"
    assert request["headers"]["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception, match="signature"):
        Verifier("whsec_" + "A" * 43 + "=").verify(request["body"], request["headers"])

    [row] = await wait_deliveries(client, webhook["id"], 1)
    assert (row["attempts"], row["statusCode"], row["event"]) == (1, 200, "EXECUTION_COMPLETED")
    assert row["messageId"] == request["headers"]["webhook-id"]
    # Later dispatcher rounds add nothing, and the other tenant's endpoint heard nothing.
    await asyncio.sleep(2)
    assert len(mine.requests) == 1 and len(await deliveries(client, webhook["id"])) == 1
    assert theirs.requests == []
    # The other tenant neither sees the webhook nor its log.
    listed = await other.data(op("Webhooks"), {"first": 10})
    assert webhook["id"] not in [e["node"]["id"] for e in listed["webhooks"]["edges"]]
    body = await other.raw(op("WebhookDeliveries"), {"webhookId": webhook["id"]})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
    redo = await other.data(op("RedeliverWebhook"), {"deliveryId": row["id"]})
    assert redo["redeliverWebhook"]["code"] == "NOT_FOUND"
    node = "query($id: ID!) { node(id: $id) { ... on Webhook { url } } }"
    assert (await client.data(node, {"id": webhook["id"]}))["node"] == {"url": mine.url}
    assert (await other.data(node, {"id": webhook["id"]}))["node"] is None


async def assert_replays(history: WorkflowHistory) -> None:
    replayer = Replayer(
        workflows=[WebhookDeliveryWorkflow],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_recorded_delivery_history_replays() -> None:
    """A delivery workflow recorded earlier (a failed attempt, a retry, delivered) replays
    against today's code: a change that breaks determinism fails here."""
    text = RETRIED_HISTORY.read_text()  # noqa: ASYNC240
    await assert_replays(WorkflowHistory.from_json("webhook-recorded", text))


async def test_failed_attempt_is_retried_logged_and_redelivered(
    server: str, settings: Settings, tenant: TenantKeys, sessions: Any, receiver: Any
) -> None:
    endpoint = receiver([500])
    client = GraphQLClient(server, tenant.admin)
    created = await create(client, endpoint.url, ["EVENTS_PUBLISHED"])
    secret, webhook_id = created["secret"], created["webhook"]["id"]
    seq = await publish(sessions, await tenant_uuid(sessions, tenant), {"order": 42})

    first, second = await endpoint.wait_for(2)
    assert verified(secret, first) == verified(secret, second)  # the same message, signed anew
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    payload = verified(secret, second)
    assert payload["type"] == "events.published" and payload["data"]["seq"] == seq
    assert payload["data"]["data"] == {"order": 42} and payload["data"]["executionId"] is None
    [row] = await wait_deliveries(client, webhook_id, 1)
    assert (row["attempts"], row["statusCode"], row["error"]) == (2, 200, None)
    pk = base64.urlsafe_b64decode(webhook_id + "==").decode().split(":", 1)[1]
    temporal = await Client.connect(settings.temporal_address or "")
    handle = temporal.get_workflow_handle(f"webhook-{pk}-{seq}")
    # On the webhook queue: a slow endpoint holds none of the executions' activity slots.
    assert (await handle.describe()).task_queue == settings.webhook_task_queue
    history = await handle.fetch_history()
    await assert_replays(history)
    if os.environ.get("WFS_RECORD_HISTORIES") == "1" and not RETRIED_HISTORY.exists():
        RETRIED_HISTORY.parent.mkdir(exist_ok=True)
        RETRIED_HISTORY.write_text(history.to_json())

    redo = await client.data(op("RedeliverWebhook"), {"deliveryId": row["id"]})
    assert redo["redeliverWebhook"]["redelivery"] is True, redo
    third = (await endpoint.wait_for(3))[2]
    assert third["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    assert verified(secret, third)["data"]["seq"] == seq
    rows = await wait_deliveries(client, webhook_id, 2)
    assert [r["redelivery"] for r in rows] == [True, False]  # newest first


async def test_gone_disables_and_failures_are_logged(
    server: str, tenant: TenantKeys, sessions: Any, receiver: Any
) -> None:
    endpoint = receiver([410])
    client = GraphQLClient(server, tenant.admin)
    webhook_id = (await create(client, endpoint.url, ["EVENTS_PUBLISHED"]))["webhook"]["id"]
    owner = await tenant_uuid(sessions, tenant)
    await publish(sessions, owner, {"n": 1})
    [row] = await wait_deliveries(client, webhook_id, 1, status="FAILED")
    assert (row["attempts"], row["statusCode"]) == (1, 410)
    assert row["error"].startswith("HTTP 410") and "receiver says no" in row["error"]
    [hook] = [
        e["node"]
        for e in (await client.data(op("Webhooks"), {"first": 50}))["webhooks"]["edges"]
        if e["node"]["id"] == webhook_id
    ]
    assert hook["enabled"] is False and "410" in hook["disabledReason"]
    redo = await client.data(op("RedeliverWebhook"), {"deliveryId": row["id"]})
    assert redo["redeliverWebhook"]["code"] == "CONFLICT"

    await publish(sessions, owner, {"n": 2})  # while disabled: not sent, not even later
    await asyncio.sleep(2)
    enabled = await client.data(op("UpdateWebhook"), {"input": {"id": webhook_id, "enabled": True}})
    assert enabled["updateWebhook"]["enabled"] is True
    await publish(sessions, owner, {"n": 3})
    second = (await endpoint.wait_for(2))[1]
    assert json.loads(second["body"])["data"]["data"] == {"n": 3}
    await asyncio.sleep(1.5)
    assert len(endpoint.requests) == 2

    deleted = await client.data(op("DeleteWebhook"), {"id": webhook_id})
    assert deleted["deleteWebhook"]["__typename"] == "Webhook"
    body = await client.raw(op("WebhookDeliveries"), {"webhookId": webhook_id})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.1/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://[::1]/hook",  # loopback, IPv6
        "https://[::ffff:192.168.0.1]/hook",  # private, inside IPv4-mapped IPv6
        "https://localhost/hook",  # a name that resolves to loopback
        "http://example.com/hook",  # plain http to a host the operator does not list
        "https://example.com:8443/hook",  # a port outside HTTP_ALLOWED_PORTS
        "https://user:pw@example.com/hook",  # credentials in the URL
        "ftp://example.com/hook",
        "https://example.com/" + "a" * 2048,
        "https://a..com/hook",  # an empty label: the IDNA codec raises UnicodeError
        "https://" + "a" * 64 + ".com/hook",  # a label over 63 characters, likewise
    ],
)
async def test_create_refuses_unsafe_urls(server: str, tenant: TenantKeys, url: str) -> None:
    client = GraphQLClient(server, tenant.admin)
    refused = await create(client, url, ["EXECUTION_COMPLETED"])
    assert refused["__typename"] == "ValidationError", refused


async def test_create_refuses_empty_events(server: str, tenant: TenantKeys, receiver: Any) -> None:
    client = GraphQLClient(server, tenant.admin)
    assert (await create(client, receiver().url, []))["code"] == "VALIDATION_FAILED"


async def test_only_admins_manage_webhooks(server: str, tenant: TenantKeys, receiver: Any) -> None:
    admin = GraphQLClient(server, tenant.admin)
    webhook_id = (await create(admin, receiver().url, ["EXECUTION_FAILED"]))["webhook"]["id"]
    for key in (tenant.operator, tenant.viewer):
        client = GraphQLClient(server, key)
        assert (await create(client, receiver().url, ["EXECUTION_FAILED"]))["code"] == "FORBIDDEN"
        for name, variables in (
            ("Webhooks", {}),
            ("WebhookDeliveries", {"webhookId": webhook_id}),
        ):
            body = await client.raw(op(name), variables)
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
        update = {"input": {"id": webhook_id, "enabled": False}}
        assert (await client.data(op("UpdateWebhook"), update))["updateWebhook"][
            "code"
        ] == "FORBIDDEN"
        deleted = await client.data(op("DeleteWebhook"), {"id": webhook_id})
        assert deleted["deleteWebhook"]["code"] == "FORBIDDEN"


async def test_secret_is_shown_once(
    server: str, settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    client = GraphQLClient(server, tenant.admin)
    created = await create(client, receiver().url, ["EXECUTION_FAILED"])
    # At rest it is sealed (WEBHOOK_SECRET_KEY or the state dir's key), not in clear.
    async with sessions() as session:
        [row] = await WebhookRepository(session).page(await tenant_uuid(sessions, tenant), None, 5)
    assert created["secret"] not in row.secret
    assert SecretBox(settings).open(row.secret) == created["secret"]
    body = await client.raw("{ webhooks(first: 5) { edges { node { id secret } } } }")
    assert "Cannot query field 'secret'" in body["errors"][0]["message"], body
    updated = await client.raw(
        "mutation($input: UpdateWebhookInput!) { updateWebhook(input: $input) "
        "{ ... on CreatedWebhook { secret } } }",
        {"input": {"id": created["webhook"]["id"], "enabled": True}},
    )
    assert updated.get("errors"), updated  # no mutation but createWebhook answers a secret


def delivery_rows(webhook: Webhook, seqs: Any) -> list[dict[str, Any]]:
    """Delivery rows as the dispatcher makes them, one per seq."""
    common = {"webhook_id": webhook.id, "tenant_id": webhook.tenant_id, "status": "PENDING"}
    common |= {"event_type": "events.published", "payload": {"type": "events.published"}}
    return [{**common, "seq": seq, "attempts": 0, "created_at": utcnow()} for seq in seqs]


def admin_of(tenant_id: uuid.UUID) -> Principal:
    return Principal(tenant_id, "t", "free", "admin", key_id=uuid.uuid4())


async def test_delivery_checks_the_address_again(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """A name the operator allowed when the webhook was made, whose address is no longer
    allowed when it is delivered (DNS rebinding, or the operator closed the network), is not
    called: the attempt records the refusal."""
    endpoint = receiver()
    hosts = ["127.0.0.1:*", "localhost:*"]
    permissive = settings.model_copy(
        update={"http_allowed_hosts": hosts, "http_allowed_networks": ["127.0.0.0/8", "::1/128"]}
    )
    strict = settings.model_copy(update={"http_allowed_hosts": hosts})
    owner = await tenant_uuid(sessions, tenant)
    url = endpoint.url.replace("127.0.0.1", "localhost")
    async with sessions() as session:
        with pytest.raises(DestinationRefused, match="internal address"):
            await WebhookService(session, strict).create(admin_of(owner), url, ["events.published"])
        webhook, _ = await WebhookService(session, permissive).create(
            admin_of(owner), url, ["events.published"]
        )
        repo = WebhookRepository(session)
        # Rows the dispatcher would make, marked started so it leaves them.
        ids = await repo.add_deliveries(delivery_rows(webhook, range(10_001, 10_003)))
        await repo.mark_started(ids, utcnow())
        await session.commit()

    refused = await WebhookSender(sessions, strict).attempt(ids[0], 1, final=True)
    assert not refused.delivered and "internal address" in (refused.error or "")
    assert endpoint.requests == []
    delivered = await WebhookSender(sessions, permissive).attempt(ids[1], 1, final=True)
    assert delivered.delivered and len(endpoint.requests) == 1
    async with sessions() as session:
        row = await WebhookRepository(session).delivery(owner, ids[0])
        assert row is not None and (row.status, row.attempts) == ("FAILED", 1)


async def test_webhooks_per_tenant_are_bounded(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    owner = await tenant_uuid(sessions, tenant)
    one = settings.model_copy(update={"webhook_max_per_tenant": 1})
    async with sessions() as session:
        service = WebhookService(session, one)
        await service.create(admin_of(owner), receiver().url, ["execution.failed"])
        with pytest.raises(QuotaExceeded):
            await service.create(admin_of(owner), receiver().url, ["execution.failed"])
        await session.rollback()


async def test_concurrent_creates_stay_within_the_bound(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """Five admins creating at once, each in its own transaction, with room for two: two
    succeed, and the tenant has two webhooks."""
    owner = await tenant_uuid(sessions, tenant)
    two = settings.model_copy(update={"webhook_max_per_tenant": 2})
    url = receiver().url

    async def create_one() -> bool:
        async with sessions() as session:
            try:
                await WebhookService(session, two).create(
                    admin_of(owner), url, ["execution.failed"]
                )
            except QuotaExceeded:
                return False
            await session.commit()
            return True

    made = await asyncio.gather(*(create_one() for _ in range(5)))
    assert sum(made) == 2, made
    async with sessions() as session:
        assert await WebhookRepository(session).count(owner) == 2


async def test_a_tenants_backlog_does_not_hold_back_another(
    settings: Settings, sessions: Any, tenant: TenantKeys, other_tenant: TenantKeys, receiver: Any
) -> None:
    """One tenant has two batches of deliveries waiting, older than another tenant's one:
    the first batch the dispatcher claims already holds the other tenant's delivery."""
    url, busy = receiver().url, await tenant_uuid(sessions, tenant)
    quiet = await tenant_uuid(sessions, other_tenant)
    async with sessions() as session:
        service, repo = WebhookService(session, settings), WebhookRepository(session)
        backlog, _ = await service.create(admin_of(busy), url, ["events.published"])
        single, _ = await service.create(admin_of(quiet), url, ["events.published"])
        await repo.add_deliveries(delivery_rows(backlog, range(1, 2 * START_BATCH + 1)))
        [waiting] = await repo.add_deliveries(delivery_rows(single, [1]))
        # Not committed: the session's own dispatcher cannot see, let alone start, these rows.
        claimed = await repo.claim_unstarted(START_BATCH)
        assert waiting in [row.id for row in claimed]
        assert sum(row.tenant_id == busy for row in claimed) < START_BATCH
        await session.rollback()


async def test_two_dispatchers_never_claim_the_same_delivery(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """Two workers claiming at once get disjoint batches, and the second one gets work (the
    rows the first holds are skipped, not waited for or taken again)."""
    owner = await tenant_uuid(sessions, tenant)
    async with sessions() as session:
        webhook, _ = await WebhookService(session, settings).create(
            admin_of(owner), receiver().url, ["events.published"]
        )
        await session.commit()
        made = set(
            await WebhookRepository(session).add_deliveries(delivery_rows(webhook, range(1, 11)))
        )
        await session.commit()
    async with sessions() as one, sessions() as two:
        first = {row.id for row in await WebhookRepository(one).claim_unstarted(5)}
        second = {row.id for row in await WebhookRepository(two).claim_unstarted(5)}
        await one.rollback()
        await two.rollback()
    assert first and second and not first & second
    assert len((first | second) & made) >= 2
    async with sessions() as session:  # nothing left to deliver
        await WebhookService(session, settings).delete(admin_of(owner), webhook.id)
        await session.commit()


async def test_dispatching_twice_delivers_once(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """Two workers dispatching at once, and a round that reads the same notifications again
    (its cursor rewound), make one delivery per (webhook, seq) and start it once; only the
    events the webhook wants become deliveries."""
    endpoint = receiver()
    owner = await tenant_uuid(sessions, tenant)
    async with sessions() as session:
        webhook, _ = await WebhookService(session, settings).create(
            admin_of(owner), endpoint.url, ["events.published"]
        )
        await session.commit()
    wanted = [await publish(sessions, owner, {"n": 1})]
    async with sessions() as session:
        await NotificationService(session).add(owner, "EXECUTION_COMPLETED", {"status": "x"})
        await session.commit()
    wanted.append(await publish(sessions, owner, {"n": 2}))

    temporal = await Client.connect(settings.temporal_address or "")
    workers = [Dispatcher(sessions, temporal, settings) for _ in "ab"]
    await asyncio.gather(*(w.dispatch(webhook.id) for w in workers))
    async with sessions() as session:
        rewound = await session.get(Webhook, webhook.id, with_for_update=True)
        assert rewound is not None and rewound.last_seq == wanted[-1]
        rewound.last_seq = 0
        await session.commit()
    await workers[0].dispatch(webhook.id)
    await asyncio.gather(*(w.start_pending() for w in workers))

    requests = await endpoint.wait_for(2)
    await asyncio.sleep(2)  # the session's own dispatcher polls meanwhile
    assert sorted(json.loads(r["body"])["data"]["seq"] for r in requests) == wanted
    async with sessions() as session:
        rows = await WebhookRepository(session).deliveries(webhook.id, None, 10)
    assert sorted(r.seq for r in rows) == wanted


NODE_HARNESS = """
import { verifyWebhook } from "./verify.mjs";
const input = JSON.parse(await new Promise((done) => {
  let text = "";
  process.stdin.on("data", (c) => (text += c));
  process.stdin.on("end", () => done(text));
}));
try {
  const body = Buffer.from(input.body, "base64");
  console.log(JSON.stringify(verifyWebhook(input.secret, input.headers, body)));
} catch (error) { console.log(JSON.stringify({ refused: error.message })); }
"""


def guide_block(language: str) -> str:
    [block] = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)
    return block


async def test_the_guides_verifiers_accept_a_real_delivery(
    server: str, tenant: TenantKeys, sessions: Any, receiver: Any, tmp_path: Path
) -> None:
    """docs/webhooks.md's Python and Node.js verifiers, run as written on a real delivery:
    they return the payload, and refuse it once a byte of the body changes."""
    endpoint = receiver()
    client = GraphQLClient(server, tenant.admin)
    secret = (await create(client, endpoint.url, ["EVENTS_PUBLISHED"]))["secret"]
    await publish(sessions, await tenant_uuid(sessions, tenant), {"hello": "world"})
    [request] = await endpoint.wait_for(1)
    headers = {k.lower(): v for k, v in request["headers"].items()}
    tampered = request["body"].replace(b"world", b"World")

    namespace: dict[str, Any] = {}
    exec(guide_block("python"), namespace)  # noqa: S102 (the guide's own example)
    payload = namespace["verify_webhook"](secret, headers, request["body"])
    assert payload["data"]["data"] == {"hello": "world"}
    with pytest.raises(Exception, match="signature"):
        namespace["verify_webhook"](secret, headers, tampered)

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    (tmp_path / "verify.mjs").write_text(guide_block("js"))
    (tmp_path / "harness.mjs").write_text(NODE_HARNESS)

    def run_node(body: bytes) -> dict[str, Any]:
        stdin = json.dumps(
            {"secret": secret, "headers": headers, "body": base64.b64encode(body).decode()}
        )
        done = subprocess.run(
            [node, str(tmp_path / "harness.mjs")],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert await asyncio.to_thread(run_node, request["body"]) == payload
    refused = await asyncio.to_thread(run_node, tampered)
    assert refused == {"refused": "no valid webhook signature"}


async def stored(sessions: Any, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    async with sessions() as session:
        return await session.get(WebhookDelivery, delivery_id)


async def test_a_last_attempt_that_raises_is_recorded_failed(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """An attempt that raises instead of recording (the database down in attempt()) on the
    last try, or times out, fails the activity: the workflow then records the delivery FAILED
    in an activity of its own, instead of leaving it PENDING for ever. The attempt is played
    by an activity registered under the real one's name that always raises."""
    owner = await tenant_uuid(sessions, tenant)
    async with sessions() as session:
        webhook, _ = await WebhookService(session, settings).create(
            admin_of(owner), receiver().url, ["events.published"]
        )
        [delivery_id] = await WebhookRepository(session).add_deliveries(delivery_rows(webhook, [1]))
        await WebhookRepository(session).mark_started([delivery_id], utcnow())
        await session.commit()

    @activity.defn(name=DELIVER_ACTIVITY)
    async def crashing_attempt(job: DeliveryJob) -> bool:
        raise RuntimeError("the database is down")

    queue = f"webhook-crash-{uuid.uuid4().hex[:8]}"
    temporal = await Client.connect(settings.temporal_address or "")
    job = DeliveryJob(str(delivery_id), 2, 0.1, 0.1, 1.0)
    record = WebhookActivities(sessions, settings).record_failure
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=[WebhookDeliveryWorkflow],
        activities=[crashing_attempt, record],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        ),
    ):
        handle = await temporal.start_workflow(
            WEBHOOK_WORKFLOW, job, id=f"webhook-crash-{delivery_id}", task_queue=queue
        )
        delivered = await handle.result()
    assert delivered is False
    await assert_replays(await handle.fetch_history())
    row = await stored(sessions, delivery_id)
    assert row is not None and row.status == "FAILED"
    assert "did not finish" in (row.error or "") and "database is down" in (row.error or "")


async def test_stalled_delivery_whose_workflow_is_gone_is_failed(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """A PENDING row started a day ago whose workflow Temporal does not know (or has closed)
    is marked FAILED by the dispatcher's sweep; a recent one is left alone."""
    owner = await tenant_uuid(sessions, tenant)
    async with sessions() as session:
        webhook, _ = await WebhookService(session, settings).create(
            admin_of(owner), receiver().url, ["events.published"]
        )
        repo = WebhookRepository(session)
        old, recent = await repo.add_deliveries(delivery_rows(webhook, [1, 2]))
        await repo.mark_started([old], utcnow() - timedelta(days=1))
        await repo.mark_started([recent], utcnow())
        await session.commit()
    temporal = await Client.connect(settings.temporal_address or "")
    await Dispatcher(sessions, temporal, settings).sweep_stalled()
    gone, alive = await stored(sessions, old), await stored(sessions, recent)
    assert (
        gone is not None and gone.status == "FAILED" and "without an outcome" in (gone.error or "")
    )
    assert alive is not None and alive.status == "PENDING"
    async with sessions() as session:
        await WebhookService(session, settings).delete(admin_of(owner), webhook.id)
        await session.commit()


async def test_finished_deliveries_past_the_retention_are_purged(
    settings: Settings, sessions: Any, tenant: TenantKeys, receiver: Any
) -> None:
    """Finished rows older than WEBHOOK_DELIVERY_RETENTION_DAYS go; PENDING and recent rows
    stay, and so does an original while a redelivery points to it."""
    owner = await tenant_uuid(sessions, tenant)
    long_ago = utcnow() - timedelta(days=settings.webhook_delivery_retention_days + 1)
    async with sessions() as session:
        webhook, _ = await WebhookService(session, settings).create(
            admin_of(owner), receiver().url, ["events.published"]
        )
        repo = WebhookRepository(session)
        ids = await repo.add_deliveries(delivery_rows(webhook, [1, 2, 3, 4]))
        rows = [await session.get(WebhookDelivery, i) for i in ids]
        for row, status in zip(rows, ["DELIVERED", "FAILED", "PENDING", "DELIVERED"], strict=True):
            assert row is not None
            row.status, row.started_at = status, utcnow()
            row.created_at = long_ago if row.seq != 4 else utcnow()
        assert rows[1] is not None
        redelivery = await repo.add_redelivery(rows[1])
        redelivery.status = "DELIVERED"
        await session.commit()
    temporal = await Client.connect(settings.temporal_address or "")
    await Dispatcher(sessions, temporal, settings).purge()
    kept = [await stored(sessions, i) is not None for i in ids]
    assert kept == [False, True, True, True]
    assert await stored(sessions, redelivery.id) is not None
    async with sessions() as session:
        await WebhookService(session, settings).delete(admin_of(owner), webhook.id)
        await session.commit()
