"""Prometheus metrics of the service. The API serves them at /metrics; `wfs worker` serves
them on --metrics-port (WORKER_METRICS_PORT). In `wfs dev` both roles share one process and one
registry. Temporal's SDK metrics (temporal_*) join the same registry (app/temporal_metrics.py);
docs/observability.md lists them all."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GRAPHQL_REQUESTS = Counter("wfs_graphql_requests_total", "GraphQL HTTP requests", ["method"])
# `type`: query, mutation, subscription (unknown: unparsable); `operation`: the schema field
# the operation selects at its root, `(multiple)`, or `(invalid)` when it was not validated.
GRAPHQL_OPERATION_DURATION = Histogram(
    "wfs_graphql_operation_duration_seconds",
    "Queries and mutations, HTTP or WebSocket, from receipt to result (subscriptions: see "
    "wfs_graphql_active_subscriptions)",
    ["type", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GRAPHQL_ERRORS = Counter(
    "wfs_graphql_errors_total",
    "Operations that answered with an error, once per code: the UserError code (a mutation's "
    "union member or a coded GraphQL error), INTERNAL_SERVER_ERROR (an unexpected exception, "
    "masked), GRAPHQL_VALIDATION_FAILED (unparsable, invalid or over a limit: not run)",
    ["type", "operation", "code"],
)
GRAPHQL_ACTIVE_SUBSCRIPTIONS = Gauge(
    "wfs_graphql_active_subscriptions", "Subscriptions running now (all sockets of this process)"
)
RATE_LIMITED = Counter(
    "wfs_rate_limited_total",
    "Operations and socket connects refused by a rate limit (per tenant or per client address)",
)
AUTH_FAILURES = Counter(
    "wfs_auth_failures_total", "Key lookups that failed (malformed, unknown or revoked key)"
)
WS_OPERATIONS = Counter(
    "wfs_ws_operations_total", "Operations (subscriptions, queries, mutations) sent on WebSockets"
)
WS_CLOSED = Counter(
    "wfs_ws_closed_total",
    "WebSockets the API closed by rule: revoked (key revoked or gone), oversize (message over "
    "MAX_REQUEST_BYTES), sockets (the tenant's open sockets at WS_MAX_SOCKETS_PER_TENANT)",
    ["reason"],
)
EXECUTIONS_STARTED = Counter(
    "wfs_executions_started_total", "Executions whose workflow was started", ["tier"]
)
EXECUTION_START_FAILURES = Counter(
    "wfs_execution_start_failures_total",
    "Executions marked FAILED because Temporal refused the start",
)
EXECUTION_EVENTS = Counter(
    "wfs_execution_events_total", "Execution transitions recorded by workers", ["type"]
)
ENHANCEMENT_POINTS = Counter(
    "wfs_enhancement_points_total",
    "Enhancement point decisions recorded by workers",
    ["task", "decision", "reason"],
)
TRANSITIONS_REFUSED = Counter(
    "wfs_execution_transitions_refused_total",
    "Events not recorded because the execution's status forbids them (a late event of an "
    "ended run): by event type and the status it met",
    ["type", "status"],
)
EVENT_PUBLISH_FAILURES = Counter(
    "wfs_event_publish_failures_total",
    "Events committed to PostgreSQL but not published to Redis (subscribers re-read them)",
)
EXECUTION_DURATION = Histogram(
    "wfs_execution_duration_seconds",
    "Start to terminal state of executions",
    ["status"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600),
)
UPKEEP_FAILURES = Counter(
    "wfs_upkeep_failures_total",
    "Periodic upkeep (retention purges) that failed or timed out; the next round retries",
    ["job"],
)
SLA_BREACHES = Counter(
    "wfs_sla_breaches_total",
    "SLA breaches recorded (each notified once): DURATION (a run took, or has been open, longer "
    "than its max duration) and SUCCESS_RATE (a template's success rate over its window fell "
    "below the minimum)",
    ["kind"],
)
SLA_FAILURES = Counter(
    "wfs_sla_failures_total",
    "SLA work that failed and was skipped: `recorder` (judging an ended run; its terminal event "
    "was recorded regardless), `round` (the worker's periodic evaluation), `round_budget` "
    "(a round stopped at its time budget; the next round goes on)",
    ["where"],
)
# Plugin workers (`wfs worker --plugin NAME`, workers/plugin_worker.py; docs/plugins-sandbox.md).
PLUGIN_CALLS = Counter(
    "wfs_plugin_calls_total",
    "Plugin step calls by how they ended: ok, invalid_input, invalid_output, raised, refused "
    "(the sandbox's fence), timeout, silent (stopped heartbeating), cpu, memory, file_size, "
    "killed, crashed, exited",
    ["plugin", "step", "outcome"],
)
PLUGIN_CALL_SECONDS = Histogram(
    "wfs_plugin_call_seconds",
    "Wall time of plugin step calls, sandbox process start included",
    ["plugin", "step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PLUGIN_RESTARTS = Counter(
    "wfs_plugin_restarts_total",
    "Plugin sandbox processes that ended abnormally (killed, crashed or exited without an "
    "answer); the next call gets a fresh one",
    ["plugin"],
)
PLUGIN_LIMIT_KILLS = Counter(
    "wfs_plugin_limit_kills_total",
    "Plugin calls stopped by a limit: timeout, heartbeat, cpu, memory, file_size, output, "
    "killed (SIGKILL from the CPU hard limit or the OOM killer)",
    ["plugin", "limit"],
)
