"""The schema: domain query/mutation/subscription classes composed, with limits on by default."""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from app.api.ai import AiMutation, AiQuery
from app.api.analytics import AnalyticsQuery
from app.api.context import Context
from app.api.control import ControlMutation
from app.api.errors import UserError, graphql_errors, should_mask
from app.api.executions import (
    Execution,
    ExecutionMutation,
    ExecutionQuery,
    ExecutionSubscription,
    load_execution_node,
)
from app.api.feeds import FeedSubscription
from app.api.relay import Node, from_global_id
from app.api.templates import Template, TemplateMutation, TemplateQuery, load_template_node
from app.api.viewer import Tenant, ViewerQuery
from app.errors import NotFound
from app.settings import Settings


@strawberry.type
class NodeQuery:
    @strawberry.field(description="Any object by its global id.")
    async def node(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Node:
        with graphql_errors():
            principal = info.context.principal()
            type_name, pk = from_global_id(id)
            if type_name == "Execution":
                return await load_execution_node(info, pk)
            if type_name == "Template":
                return await load_template_node(info, pk)
            if type_name == "Tenant" and pk == principal.tenant_id:
                tenant = await info.context.loaders.tenants.load(pk)
                assert tenant is not None
                return Tenant.from_model(tenant)
            raise NotFound(f"no object with id {id!r}")


@strawberry.type
class Query(ViewerQuery, TemplateQuery, ExecutionQuery, AiQuery, AnalyticsQuery, NodeQuery):
    pass


@strawberry.type
class Mutation(ExecutionMutation, ControlMutation, TemplateMutation, AiMutation):
    pass


@strawberry.type
class Subscription(ExecutionSubscription, FeedSubscription):
    pass


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Execution, Template, Tenant, UserError],
        extensions=[
            # Factories, not instances: an extension instance would be shared by concurrent
            # operations (MaskErrors keeps per-operation state).
            partial(QueryDepthLimiter, max_depth=settings.graphql_max_depth),
            partial(MaxAliasesLimiter, max_alias_count=settings.graphql_max_aliases),
            partial(MaxTokensLimiter, max_token_count=settings.graphql_max_tokens),
            partial(MaskErrors, should_mask_error=should_mask),
        ],
    )
