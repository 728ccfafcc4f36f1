"""Resource usage of real executions of standard templates, checked against what the outside
world saw: the bytes of the file on disk (user-onboarding's files.write), the messages the
aiosmtpd sink received, the requests the local HTTP server got (notification's email and
webhook), and the execution's own AI usage records (a premium tenant: the fake LLM answers the
enhancement points). Then the template-level aggregate over a window, a run from before usage
was recorded (its completions' `usage` removed, as such an event looks), and isolation.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import text

from app.ai.fake_llm import FakeLLMServer
from app.embedded.mail import DevMailSink
from app.executions.step_usage import step_usage
from app.settings import Settings
from app.tenants.service import TenantService
from tests.api.test_execution_stats import refresh
from tests.conftest import make_tenant
from tests.support import GraphQLClient, WebhookSink
from tests.workers.test_enhancements import params
from tests.workers.test_template_graph import pk, run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
USAGE_FIELDS = """
  executions finished wallSeconds wallP50Seconds wallP95Seconds activitySeconds stepAttempts
  activityRetries completions completionsWithUsage bytesWritten emailsSent httpCalls
  aiCalls aiInputTokens aiOutputTokens aiCostUsd
  steps {
    stepId activity attempts activityRetries completed activeSeconds
    bytesWritten emailsSent httpCalls aiCalls aiInputTokens aiOutputTokens aiCostUsd
  }
