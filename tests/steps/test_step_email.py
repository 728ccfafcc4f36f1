"""email.send against a real aiosmtpd server; idempotency records in real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from app.db import SessionFactory
from app.settings import Settings
from app.steps import StepInputError, StepInputRefused, StepTransientError
from app.steps.idempotency import StepIdempotency
from app.tenants.service import TenantService
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step
from tests.support import free_port


class Mailbox:
    """aiosmtpd handler: keeps what it receives; refuses `refuse*` (550) and `later*` (451)."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("later"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        parsed = message_from_bytes(envelope.original_content or b"", policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def smtp_settings(step_settings: Settings, mailbox: tuple[Mailbox, int]) -> Settings:
    return step_settings.model_copy(
        update={"smtp_port": mailbox[1], "smtp_from": "Workflows <noreply@wfs.test>"}
    )


async def new_tenant(sessions: SessionFactory) -> str:
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(f"mail-{uuid.uuid4().hex[:8]}", "pro")
        await session.commit()
    return str(tenant.id)


MESSAGE = {
    "to": ["Ada <ada@example.com>", "bob@example.com"],
    "cc": "carol@example.com",
    "bcc": ["dave@example.com"],
    "subject": "Your order",
    "text": "Thanks!",
    "html": '<p onclick="x()">Thanks!</p><script>alert(1)</script>',
    "headers": {"X-Campaign": "spring"},
}


async def test_sends_once_and_a_rerun_is_deduplicated(
    make_ctx: MakeContext,
    smtp_settings: Settings,
    mailbox: tuple[Mailbox, int],
    step_sessions: SessionFactory,
) -> None:
    box = mailbox[0]
    ctx = make_ctx(await new_tenant(step_sessions), settings=smtp_settings, sessions=step_sessions)
    first = await run_step("email.send", MESSAGE, ctx)
    assert first["deduplicated"] is False
    assert first["accepted"] == [
        "ada@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert first["rejected"] == {}
    assert first["message_id"].endswith("@wfs.test>")
    second = await run_step("email.send", MESSAGE, ctx)
    assert second == {**first, "deduplicated": True}
    assert len(box.received) == 1
    recipients, message = box.received[0]
    assert recipients == first["accepted"]
    assert message["Message-ID"] == first["message_id"]
    assert message["From"] == "Workflows <noreply@wfs.test>"
    assert message["To"] == "Ada <ada@example.com>, bob@example.com"
    assert message["Cc"] == "carol@example.com" and message["Bcc"] is None
    assert message["X-Campaign"] == "spring"
    html = message.get_body(("html",))
    assert html is not None and "script" not in html.get_content()
    assert "onclick" not in html.get_content() and "<p>Thanks!</p>" in html.get_content()
    text = message.get_body(("plain",))
    assert text is not None and text.get_content().strip() == "Thanks!"
    async with step_sessions() as session:
        records = (
            await session.scalars(
                select(StepIdempotency).where(StepIdempotency.tenant_id == uuid.UUID(ctx.tenant_id))
            )
        ).all()
    assert [r.result for r in records] == [{k: v for k, v in first.items() if k != "deduplicated"}]
    assert records[0].key.startswith(f"email.send:{ctx.tenant_id}:exec-1:step-1:")
    another_step = make_ctx(
        ctx.tenant_id, settings=smtp_settings, sessions=step_sessions, step_id="s2"
    )
    assert (await run_step("email.send", MESSAGE, another_step))["deduplicated"] is False
    assert len(box.received) == 2


async def test_idempotency_key_is_per_tenant(
    make_ctx: MakeContext,
    smtp_settings: Settings,
    mailbox: tuple[Mailbox, int],
    step_sessions: SessionFactory,
) -> None:
    message = {"to": "ada@example.com", "subject": "Hi", "text": "x", "idempotency_key": "k-1"}
    tenant_a, tenant_b = await new_tenant(step_sessions), await new_tenant(step_sessions)
    a1 = make_ctx(tenant_a, settings=smtp_settings, sessions=step_sessions, execution_id="e1")
    a2 = make_ctx(tenant_a, settings=smtp_settings, sessions=step_sessions, execution_id="e2")
    b1 = make_ctx(tenant_b, settings=smtp_settings, sessions=step_sessions, execution_id="e1")
    assert (await run_step("email.send", message, a1))["deduplicated"] is False
    assert (await run_step("email.send", message, a2))["deduplicated"] is True  # same key
    assert (await run_step("email.send", message, b1))["deduplicated"] is False  # other tenant
    assert len(mailbox[0].received) == 2


async def test_some_recipients_refused_are_reported(
    make_ctx: MakeContext, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    out = await run_step(
        "email.send",
        {"to": ["ada@example.com", "refuse@example.com"], "subject": "s", "text": "t"},
        make_ctx(settings=smtp_settings),
    )
    assert out["accepted"] == ["ada@example.com"]
    assert out["rejected"] == {"refuse@example.com": "550 5.1.1 no such mailbox"}
    assert mailbox[0].received[0][0] == ["ada@example.com"]


@pytest.mark.parametrize(
    ("to", "error", "match"),
    [
        (["refuse@example.com"], StepInputError, "every recipient was refused.*550"),
        (["later@example.com"], StepTransientError, "refused for now.*451"),
        (["not-an-address"], StepInputError, "is not one email address"),
        (["a@example.com, b@example.com"], StepInputError, "is not one email address"),
        (["a@b@c"], StepInputError, "is not one email address"),
    ],
)
async def test_bad_recipients(
    make_ctx: MakeContext,
    smtp_settings: Settings,
    mailbox: tuple[Mailbox, int],
    to: list[str],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        await run_step(
            "email.send", {"to": to, "subject": "s", "text": "t"}, make_ctx(settings=smtp_settings)
        )
    assert mailbox[0].received == []


async def test_header_injection_is_refused(
    make_ctx: MakeContext, smtp_settings: Settings, mailbox: tuple[Mailbox, int]
) -> None:
    ctx = make_ctx(settings=smtp_settings)
    base = {"to": "ada@example.com", "text": "t"}
    with pytest.raises(StepInputError, match="line break"):
        await run_step("email.send", {**base, "subject": "hi\r\nBcc: eve@example.com"}, ctx)
    with pytest.raises(StepInputError, match="cannot be set by a template"):
        await run_step("email.send", {**base, "subject": "s", "headers": {"Bcc": "e@x.y"}}, ctx)
    # Every line boundary Python's email headers refuse is refused up front (a model may
    # write one), as StepInputRefused: nothing was sent, so the step may run on other input.
    for odd in ("\u2028", "\x85", "\x0b", "\x0c", "\x1e"):
        with pytest.raises(StepInputRefused, match="line break"):
            await run_step("email.send", {**base, "subject": f"one{odd}two"}, ctx)
    assert mailbox[0].received == []


async def test_server_down_is_transient(make_ctx: MakeContext, step_settings: Settings) -> None:
    settings = step_settings.model_copy(update={"smtp_port": free_port()})
    with pytest.raises(StepTransientError, match="unavailable"):
        await run_step(
            "email.send",
            {"to": "ada@example.com", "subject": "s", "text": "t"},
            make_ctx(settings=settings),
        )
