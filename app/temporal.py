"""Temporal client and the custom search attributes executions carry (tenant, template, tier).

`connect(settings)` reaches a plain dev server, a TLS or mTLS cluster, or Temporal Cloud with
an API key (the `TEMPORAL_TLS_*` and `TEMPORAL_API_KEY` settings; docs/deploy.md).

Search attributes are part of the deployment's schema: `wfs migrate` (and `wfs dev`) registers
them through the operator API (`register_search_attributes`, idempotent). Workers only check
them at start (`check_search_attributes`): Temporal Cloud refuses the operator call to a
namespace's API key, and registering from every replica raced for nothing.

Every client of the process runs on one runtime whose SDK metrics reach /metrics
(app/temporal_metrics.py) and, when tracing is on (app/tracing.py), carries Temporal's tracing
interceptor, which the workers built with the client inherit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

if TYPE_CHECKING:
    from app.settings import Settings

from app import tracing
from app.temporal_metrics import runtime

log = structlog.get_logger(__name__)

TENANT_KEY = SearchAttributeKey.for_keyword("WfsTenant")
TEMPLATE_KEY = SearchAttributeKey.for_keyword("WfsTemplate")
TIER_KEY = SearchAttributeKey.for_keyword("WfsTier")
SEARCH_ATTRIBUTES = {k.name: "Keyword" for k in (TENANT_KEY, TEMPLATE_KEY, TIER_KEY)}
RPC_TIMEOUT = timedelta(seconds=10)
# Answers of a server that will not let this client use the operator API (Temporal Cloud with
# a namespace API key, an authorizer that keeps it to admins).
_REFUSED = (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED)


def tls_config(settings: Settings) -> TLSConfig | bool:
    """The TLS part of `Client.connect`: False (plain), or a TLSConfig with the PEM files."""
    if not settings.temporal_uses_tls():
        return False

    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca_file),
        domain=settings.temporal_tls_server_name,
        client_cert=read(settings.temporal_tls_cert_file),
        client_private_key=read(settings.temporal_tls_key_file),
    )


async def connect(settings: Settings) -> Client:
    """A client for TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE with the configured TLS and key."""
    assert settings.temporal_address
    key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=key.get_secret_value() if key is not None else None,
        runtime=runtime(),
        interceptors=tracing.temporal_interceptors(),
    )


class SearchAttributeError(RuntimeError):
    """Our search attributes are missing or mistyped on the namespace, or cannot be added."""


@dataclass(frozen=True, slots=True)
class SearchAttributeState:
    """What the namespace has of SEARCH_ATTRIBUTES."""

    missing: list[str]
    mistyped: list[str]  # present with another type: only an operator can fix that


async def _state(client: Client) -> SearchAttributeState:
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace), timeout=RPC_TIMEOUT
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    have = dict(existing.custom_attributes)
    return SearchAttributeState(
        missing=sorted(name for name in SEARCH_ATTRIBUTES if name not in have),
        mistyped=sorted(n for n in SEARCH_ATTRIBUTES if n in have and have[n] != keyword),
    )


def _how_to_add(namespace: str, names: list[str]) -> str:
    cli = " ".join(f"--name {name} --type Keyword" for name in names)
    cloud = " ".join(f"--search-attribute {name}=Keyword" for name in names)
    return (
        "run `wfs migrate` with this TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE, or "
        f"`temporal operator search-attribute create --namespace {namespace} {cli}`; on "
        f"Temporal Cloud: `tcld namespace search-attributes add --namespace {namespace} {cloud}`"
        ' or the Cloud UI (docs/deploy.md, "Search attributes")'
    )


async def register_search_attributes(client: Client) -> list[str]:
    """Add the missing SEARCH_ATTRIBUTES to the client's namespace; returns those added.

    Idempotent. Raises SearchAttributeError when one exists with another type, or when the
    server refuses the operator API (then it says how to add them by hand)."""
    try:
        state = await _state(client)
        if state.mistyped:
            raise SearchAttributeError(
                f"search attributes {state.mistyped} exist on namespace {client.namespace} "
                "with another type than Keyword: rename or remove them first"
            )
        if state.missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={
                        name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in state.missing
                    },
                ),
                timeout=RPC_TIMEOUT,
            )
            log.info("temporal.search_attributes.added", names=state.missing)
        return state.missing
    except RPCError as exc:
        if exc.status not in _REFUSED:
            raise
        raise SearchAttributeError(
            f"Temporal refused to register search attributes on namespace {client.namespace} "
            f"({exc.status.name}: {exc.message}); add {sorted(SEARCH_ATTRIBUTES)} as Keyword: "
            + _how_to_add(client.namespace, sorted(SEARCH_ATTRIBUTES))
        ) from None


async def check_search_attributes(client: Client) -> None:
    """Raise SearchAttributeError naming what is missing and how to add it; a server that
    will not list them (refused) is trusted, with a warning: starts would fail loudly."""
    try:
        state = await _state(client)
    except RPCError as exc:
        if exc.status not in _REFUSED:
            raise
        log.warning(
            "temporal.search_attributes.unchecked",
            namespace=client.namespace,
            reason=exc.status.name,
            expected=sorted(SEARCH_ATTRIBUTES),
        )
        return
    if state.mistyped:
        raise SearchAttributeError(
            f"search attributes {state.mistyped} on namespace {client.namespace} are not "
            "Keyword: rename or remove them, then run `wfs migrate`"
        )
    if state.missing:
        raise SearchAttributeError(
            f"namespace {client.namespace} lacks the search attributes {state.missing} "
            "that executions carry: " + _how_to_add(client.namespace, state.missing)
        )
