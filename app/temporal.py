"""Temporal client and the custom search attributes executions carry (tenant, template, tier).

Every client of the process runs on one runtime whose SDK metrics reach /metrics
(app/temporal_metrics.py) and, when tracing is on (app/tracing.py), carries Temporal's tracing
interceptor, which the workers built with the client inherit.
"""

from __future__ import annotations

import structlog
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from app import tracing
from app.temporal_metrics import runtime

log = structlog.get_logger(__name__)

TENANT_KEY = SearchAttributeKey.for_keyword("WfsTenant")
TEMPLATE_KEY = SearchAttributeKey.for_keyword("WfsTemplate")
TIER_KEY = SearchAttributeKey.for_keyword("WfsTier")
SEARCH_ATTRIBUTES = {k.name: "Keyword" for k in (TENANT_KEY, TEMPLATE_KEY, TIER_KEY)}


async def connect(address: str, namespace: str) -> Client:
    return await Client.connect(
        address,
        namespace=namespace,
        runtime=runtime(),
        interceptors=tracing.temporal_interceptors(),
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register our search attributes on the namespace if they are missing (idempotent)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for name in SEARCH_ATTRIBUTES
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
        log.info("temporal.search_attributes.added", names=sorted(missing))
