"""The schema: domain query/mutation/subscription classes composed, with limits on by default.

The limits are schema extensions, so they run for every operation whatever carries it: an HTTP
request or a `subscribe` message on a WebSocket (Strawberry runs both through the same
extension lifecycle; tests/security/test_sec_edge.py proves it for each limit).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any

import strawberry
from graphql import BREAK, DocumentNode, FieldNode, Visitor, visit
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from app import tracing
from app.api.admin import AdminMutation, AdminQuery, ApiKey, load_api_key_node
from app.api.ai import AiMutation, AiQuery
from app.api.analytics import AnalyticsQuery
from app.api.context import Context
from app.api.control import ControlMutation
from app.api.errors import UserError, should_mask, to_graphql_error
from app.api.executions import (
    Execution,
    ExecutionMutation,
    ExecutionQuery,
    ExecutionSubscription,
    load_execution_node,
)
from app.api.extensions import Schema
from app.api.feeds import FeedSubscription
from app.api.files import FileMutation, FileQuery
from app.api.forecasts import ForecastQuery
from app.api.inputs import RefuseUnstorableInput, UtcDateTime
from app.api.notifications import NotificationQuery, NotificationSubscription
from app.api.observe import OperationMetrics, tracing_extension
from app.api.plugins import PluginMutation, PluginQuery
from app.api.recommendations import RecommendationQuery
from app.api.relay import Node, from_global_id
from app.api.sla import SlaMutation, SlaQuery
from app.api.templates import Template, TemplateMutation, TemplateQuery, load_template_node
from app.api.viewer import Tenant, ViewerQuery
from app.api.webhooks import (
    Webhook,
    WebhookDelivery,
    WebhookMutation,
    WebhookQuery,
    load_delivery_node,
    load_webhook_node,
)
from app.errors import DomainError, NotFound
from app.settings import Settings

# An introspection operation is priced as this many requests: its answer is the whole schema
# (~110 KB of JSON, tens of ms of CPU on the event loop), and anyone may ask for it (the schema
# is public; GraphiQL asks on load, before the user has pasted a key).
INTROSPECTION_COST = 10


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="Any object by its global id; null when the id names nothing you can read."
    )
    async def node(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Node | None:
        """Nullable, as Relay's object identification expects: a client refetching a deleted
        object gets null, not an error. A malformed id is null too, as every id that names
        nothing is (from_global_id calls it NOT_FOUND), and reveals nothing either way."""
        principal = info.context.principal()
        try:
            type_name, pk = from_global_id(id)
            if type_name == "Execution":
                return await load_execution_node(info, pk)
            if type_name == "Template":
                return await load_template_node(info, pk)
            if type_name == "ApiKey":  # a non-admin's FORBIDDEN stays an error
                return await load_api_key_node(info, pk)
            if type_name == "Webhook":  # admins only, as ApiKey
                return await load_webhook_node(info, pk)
            if type_name == "WebhookDelivery":
                return await load_delivery_node(info, pk)
        except NotFound:
            return None
        if type_name == "Tenant" and pk == principal.tenant_id:
            tenant = await info.context.loaders.tenants.load(pk)
            assert tenant is not None
            return Tenant.from_model(tenant)
        return None


@strawberry.type
class Query(
    ViewerQuery,
    TemplateQuery,
    ExecutionQuery,
    AiQuery,
    AnalyticsQuery,
    RecommendationQuery,
    ForecastQuery,
    NodeQuery,
    AdminQuery,
    FileQuery,
    NotificationQuery,
    WebhookQuery,
    SlaQuery,
    PluginQuery,
):
    pass


@strawberry.type
class Mutation(
    ExecutionMutation,
    ControlMutation,
    TemplateMutation,
    AiMutation,
    AdminMutation,
    FileMutation,
    WebhookMutation,
    SlaMutation,
    PluginMutation,
):
    pass


@strawberry.type
class Subscription(ExecutionSubscription, FeedSubscription, NotificationSubscription):
    pass


class _IntrospectionFinder(Visitor):
    found = False

    def enter_field(self, node: FieldNode, *_: object) -> object:
        if node.name.value in ("__schema", "__type"):
            self.found = True
            return BREAK
        return None


def is_introspection(document: DocumentNode) -> bool:
    finder = _IntrospectionFinder()
    visit(document, finder)
    return finder.found


class OperationBudget(SchemaExtension):
    """Every operation is counted before it is parsed, against its caller's budget
    (Context.admit): here for HTTP, in the socket's message loop for `subscribe` messages
    (GuardedTransportWSHandler); introspection costs INTROSPECTION_COST here for both. A
    refused operation ends with one RATE_LIMITED error (HTTP 429; on a socket an `error`
    message for that operation id, the socket stays open) and runs nothing."""

    refusal: DomainError | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if not context.admitted_per_message:
            self.refusal = await context.admit()
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        # Pre-existing errors make Strawberry skip validation and answer with them.
        execution = self.execution_context
        document = execution.graphql_document
        if self.refusal is None and document is not None and is_introspection(document):
            self.refusal = await execution.context.admit(INTROSPECTION_COST - 1)
        if self.refusal is not None:
            execution.pre_execution_errors = [to_graphql_error(self.refusal)]
        yield


# Distinct operation documents whose validation result is kept: frontends send the same few
# operations again and again, and validating one took ~8% of a startExecution's CPU.
# Bounded, so a caller sending ever new operations only cycles the cache.
OPERATION_CACHE_SIZE = 512


def limit_rules(settings: Settings) -> list[type]:
    """The depth and alias limits as validation rules, built once per schema: Strawberry's
    limiter extensions define a new rule class per operation, which no validation cache could
    ever hit."""
    return [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # Outermost, so they see every refusal below and the errors as MaskErrors left them.
    observers: list[Any] = [OperationMetrics]
    if tracing.enabled():
        observers.append(tracing_extension())
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Execution, Template, Tenant, UserError, ApiKey, Webhook, WebhookDelivery],
        scalar_overrides={datetime: UtcDateTime},
        extensions=[
            # Factories, not instances: an extension instance would be shared by concurrent
            # operations (MaskErrors keeps per-operation state).
            *observers,
            # Before OperationBudget: a refusal it sets at validation overrides the cached
            # validation result (the last extension to set the errors wins).
            partial(ValidationCache, maxsize=OPERATION_CACHE_SIZE),
            OperationBudget,
            RefuseUnstorableInput,
            partial(AddValidationRules, validation_rules=limit_rules(settings)),
            # No ParserCache: its hook raises the token limit's syntax error where Strawberry
            # does not turn it into a 4400 close on sockets (the client waits forever).
            partial(MaxTokensLimiter, max_token_count=settings.graphql_max_tokens),
            partial(MaskErrors, should_mask_error=should_mask),
        ],
    )
