"""JSON Schema from tenants reads nothing, fetches nothing, stalls nothing (issue 9).

A template's `parameters` is a JSON Schema its author wrote, and params come from whoever starts
the template. Measured here through GraphQL (a viewer key where the operation allows it):
- `$ref`/`$dynamicRef`/`$schema` outside the schema are refused before use and never fetched:
  a file's secret never appears, /dev/zero is not read, a silent HTTP server gets no request,
  also for a version stored before the rule (the empty registry is the root fix);
- uniqueItems over 20,000 objects, `^(a+)+$` over 50 KB, and a schema that is exponential to
  evaluate do not stall the API's event loop (a ticker in this process, which runs the API,
  is never late by MAX_STALL); the exponential one ends as a clear VALIDATION_FAILED naming
  validation_timeout_seconds, and its thread stops working;
- oversize and over-deep specs and params are refused with the setting named;
- Hypothesis: generated schemas and params give problems or pass, never an error, and the linear
  uniqueItems agrees with jsonschema's own equality.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from jsonschema import _utils as jsonschema_utils

from app import jsonschemas
from app.models import Template, TemplateVersion
from app.settings import Settings
from app.tenants.repository import TenantRepository
from tests.conftest import TenantKeys
from tests.support import MAX_LOOP_STALL, loop_watch, own_service
from tests.templates.template_kit import make_spec, op

# Seconds the API's event loop may keep a ticker waiting (loop_watch). Validation held on the
# loop would stall it for the whole validation: at least validation_timeout_seconds (0.5 here).
# 0.25 tells that from a busy machine's scheduling noise, seen up to 0.17 with other suites
# running beside this one (0.1 failed then).
MAX_STALL = MAX_LOOP_STALL
DIALECT = "https://json-schema.org/draft/2020-12/schema"
EXPONENTIAL = r"^(a+)+$"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One client per test, made before any measurement (making one loads CA certificates on
    the event loop: 60 ms of the test's own making)."""
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def gql(
    http: httpx.AsyncClient, base: str, key: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """POST compact JSON (the request cap is on bytes; httpx's json= adds spaces)."""
    body = json.dumps({"query": query, "variables": variables}, separators=(",", ":"))
    resp = await http.post(
        f"{base}/graphql",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text[:500]
    result = resp.json()
    assert not result.get("errors"), result["errors"]
    result["_text"] = resp.text
    return result


async def validate(
    http: httpx.AsyncClient, base: str, key: str, spec: dict[str, Any]
) -> dict[str, Any]:
    result = await gql(http, base, key, op("ValidateTemplate"), {"spec": spec})
    validation = result["data"]["validateTemplate"]
    validation["_text"] = result["_text"]
    return validation


async def create(
    http: httpx.AsyncClient, base: str, key: str, spec: dict[str, Any]
) -> dict[str, Any]:
    result = await gql(http, base, key, op("CreateTemplate"), {"input": {"spec": spec}})
    return result["data"]["createTemplate"]


async def start(http: httpx.AsyncClient, base: str, key: str, **input: Any) -> dict[str, Any]:
    result = await gql(http, base, key, op("StartExecution"), {"input": input})
    return result["data"]["startExecution"]


class SilentServer:
    """A TCP server that counts connections and never answers a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
async def tight_api(settings: Settings, sessions: Any) -> AsyncIterator[str]:
    """An API with small caps (the defaults equal the request cap, so a spec over them cannot
    arrive over HTTP) and a short validation timeout."""
    async with own_service(
        settings, max_spec_bytes=8 * 1024, max_params_bytes=1024, validation_timeout_seconds=0.5
    ) as url:
        yield url


def spec_with(parameters: dict[str, Any], example_params: Any = None, **extra: Any) -> dict:
    spec = make_spec(parameters=parameters, **extra)
    spec["example_params"] = example_params
    return spec


def messages(validation: dict[str, Any]) -> dict[str, str]:
    return {p["path"]: p["message"] for p in validation["problems"]}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


@contextmanager
def validation_threads_cpu() -> Iterator[Any]:
    """CPU seconds used so far by the validation pool's threads (sampled on each call)."""
    proc = psutil.Process()

    def used() -> float:
        ids = {t.native_id for t in threading.enumerate() if t.name.startswith("wfs-json")}
        return sum(t.user_time + t.system_time for t in proc.threads() if t.id in ids)

    yield used


# --- no retrieval ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "place",
    [
        lambda ref: {"$ref": ref},
        lambda ref: {"properties": {"x": {"$ref": ref}}},
        lambda ref: {"$defs": {"d": {"items": {"$dynamicRef": ref}}}, "$ref": "#/$defs/d"},
        lambda ref: {"anyOf": [{"type": "string"}, {"$ref": ref}]},
    ],
    ids=["root", "property", "dynamic-in-defs", "anyOf"],
)
async def test_a_file_ref_is_refused_and_the_file_never_read(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys, tmp_path: Path, place: Any
) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    target = tmp_path / "secret.json"
    target.write_text(json.dumps({"enum": [secret], "description": secret}))
    spec = spec_with(place(target.as_uri()), {"rows": [1]})

    validation = await validate(http, server, tenant.viewer, spec)
    assert validation["valid"] is False
    assert any("only local references" in m for m in messages(validation).values()), validation
    assert secret not in validation["_text"]

    created = await create(http, server, tenant.admin, spec)
    assert created["code"] == "VALIDATION_FAILED"
    assert secret not in json.dumps(created)


@pytest.mark.parametrize(
    "parameters",
    [
        lambda port: {"$ref": "file:///dev/zero"},
        lambda port: {"$ref": f"http://127.0.0.1:{port}/schema.json"},
        lambda port: {"properties": {"x": {"$dynamicRef": f"http://127.0.0.1:{port}/d#x"}}},
        lambda port: {"$schema": f"http://127.0.0.1:{port}/meta", "type": "object"},
        lambda port: {"$id": f"http://127.0.0.1:{port}/base/", "$ref": "other.json"},
    ],
    ids=["dev-zero", "http", "dynamicRef", "schema-uri", "relative-to-id"],
)
async def test_dev_zero_and_a_silent_server_are_never_reached(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys, silent: SilentServer, parameters: Any
) -> None:
    spec = spec_with(parameters(silent.port), {"rows": []})
    rss = psutil.Process().memory_info().rss
    async with loop_watch() as watch:
        validation = await validate(http, server, tenant.viewer, spec)
        created = await create(http, server, tenant.admin, spec)
    assert validation["valid"] is False, validation
    assert created["code"] == "VALIDATION_FAILED"
    assert watch.worst < MAX_STALL
    assert silent.connections == 0
    assert psutil.Process().memory_info().rss - rss < 50 * 2**20


async def test_a_stored_remote_ref_is_not_fetched_at_start(
    http: httpx.AsyncClient,
    server: str,
    sessions: Any,
    tenant: TenantKeys,
    silent: SilentServer,
    tmp_path: Path,
) -> None:
    """A version stored before the rule (written to the database directly): starting it checks
    params with no retrieval at all, so the problem is reported and nothing is reached."""
    secret = f"SECRET-{uuid.uuid4().hex}"
    target = tmp_path / "secret.json"
    target.write_text(json.dumps({"enum": [secret]}))
    names = []
    for ref in (f"http://127.0.0.1:{silent.port}/s.json", target.as_uri(), "file:///dev/zero"):
        spec = make_spec(parameters={"type": "object", "properties": {"rows": {"$ref": ref}}})
        async with sessions() as session:
            owner = await TenantRepository(session).by_name(tenant.name)
            assert owner is not None
            template = Template(
                tenant_id=owner.id,
                name=spec["name"],
                title=spec["title"],
                visibility="PRIVATE",
                latest_version=1,
            )
            session.add(template)
            await session.flush()
            session.add(TemplateVersion(template_id=template.id, version=1, spec=spec))
            await session.commit()
        names.append(spec["name"])

    async with loop_watch() as watch:
        for name in names:
            result = await start(
                http, server, tenant.admin, templateName=name, params={"rows": [1]}
            )
            assert result["code"] == "VALIDATION_FAILED", result
            assert "does not resolve" in result["problems"][0]["message"]
            assert secret not in json.dumps(result)
    assert watch.worst < MAX_STALL
    assert silent.connections == 0


# --- linear keywords, off the event loop -----------------------------------------------------


async def test_unique_items_over_20000_objects_does_not_stall(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys
) -> None:
    rows = [{"a": i} for i in range(20_000)]
    parameters = {
        "type": "object",
        "properties": {"rows": {"type": "array", "uniqueItems": True}},
    }
    async with loop_watch() as watch:
        ok = await validate(http, server, tenant.viewer, spec_with(parameters, {"rows": rows}))
        rows[-1] = {"a": 0.0}  # equal to the first: 0 == 0.0 in JSON Schema
        dup = await validate(http, server, tenant.viewer, spec_with(parameters, {"rows": rows}))
    assert ok["valid"] is True, ok["problems"]
    assert messages(dup) == {
        "$.example_params.rows": "has non-unique elements (items 0 and 19999 are equal)"
    }
    assert watch.worst < MAX_STALL


async def test_an_exponential_pattern_does_not_stall(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys
) -> None:
    text = "a" * 50_000 + "b"
    parameters = {
        "type": "object",
        "properties": {
            "plain": {"type": "string", "pattern": EXPONENTIAL},
            # jsonschema switches to its stock class (Python `re`) on a subschema's $schema
            "dialect": {"$schema": DIALECT, "pattern": EXPONENTIAL},
            "keys": {"patternProperties": {EXPONENTIAL: {"type": "integer"}}},
            "regex": {"format": "regex"},
        },
    }
    # `text` does not match (the slow case for backtracking); the all-"a" key matches
    keys = {text: "not checked", "a" * 50_000: "x"}
    params = {"plain": text, "dialect": text, "keys": keys, "regex": "(a)\\1"}
    async with loop_watch() as watch:
        validation = await validate(http, server, tenant.viewer, spec_with(parameters, params))
    found = messages(validation)
    assert "does not match" in found["$.example_params.plain"]
    assert "does not match" in found["$.example_params.dialect"]
    assert "is not a 'regex'" in found["$.example_params.regex"]
    (key_path,) = [p for p in found if p.startswith("$.example_params.keys.")]
    assert found[key_path] == "'x' is not of type 'integer'"
    assert len(key_path) < 400  # a path quotes the params' keys: clipped like a message
    assert watch.worst < MAX_STALL


@pytest.mark.parametrize(
    ("pattern", "where"),
    [
        (r"^(a)\1$", "pattern"),
        (r"^(?=a)", "pattern"),
        (r"(?<!x)y", "patternProperties"),
    ],
)
async def test_a_pattern_re2_cannot_run_is_a_problem_of_the_spec(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys, pattern: str, where: str
) -> None:
    if where == "pattern":
        field: dict[str, Any] = {"type": "string", "pattern": pattern}
        path = "$.parameters.properties.x.pattern"
    else:
        field = {"patternProperties": {pattern: {}}}
        path = f"$.parameters.properties.x.patternProperties[{pattern!r}]"
    spec = spec_with({"type": "object", "properties": {"x": field}})
    validation = await validate(http, server, tenant.viewer, spec)
    assert "RE2" in messages(validation)[path], validation
    assert (await create(http, server, tenant.admin, spec))["code"] == "VALIDATION_FAILED"


async def test_an_exponential_schema_times_out_clearly_and_its_thread_stops(
    http: httpx.AsyncClient, tight_api: str, tenant: TenantKeys
) -> None:
    """anyOf over shared $defs, 40 levels: 2^40 evaluations. Refused after
    validation_timeout_seconds (0.5 here), and the thread stops at its deadline."""
    defs: dict[str, Any] = {
        f"a{i}": {"anyOf": [{"$ref": f"#/$defs/a{i + 1}"}, {"$ref": f"#/$defs/a{i + 1}"}]}
        for i in range(40)
    }
    defs["a40"] = {"type": "string"}
    parameters = {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/a0"}}}
    with validation_threads_cpu() as cpu:
        async with loop_watch() as watch:
            validation = await validate(
                http, tight_api, tenant.viewer, spec_with(parameters, {"x": 1})
            )
            created = await create(http, tight_api, tenant.admin, spec_with(parameters, {"x": 1}))
        assert watch.worst < MAX_STALL
        await asyncio.sleep(0.3)  # the thread's next keyword comes after its deadline
        before = cpu()
        await asyncio.sleep(1.0)
        assert cpu() - before < 0.2  # nothing left burning
    assert validation["valid"] is False
    assert "validation_timeout_seconds" in messages(validation)["$"]
    assert created["code"] == "VALIDATION_FAILED"
    assert "validation_timeout_seconds" in created["message"]


# --- size and depth --------------------------------------------------------------------------


async def test_an_oversize_spec_is_refused_with_the_setting_named(
    http: httpx.AsyncClient, server: str, tight_api: str, tenant: TenantKeys
) -> None:
    big = make_spec(description="x" * 10_000)
    validation = await validate(http, tight_api, tenant.viewer, big)
    assert "max_spec_bytes" in messages(validation)["$"]
    created = await create(http, tight_api, tenant.admin, big)
    assert created["code"] == "VALIDATION_FAILED"
    assert "max_spec_bytes" in created["message"]

    # A draft saved under larger caps is measured again when published.
    draft = await create(http, server, tenant.admin, big)
    assert draft["__typename"] == "Template", draft
    result = await gql(
        http, tight_api, tenant.admin, op("PublishTemplate"), {"input": {"templateId": draft["id"]}}
    )
    published = result["data"]["publishTemplate"]
    assert published["code"] == "VALIDATION_FAILED"
    assert "max_spec_bytes" in published["message"]


@pytest.mark.parametrize("depth", [40, 400])
async def test_an_over_deep_spec_is_refused_with_the_setting_named(
    http: httpx.AsyncClient, server: str, tenant: TenantKeys, depth: int
) -> None:
    deep = make_spec(output=nested(depth))
    validation = await validate(http, server, tenant.viewer, deep)
    assert messages(validation) == {
        "$": "the spec nests deeper than 32 levels (setting max_json_depth)"
    }
    created = await create(http, server, tenant.admin, deep)
    assert created["code"] == "VALIDATION_FAILED"
    assert "max_json_depth" in created["message"]


async def test_oversize_and_over_deep_params_are_refused_with_the_setting_named(
    http: httpx.AsyncClient, server: str, tight_api: str, tenant: TenantKeys
) -> None:
    order = {"customer": "Grace", "items": [{"sku": "a", "qty": 1, "price": 1}]}
    big = {**order, "note": "x" * 70_000}  # over the default 64 KiB
    deep = {**order, "note": nested(40)}
    for params in (big, deep):
        for extra in ({}, {"paramsVersion": 1}):
            result = await start(
                http, server, tenant.admin, templateName="order-summary", params=params, **extra
            )
            assert result["code"] == "VALIDATION_FAILED", result
            setting = "max_params_bytes" if params is big else "max_json_depth"
            assert setting in result["message"]
    small_cap = await start(
        http,
        tight_api,
        tenant.admin,
        templateName="order-summary",
        params={**order, "n": "x" * 2000},
    )
    assert small_cap["code"] == "VALIDATION_FAILED"
    assert "at most 1024 (setting max_params_bytes)" in small_cap["message"]


# --- properties ------------------------------------------------------------------------------

# No NUL and no lone surrogates: the API refuses both at its edge before any resolver runs
# (tests/security/test_sec_values.py), so over HTTP they would test that refusal instead.
TEXT = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=8)
    | st.just(10**400)  # past float range: jsonschema's multipleOf divides as floats
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(TEXT, max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
patterns = st.sampled_from(
    ["^a", EXPONENTIAL, r"(a)\1", r"(?=x)", "[", r"\d+", "", "(?i)A", r"\p{L}+"]
)
refs = st.sampled_from(
    [
        "#",
        "#/$defs/d",
        "#/$defs/missing",
        "#/properties",
        "file:///etc/passwd",
        "http://SILENT/x",
        "other.json",
        "#anchor",
    ]
)


def schemas() -> st.SearchStrategy[Any]:
    keyword = st.one_of(
        st.tuples(
            st.just("type"),
            st.sampled_from(
                ["string", "object", "array", "integer", "number", "boolean", "null", "objekt"]
            ),
        ),
        st.tuples(st.just("pattern"), patterns),
        st.tuples(st.just("uniqueItems"), st.booleans()),
        st.tuples(st.just("$ref"), refs),
        st.tuples(st.just("$dynamicRef"), refs),
        st.tuples(
            st.just("$schema"),
            st.sampled_from([DIALECT, "http://json-schema.org/draft-04/schema#"]),
        ),
        st.tuples(
            st.just("format"), st.sampled_from(["regex", "email", "date", "uuid", "ipv4", "nope"])
        ),
        st.tuples(st.just("enum"), st.lists(json_values, max_size=3)),
        st.tuples(st.just("const"), json_values),
        st.tuples(st.sampled_from(["minimum", "maximum", "multipleOf", "maxLength"]), json_scalars),
        st.tuples(st.just("required"), st.lists(st.text(max_size=3), max_size=3)),
        st.tuples(st.just("$anchor"), st.just("anchor")),
        st.tuples(
            st.just("$id"), st.sampled_from(["http://SILENT/root/", "urn:x", "file:///tmp/x"])
        ),
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        applicator = st.one_of(
            st.tuples(
                st.just("properties"), st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
            st.tuples(st.just("patternProperties"), st.dictionaries(patterns, inner, max_size=2)),
            st.tuples(
                st.sampled_from(["items", "not", "additionalProperties", "contains", "if", "then"]),
                inner,
            ),
            st.tuples(
                st.sampled_from(["anyOf", "allOf", "oneOf", "prefixItems"]),
                st.lists(inner, min_size=1, max_size=3),
            ),
            st.tuples(st.just("$defs"), st.fixed_dictionaries({"d": inner})),
        )
        return st.lists(st.one_of(keyword, applicator), max_size=5).map(dict) | st.booleans()

    return st.recursive(st.lists(keyword, max_size=4).map(dict), extend, max_leaves=8)


@hsettings(max_examples=400, deadline=None)
@given(schema=schemas(), instance=json_values)
def test_kit_property_any_schema_and_value_give_problems_never_an_error(
    schema: Any, instance: Any
) -> None:
    """A schema gives problems or none; a schema without problems (the only kind ever stored)
    checks any value into problems, or stops at its deadline, and raises nothing else."""
    problems = jsonschemas.schema_problems(schema)
    assert all(set(p) == {"path", "message"} for p in problems)
    if problems:
        return
    validator = jsonschemas.json_validator(schema, formats=True)
    try:
        with jsonschemas.deadline_at(time.monotonic() + 1):
            found = jsonschemas.instance_problems(validator, instance)
    except jsonschemas.ValidationTimeout:
        return  # the templates layer turns this into VALIDATION_FAILED (tested above)
    assert all(len(p["message"]) <= jsonschemas.MAX_MESSAGE_CHARS for p in found)


@hsettings(max_examples=300, deadline=None)
@given(items=st.lists(json_values, max_size=6))
def test_kit_property_unique_items_agrees_with_jsonschema_equality(items: list[Any]) -> None:
    """Linear uniqueItems keeps jsonschema's equality (1 == 1.0, true != 1, key order),
    compared pairwise here as the reference."""
    items = items + [copy.deepcopy(items[0])] if items and len(items) % 2 else items
    equal = jsonschema_utils.equal
    expected = not any(equal(a, b) for i, a in enumerate(items) for b in items[i + 1 :])
    validator = jsonschemas.json_validator({"uniqueItems": True})
    assert (not jsonschemas.instance_problems(validator, items)) == expected


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(parameters=schemas(), params=json_values)
async def test_property_validate_template_answers_problems_never_an_error(
    http: httpx.AsyncClient,
    server: str,
    tenant: TenantKeys,
    silent: SilentServer,
    parameters: Any,
    params: Any,
) -> None:
    if not isinstance(parameters, dict):
        parameters = {"not": {}} if parameters is False else {}
    parameters = json.loads(json.dumps(parameters).replace("SILENT", f"127.0.0.1:{silent.port}"))
    spec = spec_with(parameters, params if isinstance(params, dict) else {"value": params})
    validation = await validate(http, server, tenant.viewer, spec)  # asserts no GraphQL error
    assert isinstance(validation["valid"], bool)
    assert validation["valid"] == (not validation["problems"])
    assert silent.connections == 0
