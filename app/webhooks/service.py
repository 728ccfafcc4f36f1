"""A tenant admin's webhooks: create (the signing secret is returned once), list, update,
delete, the delivery log and redelivery. Other roles get FORBIDDEN; another tenant's webhook
or delivery is NOT_FOUND.

The secret is stored encrypted (app/webhooks/secret_box.py; the sender opens it to sign) and
no API field ever returns it after `create`; rotating it means creating a new webhook and
deleting the old one.
A webhook starts at the tenant's current notification seq: it receives what happens after it
was made. Disabled (by the admin, or by the service on 410 Gone) it receives nothing; enabled
again it starts from the current seq, so an endpoint that was away is not flooded.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, NotFound, QuotaExceeded, ValidationFailed
from app.models import Webhook, WebhookDelivery
from app.notifications.service import NotificationService
from app.pagination import Page, check_first, decode_cursor, keyset_page
from app.settings import Settings
from app.tenants.service import Principal
from app.webhooks.events import WEBHOOK_EVENTS
from app.webhooks.policy import DestinationUnresolved, check_url, resolve_destination
from app.webhooks.repository import WebhookRepository
from app.webhooks.secret_box import SecretBox

SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_events(events: Sequence[str]) -> list[str]:
    if not events:
        raise ValidationFailed("a webhook needs at least one event")
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown:
        raise ValidationFailed(
            f"unknown events: {', '.join(e[:40] for e in unknown[:5])}; events are "
            f"{', '.join(WEBHOOK_EVENTS)}"
        )
    return list(dict.fromkeys(events))


def _admin_only(principal: Principal) -> None:
    if principal.role != "admin":
        raise Forbidden("only admins manage webhooks")


def _keyset(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    values = decode_cursor(cursor, "datetime", "uuid")
    return (datetime.fromisoformat(values[0]), uuid.UUID(values[1])) if values else None


class WebhookService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.repo = WebhookRepository(session)
        self.notifications = NotificationService(session)
        self.settings = settings

    async def _checked_url(self, raw: str) -> str:
        url = check_url(raw, self.settings)
        try:
            await resolve_destination(url, self.settings)
        except DestinationUnresolved as exc:
            raise ValidationFailed(f"{exc}; try again, or check the host name") from exc
        return str(url)

    async def create(
        self, principal: Principal, url: str, events: Sequence[str]
    ) -> tuple[Webhook, str]:
        """The new webhook and its secret (returned here only)."""
        _admin_only(principal)
        events = check_events(events)
        checked = await self._checked_url(url)
        limit = self.settings.webhook_max_per_tenant
        await self.repo.lock_tenant(principal.tenant_id)
        if await self.repo.count(principal.tenant_id) >= limit:
            raise QuotaExceeded(f"a tenant may have at most {limit} webhooks")
        secret = new_secret()
        webhook = Webhook(
            id=uuid.uuid4(),
            tenant_id=principal.tenant_id,
            url=checked,
            events=events,
            secret=SecretBox(self.settings).seal(secret),
            enabled=True,
            last_seq=await self.notifications.head(principal.tenant_id),
        )
        return await self.repo.add(webhook), secret

    async def get(self, principal: Principal, webhook_id: uuid.UUID) -> Webhook:
        _admin_only(principal)
        webhook = await self.repo.get(principal.tenant_id, webhook_id)
        if webhook is None:
            raise NotFound("no such webhook")
        return webhook

    async def page(
        self, principal: Principal, first: int | None, after: str | None
    ) -> Page[Webhook]:
        _admin_only(principal)
        limit = check_first(first)
        rows = await self.repo.page(principal.tenant_id, _keyset(after), limit + 1)
        return keyset_page(rows, limit, key=lambda w: [w.created_at.isoformat(), str(w.id)])

    async def update(
        self,
        principal: Principal,
        webhook_id: uuid.UUID,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> Webhook:
        webhook = await self.get(principal, webhook_id)
        if url is not None:
            webhook.url = await self._checked_url(url)
        if events is not None:
            webhook.events = check_events(events)
        if enabled is not None and enabled != webhook.enabled:
            webhook.enabled = enabled
            webhook.disabled_reason = None if enabled else "disabled by an admin"
            if enabled:  # from now on: what happened while disabled is not sent
                webhook.last_seq = await self.notifications.head(principal.tenant_id)
        await self.repo.session.flush()
        return webhook

    async def delete(self, principal: Principal, webhook_id: uuid.UUID) -> Webhook:
        """Delete the webhook and its delivery log; deliveries in flight stop at their next
        attempt."""
        webhook = await self.get(principal, webhook_id)
        await self.repo.delete(webhook)
        return webhook

    async def deliveries(
        self, principal: Principal, webhook_id: uuid.UUID, first: int | None, after: str | None
    ) -> Page[WebhookDelivery]:
        """The webhook's deliveries, newest first."""
        webhook = await self.get(principal, webhook_id)
        limit = check_first(first)
        rows = await self.repo.deliveries(webhook.id, _keyset(after), limit + 1)
        return keyset_page(rows, limit, key=lambda d: [d.created_at.isoformat(), str(d.id)])

    async def delivery(self, principal: Principal, delivery_id: uuid.UUID) -> WebhookDelivery:
        _admin_only(principal)
        delivery = await self.repo.delivery(principal.tenant_id, delivery_id)
        if delivery is None:
            raise NotFound("no such webhook delivery")
        return delivery

    async def redeliver(self, principal: Principal, delivery_id: uuid.UUID) -> WebhookDelivery:
        """A new delivery of the same message (same webhook-id header, same body), started by
        the dispatcher's next round."""
        delivery = await self.delivery(principal, delivery_id)
        webhook = await self.get(principal, delivery.webhook_id)
        if not webhook.enabled:
            raise Conflict("the webhook is disabled: enable it first")
        return await self.repo.add_redelivery(delivery)
