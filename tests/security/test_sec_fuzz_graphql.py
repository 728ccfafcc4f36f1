"""GraphQL-level fuzzing: every query, mutation and subscription of the schema, with random
arguments drawn from their declared types (plus hostile shapes: global ids of other types,
forged cursors, expressions, deep JSON), sent by admin and viewer keys of a fresh tenant.

The property: the service never answers with an unexpected error (HTTP 500 or the masked
"Unexpected error."), whatever arrives. Expected failures are typed (union members or coded
GraphQL errors). The documents are built from the schema itself, so a new field is fuzzed
without touching this file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLUnionType,
    get_named_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.schema import build_schema
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, Subscription

MASKED = "Unexpected error."
T = TypeVar("T")
SCHEMA = build_schema()._schema
TYPE_NAMES = ["Execution", "Template", "Tenant", "TemplateVersion", "Nope", ""]

# Strings a hostile tenant would try, mixed into every String and ID.
NASTY = [
    "",
    " ",
    "\x00",
    "\u2028",
    "a" * 5000,
    "../../../../etc/passwd",
    "file:///etc/passwd",
    "{{ 'a' * 200000000 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "' OR 1=1 --",
    "%s%s%s%n",
    "order-summary",
    "user-onboarding",
    "http://169.254.169.254/latest/meta-data/",
    "NaN",
    "-1",
    "1e309",
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def global_ids() -> st.SearchStrategy[str]:
    """Well-formed ids of any type, ids of random uuids, and junk that only looks like one."""
    forged = st.builds(
        lambda t, u, pad: _b64(f"{t}:{u}".encode()).rstrip("=" if pad else ""),
        st.sampled_from(TYPE_NAMES),
        st.uuids().map(str) | st.text(max_size=40),
        st.booleans(),
    )
    return forged | st.binary(max_size=60).map(_b64) | st.sampled_from(NASTY) | st.text(max_size=60)


def cursors() -> st.SearchStrategy[str]:
    values = st.lists(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=30)
        | st.uuids().map(str)
        | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
        max_size=4,
    )
    as_json = values.map(lambda v: _b64(json.dumps(v).encode()))
    other = st.recursive(st.integers() | st.text(max_size=10), lambda c: st.lists(c, max_size=3))
    return as_json | other.map(lambda v: _b64(json.dumps(v).encode())) | global_ids()


KEYS = ["$ref", "type", "steps", "activity", "for_each", "input", "parameters"]


def json_values(depth: int = 4) -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
        | st.sampled_from(NASTY)
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.text(max_size=12) | st.sampled_from(["$ref", "type"]), inner, max_size=4
            )
        ),
        max_leaves=20,
    )


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value] if depth % 2 else {"a": value}
    return value


def deep_json() -> st.SearchStrategy[Any]:
    """Nesting far beyond any limit (json.dumps in the client manages about 900 levels)."""
    return st.integers(33, 800).map(nested)


def scalar_values(name: str, arg_name: str) -> st.SearchStrategy[Any]:
    text = st.text(max_size=80) | st.sampled_from(NASTY)
    if name == "ID":
        return global_ids()
    if name == "String":
        return cursors() if arg_name in ("after", "before") else text
    if name == "Int":
        return st.integers(-(2**31), 2**31 - 1) | st.integers(-(2**60), 2**60)
    if name == "Float":
        return st.floats(allow_nan=False, allow_infinity=False)
    if name == "Boolean":
        return st.booleans()
    if name == "Decimal":
        return st.decimals(allow_nan=False, allow_infinity=False).map(str) | text
    if name == "DateTime":
        aware = st.datetimes().map(lambda d: d.isoformat() + "Z")
        return aware | st.datetimes().map(lambda d: d.isoformat()) | text  # naive too
    if name == "JSON":
        return json_values() | deep_json()
    return json_values()


def values_for(type_: GraphQLInputType, arg_name: str, depth: int = 0) -> st.SearchStrategy[Any]:
    if isinstance(type_, GraphQLNonNull):
        return values_for(type_.of_type, arg_name, depth)
    nullable = st.none()
    if isinstance(type_, GraphQLList):
        inner = values_for(type_.of_type, arg_name, depth + 1)
        return nullable | st.lists(inner, max_size=4)
    if isinstance(type_, GraphQLEnumType):
        return nullable | st.sampled_from(list(type_.values)) | st.text(max_size=10)
    if isinstance(type_, GraphQLScalarType):
        return nullable | scalar_values(type_.name, arg_name)
    assert isinstance(type_, GraphQLInputObjectType)
    if depth > 3:
        return nullable
    required = {
        n: values_for(f.type, n, depth + 1)
        for n, f in type_.fields.items()
        if isinstance(f.type, GraphQLNonNull)
    }
    optional = {
        n: values_for(f.type, n, depth + 1)
        for n, f in type_.fields.items()
        if not isinstance(f.type, GraphQLNonNull)
    }
    return nullable | st.fixed_dictionaries(required, optional=optional)


def selection(type_: Any, depth: int = 0) -> str:
    """A selection set reaching scalars (and resolvers) up to a small depth."""
    named = get_named_type(type_)
    if isinstance(named, GraphQLScalarType | GraphQLEnumType):
        return ""
    if isinstance(named, GraphQLUnionType):
        parts = ["__typename"]
        for member in named.types:
            inner = selection(member, depth + 1)
            if inner:
                parts.append(f"... on {member.name} {inner}")
        return "{ " + " ".join(parts) + " }"
    fields: dict[str, GraphQLField] = named.fields  # object or interface
    parts = ["__typename"]
    if depth < 3:
        for name, field in fields.items():
            if any(isinstance(a.type, GraphQLNonNull) for a in field.args.values()):
                continue
            inner = selection(field.type, depth + 1)
            leaf = isinstance(get_named_type(field.type), GraphQLScalarType | GraphQLEnumType)
            if leaf:
                parts.append(name)
            elif inner and depth < 2:
                parts.append(f"{name} {inner}")
    if isinstance(named, GraphQLInterfaceType | GraphQLObjectType):
        return "{ " + " ".join(parts) + " }"
    return ""


def operation(kind: str, name: str, field: GraphQLField) -> str:
    declared = ", ".join(f"${a}: {arg.type}" for a, arg in field.args.items())
    passed = ", ".join(f"{a}: ${a}" for a in field.args)
    head = f"{kind} Fuzz({declared})" if declared else f"{kind} Fuzz"
    call = f"{name}({passed})" if passed else name
    return f"{head} {{ {call} {selection(field.type)} }}"


def arguments(field: GraphQLField) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({a: values_for(arg.type, a) for a, arg in field.args.items()})


QUERIES = sorted(SCHEMA.query_type.fields.items())  # type: ignore[union-attr]
MUTATIONS = sorted(SCHEMA.mutation_type.fields.items())  # type: ignore[union-attr]
OPERATIONS = QUERIES + MUTATIONS
SUBSCRIPTIONS = sorted(SCHEMA.subscription_type.fields.items())  # type: ignore[union-attr]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples in CI and here; a failure reproduces
    suppress_health_check=list(HealthCheck),
    database=None,
)


def on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Hypothesis drives a sync test in a thread; each example runs on the server's loop."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(120)


def unexpected(status: int, body: dict[str, Any]) -> list[str]:
    if status >= 500:
        return [f"HTTP {status}"]
    return [e["message"] for e in body.get("errors") or [] if e.get("message") == MASKED]


@pytest.fixture
async def fuzz_tenant(sessions) -> TenantKeys:  # type: ignore[no-untyped-def]
    return await make_tenant(sessions, "premium")


async def _post(server: str, key: str, document: str, variables: dict[str, Any]) -> list[str]:
    async with httpx.AsyncClient(base_url=server, timeout=60) as http:
        resp = await http.post(
            "/graphql",
            json={"query": document, "variables": variables},
            headers={"Authorization": f"Bearer {key}"},
        )
    if resp.status_code == 429:
        return []
    try:
        body = resp.json()
    except ValueError:
        return [f"HTTP {resp.status_code}: not JSON: {resp.text[:200]}"]
    return unexpected(resp.status_code, body)


@pytest.mark.parametrize(
    ("name", "field"), QUERIES + MUTATIONS, ids=[n for n, _ in QUERIES + MUTATIONS]
)
async def test_no_operation_answers_an_unexpected_error(
    server: str, fuzz_tenant: TenantKeys, name: str, field: GraphQLField
) -> None:
    kind = "query" if name in SCHEMA.query_type.fields else "mutation"  # type: ignore[union-attr]
    document = operation(kind, name, field)
    failures: list[tuple[dict[str, Any], list[str]]] = []
    loop = asyncio.get_running_loop()

    @FUZZ
    @given(variables=arguments(field), admin=st.booleans())
    def check(variables: dict[str, Any], admin: bool) -> None:
        key = fuzz_tenant.admin if admin else fuzz_tenant.viewer
        found = on_loop(loop, _post(server, key, document, variables))
        if found:
            failures.append((variables, found))

    await asyncio.to_thread(check)
    assert not failures, f"{document}\n{failures[:3]}"


@pytest.mark.parametrize(("name", "field"), SUBSCRIPTIONS, ids=[n for n, _ in SUBSCRIPTIONS])
async def test_no_subscription_answers_an_unexpected_error(
    server: str, fuzz_tenant: TenantKeys, name: str, field: GraphQLField
) -> None:
    document = operation("subscription", name, field)
    ws_url = server.replace("http", "ws", 1) + "/graphql"
    failures: list[tuple[dict[str, Any], str]] = []

    loop = asyncio.get_running_loop()

    @settings(FUZZ, max_examples=10)
    @given(variables=arguments(field))
    def check(variables: dict[str, Any]) -> None:
        on_loop(loop, one(variables))

    async def one(variables: dict[str, Any]) -> None:
        sub = Subscription(ws_url, fuzz_tenant.viewer)
        await sub.connect()
        try:
            await sub.start(document, variables)
            try:
                msg = await sub.next(timeout=3)
            except TimeoutError:
                return  # a live subscription that has nothing to say yet
            errors = msg.get("payload") if msg["type"] == "error" else None
            if msg["type"] == "next":
                errors = msg["payload"].get("errors")
            for e in errors or []:
                if e.get("message") == MASKED:
                    failures.append((variables, json.dumps(e)[:300]))
        finally:
            await sub.close()

    await asyncio.to_thread(check)
    assert not failures, f"{document}\n{failures[:3]}"


async def test_global_ids_of_another_tenant_are_null(
    server: str, fuzz_tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    """`node` reads an id that names another tenant's object as null, like one that names
    nothing or is no id at all (Relay's nullable `node`), while the caller's own id resolves."""

    theirs = GraphQLClient(server, other_tenant.admin)
    tenant_id = (await theirs.data("{ viewer { tenant { id } } }"))["viewer"]["tenant"]["id"]
    mine = GraphQLClient(server, fuzz_tenant.viewer)
    own_id = (await mine.data("{ viewer { tenant { id } } }"))["viewer"]["tenant"]["id"]
    query = "query($id: ID!) { node(id: $id) { id } }"
    assert await mine.data(query, {"id": own_id}) == {"node": {"id": own_id}}
    for forged in (
        tenant_id,
        _b64(f"Execution:{uuid.uuid4()}".encode()).rstrip("="),
        _b64(f"Template:{uuid.uuid4()}".encode()).rstrip("="),
        "not-a-global-id",
    ):
        assert await mine.raw(query, {"id": forged}) == {"data": {"node": None}}, forged


async def test_request_nested_beyond_python_recursion_is_refused(
    server: str, fuzz_tenant: TenantKeys
) -> None:
    """100,000 levels of nesting in the variables: a parser error, never a 500 or a hang."""
    depth = 100_000
    body = (
        '{"query": "query($s: JSON!) { validateTemplate(spec: $s) { valid } }", '
        '"variables": {"s": ' + "[" * depth + "]" * depth + "}}"
    )
    resp = await GraphQLClient(server, fuzz_tenant.viewer).post_body(body)
    assert resp.status_code in (400, 413), resp.text[:300]
