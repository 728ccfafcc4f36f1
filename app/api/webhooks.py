"""Outbound webhooks in GraphQL (app/webhooks): `webhooks`, `webhookDeliveries`,
`createWebhook` (the signing secret is in its answer only), `updateWebhook`, `deleteWebhook`,
`redeliverWebhook`. Tenant admins only; no type here carries a webhook's secret."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    QuotaExceededError,
    ValidationError,
)
from app.api.relay import Connection, Node, from_global_id, to_global_id
from app.models import Webhook as WebhookModel
from app.models import WebhookDelivery as DeliveryModel
from app.webhooks.sender import message_id
from app.webhooks.service import WebhookService


@strawberry.enum(description="What a webhook receives; the payload's `type` is the value.")
class WebhookEvent(enum.Enum):
    EXECUTION_COMPLETED = "execution.completed"
    EXECUTION_FAILED = "execution.failed"
    EXECUTION_CANCELLED = "execution.cancelled"
    BUDGET_THRESHOLD = "budget.threshold"
    BUDGET_EXHAUSTED = "budget.exhausted"
    EVENTS_PUBLISHED = strawberry.enum_value(
        "events.published", description="A template's `events.publish` step's message."
    )
    SLA_BREACH = strawberry.enum_value(
        "sla.breach", description="A template's SLA was missed (the SLA_BREACH notification)."
    )


@strawberry.enum
class WebhookDeliveryStatus(enum.Enum):
    PENDING = strawberry.enum_value("PENDING", description="Not delivered yet; retries pending.")
    DELIVERED = strawberry.enum_value("DELIVERED", description="The endpoint answered 2xx.")
    FAILED = strawberry.enum_value(
        "FAILED",
        description="Every attempt failed, the endpoint answered 410 Gone, or the webhook was "
        "disabled meanwhile.",
    )


@strawberry.type(description="An endpoint that receives your tenant's notifications, signed.")
class Webhook(Node):
    url: str
    events: list[WebhookEvent]
    enabled: bool
    disabled_reason: str | None = strawberry.field(
        description="Why it is disabled: by an admin, or the endpoint answered 410 Gone."
    )
    created_at: datetime

    @classmethod
    def from_model(cls, m: WebhookModel) -> Webhook:
        return cls(
            id=to_global_id("Webhook", m.id),
            url=m.url,
            events=[WebhookEvent(e) for e in m.events],
            enabled=m.enabled,
            disabled_reason=m.disabled_reason,
            created_at=m.created_at,
        )


@strawberry.type(description="One notification sent to a webhook, with its attempts' outcome.")
class WebhookDelivery(Node):
    webhook_id: strawberry.ID
    seq: int = strawberry.field(description="The notification's seq in your tenant's log.")
    event: WebhookEvent
    message_id: str = strawberry.field(
        description="The `webhook-id` header: the same for every attempt and redelivery."
    )
    redelivery: bool = strawberry.field(description="Made by `redeliverWebhook`.")
    status: WebhookDeliveryStatus
    attempts: int
    status_code: int | None = strawberry.field(description="The last attempt's HTTP status.")
    error: str | None = strawberry.field(
        description="Why the last attempt failed (at most 300 characters, with the start of "
        "the response body)."
    )
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(
        description="When the next retry is due, while PENDING after a failed attempt."
    )
    delivered_at: datetime | None

    @classmethod
    def from_model(cls, m: DeliveryModel) -> WebhookDelivery:
        return cls(
            id=to_global_id("WebhookDelivery", m.id),
            webhook_id=to_global_id("Webhook", m.webhook_id),
            seq=m.seq,
            event=WebhookEvent(m.event_type),
            message_id=message_id(m),
            redelivery=m.redelivery_of is not None,
            status=WebhookDeliveryStatus(m.status),
            attempts=m.attempts,
            status_code=m.status_code,
            error=m.error,
            created_at=m.created_at,
            last_attempt_at=m.last_attempt_at,
            next_attempt_at=m.next_attempt_at,
            delivered_at=m.delivered_at,
        )


@strawberry.type
class CreatedWebhook:
    webhook: Webhook
    secret: str = strawberry.field(
        description="The signing secret (`whsec_<base64>`) to verify deliveries with. Shown "
        "only here, once."
    )


@strawberry.input
class CreateWebhookInput:
    url: str = strawberry.field(
        description="https (plain http only to hosts the operator lists), at most 2,048 "
        "characters; must not resolve to an internal address."
    )
    events: list[WebhookEvent]


@strawberry.input
class UpdateWebhookInput:
    id: strawberry.ID
    url: str | None = None
    events: list[WebhookEvent] | None = None
    enabled: bool | None = strawberry.field(
        default=None, description="true again after a 410: sends what happens from then on."
    )


CreateWebhookResult = Annotated[
    CreatedWebhook | ValidationError | ForbiddenError | QuotaExceededError,
    strawberry.union("CreateWebhookResult"),
]
WebhookResult = Annotated[
    Webhook | ValidationError | ForbiddenError | NotFoundError,
    strawberry.union("WebhookResult"),
]
RedeliverWebhookResult = Annotated[
    WebhookDelivery | ForbiddenError | NotFoundError | ConflictError,
    strawberry.union("RedeliverWebhookResult"),
]


def _service(info: strawberry.Info[Context, None], session: AsyncSession) -> WebhookService:
    return WebhookService(session, info.context.deps.settings)


async def load_webhook_node(info: strawberry.Info[Context, None], pk: uuid.UUID) -> Webhook:
    """`node(id)` for a Webhook: the caller's tenant's, for admins."""
    principal = info.context.principal()
    async with info.context.session() as s:
        return Webhook.from_model(await _service(info, s).get(principal, pk))


async def load_delivery_node(
    info: strawberry.Info[Context, None], pk: uuid.UUID
) -> WebhookDelivery:
    """`node(id)` for a WebhookDelivery: the caller's tenant's, for admins."""
    principal = info.context.principal()
    async with info.context.session() as s:
        return WebhookDelivery.from_model(await _service(info, s).delivery(principal, pk))


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Your tenant's webhooks, oldest first; admins only.")
    async def webhooks(
        self, info: strawberry.Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> Connection[Webhook]:
        principal = info.context.principal()
        async with info.context.session() as s:
            page = await _service(info, s).page(principal, first, after)
        nodes = [Webhook.from_model(w) for w in page.items]
        return Connection.build(nodes, page.cursors, page.has_next, after is not None)

    @strawberry.field(description="A webhook's deliveries, newest first; admins only.")
    async def webhook_deliveries(
        self,
        info: strawberry.Info[Context, None],
        webhook_id: strawberry.ID,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[WebhookDelivery]:
        principal = info.context.principal()
        pk = from_global_id(webhook_id, "Webhook")[1]
        async with info.context.session() as s:
            page = await _service(info, s).deliveries(principal, pk, first, after)
        nodes = [WebhookDelivery.from_model(d) for d in page.items]
        return Connection.build(nodes, page.cursors, page.has_next, after is not None)


def _events(events: list[WebhookEvent] | None) -> list[str] | None:
    return None if events is None else [e.value for e in events]


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        description="Register a webhook; its signing secret is in this answer only."
    )
    async def create_webhook(
        self, info: strawberry.Info[Context, None], input: CreateWebhookInput
    ) -> CreateWebhookResult:
        principal = info.context.principal()
        async with info.context.session() as s:
            webhook, secret = await _service(info, s).create(
                principal, input.url, _events(input.events) or []
            )
            await s.commit()
        return CreatedWebhook(webhook=Webhook.from_model(webhook), secret=secret)

    @strawberry.mutation(description="Change a webhook's URL, events or enabled flag.")
    async def update_webhook(
        self, info: strawberry.Info[Context, None], input: UpdateWebhookInput
    ) -> WebhookResult:
        principal = info.context.principal()
        pk = from_global_id(input.id, "Webhook")[1]
        async with info.context.session() as s:
            webhook = await _service(info, s).update(
                principal, pk, url=input.url, events=_events(input.events), enabled=input.enabled
            )
            await s.commit()
        return Webhook.from_model(webhook)

    @strawberry.mutation(description="Delete a webhook and its delivery log.")
    async def delete_webhook(
        self, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> WebhookResult:
        principal = info.context.principal()
        pk: uuid.UUID = from_global_id(id, "Webhook")[1]
        async with info.context.session() as s:
            webhook = await _service(info, s).delete(principal, pk)
            await s.commit()
        return Webhook.from_model(webhook)

    @strawberry.mutation(
        description="Send a delivery's message again (same webhook-id and body, signed anew), "
        "within a few seconds."
    )
    async def redeliver_webhook(
        self, info: strawberry.Info[Context, None], delivery_id: strawberry.ID
    ) -> RedeliverWebhookResult:
        principal = info.context.principal()
        pk = from_global_id(delivery_id, "WebhookDelivery")[1]
        async with info.context.session() as s:
            delivery = await _service(info, s).redeliver(principal, pk)
            await s.commit()
        return WebhookDelivery.from_model(delivery)