"""
EXECUTION_USAGE = (
    "query($id: ID!) { execution(id: $id) { startedAt finishedAt "
    "aiUsage { stepId inputTokens outputTokens costUsd } "
    f"resourceUsage {{ {USAGE_FIELDS} }} }} }}"
)
TEMPLATE_USAGE = (OPS / "TemplateResourceUsage.graphql").read_text()


def step(usage: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in usage["steps"] if s["stepId"] == step_id)


def check_ai(usage: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """The AI totals and each step's are the execution's own AI usage records."""
    assert usage["aiCalls"] == len(records) > 0
    assert usage["aiInputTokens"] == sum(r["inputTokens"] for r in records)
    assert usage["aiOutputTokens"] == sum(r["outputTokens"] for r in records)
    assert float(usage["aiCostUsd"]) == sum(float(r["costUsd"]) for r in records) > 0
    for r in records:
        assert step(usage, r["stepId"].split("[")[0])["aiCalls"] >= 1


def check_time(usage: dict[str, Any], execution: dict[str, Any]) -> None:
    wall = (
        datetime.fromisoformat(execution["finishedAt"])
        - datetime.fromisoformat(execution["startedAt"])
    ).total_seconds()
    assert (
        abs(usage["wallSeconds"] - wall) < 1e-3 and usage["wallP50Seconds"] == usage["wallSeconds"]
    )
    # Steps without dependencies between them run at once: each is within the wall time.
    assert usage["activitySeconds"] > 0
    assert all(0 <= s["activeSeconds"] <= wall for s in usage["steps"])
    assert usage["activitySeconds"] == sum(s["activeSeconds"] for s in usage["steps"])
    ran = [s for s in usage["steps"] if s["attempts"]]
    assert all(s["attempts"] == 1 and s["completed"] == 1 for s in ran)
    assert (
        usage["stepAttempts"] == usage["completions"] == usage["completionsWithUsage"] == len(ran)
    )


async def test_usage_of_real_runs_matches_disk_mail_http_and_ai_records(
    server: str,
    sessions: Any,
    settings: Settings,
    fake_llm: FakeLLMServer,
    mail_sink: DevMailSink,
    webhook_sink: WebhookSink,
) -> None:
    keys = await make_tenant(sessions, "premium")
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    client = GraphQLClient(server, keys.admin)
    since = datetime.now(UTC) - timedelta(minutes=1)

    # user-onboarding: files.write (store), email.send (welcome, AI-enhanced), wait.event.
    _, onboarding = await run(client, server, keys.admin, "user-onboarding", params("Usage"))
    assert onboarding["status"] == "COMPLETED", onboarding["error"]
    got = (await client.data(EXECUTION_USAGE, {"id": onboarding["id"]}))["execution"]
    usage = got["resourceUsage"]
    profile = settings.files_root / str(tenant.id) / onboarding["result"]["profile"]
    assert usage["bytesWritten"] == profile.stat().st_size > 0
    assert step(usage, "store")["bytesWritten"] == profile.stat().st_size
    assert step(usage, "store")["activity"] == "files.write"
    address = onboarding["params"]["user"]["email"]
    assert usage["emailsSent"] == len(mail_sink_to(mail_sink, address)) == 1
    assert usage["httpCalls"] == 0
    check_time(usage, got)
    check_ai(usage, got["aiUsage"])

    # notification: email to two recipients, a webhook POST to a local server, in-app.
    hook = f"/usage/{uuid.uuid4().hex}"
    recipients = [f"{uuid.uuid4().hex[:8]}@example.com" for _ in range(2)]
    notify = {
        "message": "Usage check",
        "channels": ["email", "webhook", "in_app"],
        "email_to": recipients,
        "webhook_url": webhook_sink.url + hook,
    }
    _, notified = await run(client, server, keys.admin, "notification", notify)
    assert notified["status"] == "COMPLETED", notified["error"]
    got = (await client.data(EXECUTION_USAGE, {"id": notified["id"]}))["execution"]
    usage = got["resourceUsage"]
    sent = sum(len(mail_sink_to(mail_sink, r)) for r in recipients)
    assert usage["emailsSent"] == step(usage, "email")["emailsSent"] == sent == 2
    posts = [h for h in webhook_sink.received if h["path"] == hook]
    assert usage["httpCalls"] == step(usage, "webhook")["httpCalls"] == len(posts) == 1
    assert usage["bytesWritten"] == 0
    check_time(usage, got)
    check_ai(usage, got["aiUsage"])

    # Template level: the two notification runs, one of them from before usage was recorded.
    _, older = await run(client, server, keys.admin, "notification", notify)
    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE execution_events SET payload = payload - 'usage' "
                "WHERE execution_id = :id AND type = 'STEP_COMPLETED'"
            ),
            {"id": pk(older["id"])},
        )
        await s.commit()
    gone = (await client.data(EXECUTION_USAGE, {"id": older["id"]}))["execution"]
    assert gone["resourceUsage"]["emailsSent"] is None
    assert gone["resourceUsage"]["completionsWithUsage"] == 0
    template_id = notified["template"]["id"]
    window = {
        "templateId": template_id,
        "from": since.isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
    }
    total = (await client.data(TEMPLATE_USAGE, window))["templateResourceUsage"]
    assert total["template"]["name"] == "notification"
    both = total["usage"]
    assert (both["executions"], both["finished"]) == (2, 2)
    assert both["completions"] == 6 and both["completionsWithUsage"] == 3
    assert (both["emailsSent"], both["httpCalls"]) == (2, 1)  # what was recorded
    assert step(both, "email")["attempts"] == 2
    assert both["aiCalls"] == usage["aiCalls"] + gone["resourceUsage"]["aiCalls"]

    # The same runs as days the rollup holds: moved three days back (their creation time is
    # all the rollup keys them by), rolled up, asked again over a window that covers them.
    async with sessions() as s:
        await s.execute(
            text(
                "UPDATE executions SET created_at = created_at - interval '3 days', "
                "updated_at = now() WHERE id = ANY(:ids)"
            ),
            {"ids": [uuid.UUID(pk(e["id"])) for e in (notified, older)]},
        )
        await s.commit()
    await refresh(sessions)
    moved = {**window, "from": (since - timedelta(days=4)).isoformat()}
    rolled = (await client.data(TEMPLATE_USAGE, moved))["templateResourceUsage"]["usage"]
    assert approx(rolled) == approx(both)

    # Another tenant: none of these runs, and not the execution.
    other = GraphQLClient(server, (await make_tenant(sessions, "premium")).admin)
    empty = (await other.data(TEMPLATE_USAGE, window))["templateResourceUsage"]["usage"]
    assert (empty["executions"], empty["steps"], empty["bytesWritten"]) == (0, [], None)
    body = await other.raw(EXECUTION_USAGE, {"id": notified["id"]})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    edges = [("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"), ("9999-12-30T00:00:00Z", None)]
    for lo, hi in edges:
        far = {**window, "from": lo, "to": hi or "9999-12-31T23:59:59Z"}
        assert (await client.data(TEMPLATE_USAGE, far))["templateResourceUsage"]["usage"][
            "executions"
        ] == 0
    too_long = {**window, "from": (since - timedelta(days=93)).isoformat()}
    body = await client.raw(TEMPLATE_USAGE, too_long)
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"


class FlakyServer:
    """A local HTTP server that answers 503 to the first POST of each path, 204 after."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen[self.path] = seen.get(self.path, 0) + 1
                self.send_response(503 if seen[self.path] == 1 else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_temporal_retries_of_a_step_are_counted(server: str, sessions: Any) -> None:
    keys = await make_tenant(sessions, "pro")
    client = GraphQLClient(server, keys.admin)
    flaky = FlakyServer()
    try:
        hook = f"/flaky/{uuid.uuid4().hex}"
        notify = {"message": "Retry me", "channels": ["webhook"], "webhook_url": flaky.url + hook}
        _, execution = await run(client, server, keys.admin, "notification", notify)
    finally:
        flaky.close()
    assert execution["status"] == "COMPLETED", execution["error"]
    usage = (await client.data(EXECUTION_USAGE, {"id": execution["id"]}))["execution"][
        "resourceUsage"
    ]
    webhook = step(usage, "webhook")
    # The first attempt got a 503 (a transient failure), Temporal ran the activity again.
    assert flaky.seen[hook] == 2
    assert (webhook["attempts"], webhook["activityRetries"]) == (1, 1)
    assert webhook["httpCalls"] == 1  # the completed attempt's call; the retry is counted apart
    assert usage["activityRetries"] == 1


def approx(value: Any) -> Any:
    """Floats rounded (sums of the same durations in another order differ in the last bits)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx(v) for v in value]
    return value


def mail_sink_to(sink: DevMailSink, address: str) -> list[Any]:
    return [m for m in sink.messages() if address in (m["To"] or "")]


def test_a_fan_out_counts_every_item_and_other_outputs_count_nothing() -> None:
    items = [{"status": 200}, {"status": 503}, None, "not an output"]
    assert step_usage("http.request", items, fanned=True)["http_calls"] == 2
    sent = [{"accepted": ["a@x.io", "b@x.io"], "rejected": {}}, {"accepted": ["c@x.io"]}]
    assert step_usage("email.send", sent, fanned=True)["emails_sent"] == 3
    assert step_usage("files.copy", {"size": 10}, fanned=False)["bytes_written"] == 10
    assert step_usage("files.read", {"size": 10}, fanned=False)["bytes_written"] == 0  # a read
    assert step_usage("data.transform", [{"status": 1}], fanned=True) == {
        "bytes_written": 0,
        "emails_sent": 0,
        "http_calls": 0,
    }
