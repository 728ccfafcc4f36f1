"""One delivery attempt: check the destination again, sign per Standard Webhooks, POST, and
record the outcome on the delivery row.

Request: `POST <url>` with the row's payload as compact JSON and the headers `webhook-id`
(`msg_<webhook id hex>_<seq>`: the same for every attempt and redelivery of a notification, so
receivers dedup on it), `webhook-timestamp` (this attempt's Unix time: receivers refuse
signatures older than ~5 minutes, so every attempt signs anew) and `webhook-signature`
(`v1,<base64 HMAC-SHA256>`, made by the `standardwebhooks` package). No redirects are followed
(a 3xx is a failed attempt), proxies from the environment are ignored, and the connection goes
only to the addresses checked just before (app/webhooks/policy.py).

Outcome: 2xx delivers. 410 Gone disables the webhook (the receiver says the endpoint is gone
for good; an admin can enable it again) and ends the delivery FAILED. Anything else (another
status, a timeout, a refused or unresolvable address) is a failed attempt: Temporal retries it
with exponential backoff until WEBHOOK_MAX_ATTEMPTS, and the last one marks the row FAILED.
Of the response only the status and a 200-character snippet of the body are kept.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import structlog
from standardwebhooks import Webhook as Signer

from app.db import SessionFactory
from app.models import Webhook, WebhookDelivery
from app.models.base import utcnow
from app.settings import Settings
from app.steps.http import pinned_request
from app.webhooks.policy import (
    DestinationRefused,
    DestinationUnresolved,
    check_url,
    resolve_destination,
)
from app.webhooks.repository import WebhookRepository
from app.webhooks.secret_box import SecretBox, SecretUnreadable

log = structlog.get_logger(__name__)
SNIPPET_CHARS = 200
ERROR_CHARS = 300
GONE = 410


@dataclass(frozen=True)
class Attempt:
    """What one attempt did. `retry`: it failed and a later attempt may succeed."""

    delivered: bool
    retry: bool
    status_code: int | None = None
    error: str | None = None


DONE = Attempt(delivered=False, retry=False)


def printable(text: str, limit: int) -> str:
    """`text` without control characters, cut at `limit`: safe to store and show."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned[:limit]


def message_id(delivery: WebhookDelivery) -> str:
    """The `webhook-id` header: one per (webhook, seq), shared by attempts and redeliveries."""
    return f"msg_{delivery.webhook_id.hex}_{delivery.seq}"


class WebhookSender:
    def __init__(self, sessions: SessionFactory, settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings

    async def attempt(self, delivery_id: uuid.UUID, attempt: int, final: bool) -> Attempt:
        """Make attempt number `attempt` of the delivery and record it; `final`: no attempt
        follows, so a failure ends the delivery FAILED."""
        async with self.sessions() as session:
            repo = WebhookRepository(session)
            delivery = await repo.delivery(None, delivery_id)
            webhook = None if delivery is None else await session.get(Webhook, delivery.webhook_id)
        if delivery is None or webhook is None:
            return DONE  # deleted with its webhook
        if delivery.status != "PENDING":
            return Attempt(delivered=delivery.status == "DELIVERED", retry=False)
        if not webhook.enabled:
            outcome = Attempt(delivered=False, retry=False, error="the webhook is disabled")
        else:
            outcome = await self.send(webhook, delivery)
        await self.record(delivery_id, attempt, final, outcome)
        return outcome

    async def send(self, webhook: Webhook, delivery: WebhookDelivery) -> Attempt:
        """POST the delivery to the webhook's URL; no database session is held meanwhile."""
        settings = self.settings
        try:
            url = check_url(webhook.url, settings)
            addresses = await resolve_destination(url, settings)
        except (DestinationRefused, DestinationUnresolved) as exc:
            message = exc.message if isinstance(exc, DestinationRefused) else str(exc)
            return Attempt(delivered=False, retry=True, error=printable(message, ERROR_CHARS))
        try:
            secret = SecretBox(settings).open(webhook.secret)
        except SecretUnreadable as exc:
            return Attempt(delivered=False, retry=True, error=str(exc))
        body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
        msg_id, now = message_id(delivery), utcnow()
        headers = httpx.Headers(
            {
                "content-type": "application/json",
                "user-agent": "workflow-service-webhooks",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Signer(secret).sign(msg_id, now, body),
            }
        )
        timeout = httpx.Timeout(settings.webhook_timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            return await self._post(client, url, addresses, headers, body)

    async def _post(
        self,
        client: httpx.AsyncClient,
        url: httpx.URL,
        addresses: tuple[str, ...],
        headers: httpx.Headers,
        body: bytes,
    ) -> Attempt:
        error = "no address answered"
        for address in addresses:
            request = pinned_request(client, "POST", url, address, headers, content=body)
            try:
                response = await client.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError:
                error = "could not connect"
                continue  # another checked address may answer
            except httpx.TimeoutException:
                return Attempt(delivered=False, retry=True, error="timed out")
            except httpx.HTTPError as exc:
                return Attempt(delivered=False, retry=True, error=type(exc).__name__)
            try:
                snippet = await _snippet(response)
            except httpx.HTTPError:
                snippet = ""
            finally:
                await response.aclose()
            status = response.status_code
            if 200 <= status < 300:
                return Attempt(delivered=True, retry=False, status_code=status)
            return Attempt(
                delivered=False,
                retry=status != GONE,
                status_code=status,
                error=printable(f"HTTP {status}: {snippet}".rstrip(": "), ERROR_CHARS),
            )
        return Attempt(delivered=False, retry=True, error=error)

    async def record(
        self, delivery_id: uuid.UUID, attempt: int, final: bool, outcome: Attempt
    ) -> None:
        """Write the attempt's outcome; a 410 also disables the webhook."""
        now = utcnow()
        async with self.sessions() as session:
            repo = WebhookRepository(session)
            delivery = await repo.lock_delivery(delivery_id)
            if delivery is None:
                return
            delivery.attempts = max(delivery.attempts + 1, attempt)
            delivery.status_code = outcome.status_code
            delivery.error = outcome.error
            delivery.last_attempt_at = now
            delivery.next_attempt_at = None
            if outcome.delivered:
                delivery.status, delivery.delivered_at = "DELIVERED", now
            elif final or not outcome.retry:
                delivery.status = "FAILED"
            else:
                delivery.next_attempt_at = now + timedelta(seconds=self.backoff(attempt))
            if outcome.status_code == GONE:
                webhook = await session.get(Webhook, delivery.webhook_id, with_for_update=True)
                if webhook is not None:
                    webhook.enabled = False
                    webhook.disabled_reason = "the endpoint answered 410 Gone"
            await session.commit()
        log.info(
            "webhook.attempt",
            delivery_id=str(delivery_id),
            attempt=attempt,
            status_code=outcome.status_code,
            delivered=outcome.delivered,
            error=outcome.error,
        )

    async def fail(self, delivery_id: uuid.UUID, error: str) -> None:
        """End the delivery FAILED with `error` unless it already ended (its workflow's last
        attempt raised or timed out, or the workflow closed without recording)."""
        async with self.sessions() as session:
            failed = await WebhookRepository(session).fail_pending(
                delivery_id, printable(error, ERROR_CHARS)
            )
            await session.commit()
        if failed:
            log.warning("webhook.delivery_failed", delivery_id=str(delivery_id), error=error)

    def backoff(self, attempt: int) -> float:
        """Seconds Temporal waits after attempt number `attempt` (its retry policy's formula)."""
        initial = self.settings.webhook_retry_initial_seconds
        return min(initial * 2 ** (attempt - 1), self.settings.webhook_retry_max_seconds)


async def _snippet(response: httpx.Response) -> str:
    """The start of the body, read no further than needed."""
    head = bytearray()
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= SNIPPET_CHARS * 4:
            break
    return printable(head.decode(response.encoding or "utf-8", errors="replace"), SNIPPET_CHARS)
