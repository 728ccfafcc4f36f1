"""`email.send`: one email over SMTP (aiosmtplib), sent at most once per idempotency key.

Input: `{to, cc?, bcc?, subject, text, html?, from?, reply_to?, headers?, idempotency_key?}`;
`to`, `cc`, `bcc` take one address or a list (`ada@example.com` or `Ada <ada@example.com>`).
`html` is sanitised with nh3 and sent as the alternative to `text`. Output: `{message_id,
accepted: [...], rejected: {address: "code reason"}, deduplicated}`.

Who may send what (a tenant is a stranger; the relay's reputation is everyone's):
- `from` is SMTP_FROM (the default) or one of the tenant's verified senders
  (app/tenants/senders.py); anything else is refused before anything is sent.
- to + cc + bcc, deduplicated, are at most EMAIL_MAX_RECIPIENTS per message. The entries are
  counted before anything else looks at them (the step's precheck, before its schema), and
  only an input within the cap is parsed: Python's header parser is pure Python (~45 us an
  address), so 64,000 recipients would hold the worker's event loop for seconds. The count
  is of distinct entries as written; the same address written two ways counts twice there
  and once in the envelope. Each of to, cc, bcc and reply_to holds at most
  MAX_ADDRESS_ITEMS entries (the schema's ceiling, whatever the cap is set to), and a
  message has at most MAX_HEADERS extra headers. The message is then parsed, sanitised and
  built on the CPU pool (app/steps/base.py run_cpu), not on the loop.
- A tenant sends at most EMAIL_DAILY_QUOTA[tier] messages per UTC day (app/steps/tenant_limits.py):
  a send is counted once per idempotency key (a retried attempt is not counted again), and one
  over the quota fails permanently, saying the quota and when it resets.

Idempotency: the key is `idempotency_key` when given (per tenant), else the execution, the step
and a hash of the message, so a retried step (or a fan-out item) finds the first run's result in
`step_idempotency` and sends nothing. The Message-ID derives from the key, so even a repeat
after a crash between sending and recording is recognisable downstream as the same message.

Errors: connection failures, timeouts and 4xx replies are transient; 5xx replies (recipients,
sender or message refused; authentication) and malformed addresses are permanent. Tenants read
step errors, so they never name the relay: its host and port are logged, not raised, and host
names and IP addresses in the relay's reply texts are masked.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import UTC, datetime
from email import policy
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib
import nh3
import structlog

from app.settings import Settings
from app.steps.base import (
    StepActivity,
    StepContext,
    StepInputError,
    StepInputRefused,
    StepTransientError,
    canonical_json,
    define,
    run_cpu,
)
from app.steps.idempotency import once
from app.steps.tenant_limits import TenantLimits, charge_email, tenant_limits
from app.tenants.senders import sender_key

log = structlog.get_logger(__name__)

SMTP_TIMEOUT_SECONDS = 30.0
MAX_REPLY_CHARS = 200
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII except ':'
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "message-id", "date", "reply-to", "sender"}
    | {"mime-version", "content-type", "content-transfer-encoding", "return-path"}
    # Identity and trace headers: a template setting them would forge who sent the message.
    | {"resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc", "resent-date"}
    | {"resent-message-id", "dkim-signature", "received", "authentication-results"}
)
_RESERVED_PREFIXES = ("arc-", "x-original-")
# What a relay's reply may say about the relay itself: IP addresses and host names (not the
# domain of an address, which follows '@'). Replies are cut to MAX_REPLY_CHARS first.
_RELAY_DETAILS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b"
    r"|(?:[0-9A-Fa-f]{0,4}:){2,}[0-9A-Fa-f.:]*"
    r"|(?<![\w@.-])(?:[A-Za-z0-9-]+\.)+[A-Za-z][A-Za-z0-9-]*"
)
_RELAY_PORT = re.compile(r"\[relay\]\]?:\d{1,5}\b")  # a masked host's port goes too
MAX_ADDRESS_ITEMS = 1000  # entries of one address field, whatever EMAIL_MAX_RECIPIENTS says
MAX_HEADERS = 100  # extra headers of one message
_RECIPIENT_FIELDS = ("to", "cc", "bcc")


def _line_breaks(value: str) -> bool:
    """Any line boundary Python's email headers refuse (\\r, \\n, \\v, \\f, \\x85, \\u2028...)."""
    return len(value.splitlines()) > 1 or "\r" in value or "\n" in value


def _address(raw: str, field: str) -> Address:
    if _line_breaks(raw):
        raise StepInputRefused(f"`{field}`: {raw!r} contains a line break")
    try:
        # Parsed as the address header it becomes (`reply_to`: Reply-To), not unstructured text.
        header = policy.default.header_factory(field.replace("_", "-"), raw)
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception as exc:  # the parser raises IndexError and friends on some garbage
        raise StepInputRefused(f"`{field}`: {raw!r} is not an email address") from exc
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise StepInputRefused(f"`{field}`: {raw!r} is not one email address")
    return addresses[0]


def _entries(value: Any) -> list[str]:
    """The strings of one address field (one or a list), as written; the schema refuses the
    rest, and this runs before the schema too."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [item for item in items if isinstance(item, str)]


def _addresses(value: str | list[str] | None, field: str) -> list[Address]:
    """The field's addresses, each distinct entry parsed once."""
    return [_address(item, field) for item in dict.fromkeys(_entries(value))]


def _check_recipient_count(input: dict[str, Any], settings: Settings) -> None:
    """Refuse more than EMAIL_MAX_RECIPIENTS distinct to/cc/bcc entries, before any is parsed:
    counting is cheap (~10-15 ms for 64,000 entries), parsing is not (~3 s)."""
    entries = (_entries(input.get(field)) for field in _RECIPIENT_FIELDS)
    count = len(dict.fromkeys(itertools.chain.from_iterable(entries)))
    if count > settings.email_max_recipients:
        raise StepInputRefused(
            f"{count} recipients (to, cc and bcc): a message goes to at most "
            f"{settings.email_max_recipients}; split the list, e.g. with for_each"
        )


def _count_recipients(input: dict[str, Any], ctx: StepContext) -> None:
    """The precheck: the cap, before the schema walks (and quotes) a huge list."""
    if isinstance(input, dict):
        _check_recipient_count(input, ctx.settings)


def _header_value(value: str, field: str) -> str:
    if _line_breaks(value):
        raise StepInputRefused(f"`{field}` must not contain line breaks")
    return value


def _build(input: dict[str, Any], sender: Address, message_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = _addresses(input["to"], "to")
    if input.get("cc"):
        message["Cc"] = _addresses(input["cc"], "cc")
    if input.get("reply_to"):
        message["Reply-To"] = _addresses(input["reply_to"], "reply_to")
    message["Subject"] = _header_value(input["subject"], "subject")
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(datetime.now(UTC))
    for name, value in (input.get("headers") or {}).items():
        lowered = name.lower()
        reserved = lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_PREFIXES)
        if not _HEADER_NAME.fullmatch(name) or reserved:
            raise StepInputRefused(f"`headers`: {name!r} cannot be set by a template")
        message[name] = _header_value(value, f"headers.{name}")
    message.set_content(input["text"])
    if input.get("html"):
        message.add_alternative(nh3.clean(input["html"]), subtype="html")
    return message


def _prepare(
    input: dict[str, Any], settings: Settings, sender: Address, message_id: str
) -> tuple[list[str], EmailMessage]:
    """The envelope's recipients and the message (on the CPU pool)."""
    return _envelope(input, settings), _build(input, sender, message_id)


def _reply(code: int, text: str, settings: Settings) -> str:
    """A relay reply as tenants may read it: cut, with the relay's own names masked."""
    text = text[:MAX_REPLY_CHARS]
    for secret in (settings.smtp_host, settings.smtp_username):
        if secret:
            text = text.replace(secret, "[relay]")
    text = _RELAY_PORT.sub("[relay]", _RELAY_DETAILS.sub("[relay]", text))
    return f"{code} {text}".strip()


def _unavailable(reason: str, exc: BaseException, settings: Settings) -> StepTransientError:
    log.warning(
        "step.smtp_unavailable",
        host=settings.smtp_host,
        port=settings.smtp_port,
        error=repr(exc),
    )
    return StepTransientError(f"mail relay unavailable ({reason}); the step will be retried")


async def _deliver(
    message: EmailMessage, sender: str, recipients: list[str], settings: Settings
) -> dict[str, Any]:
    try:
        refused, _ = await aiosmtplib.send(
            message,
            sender=sender,
            recipients=recipients,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            use_tls=settings.smtp_use_tls,
            start_tls=settings.smtp_starttls,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        replies = {r.recipient: _reply(r.code, r.message, settings) for r in exc.recipients}
        if any(400 <= r.code < 500 for r in exc.recipients):
            raise StepTransientError(f"recipients refused for now: {replies}") from exc
        raise StepInputError(f"every recipient was refused: {replies}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        log.info("step.smtp_refused", host=settings.smtp_host, code=exc.code, reply=exc.message)
        reason = f"the mail relay replied {_reply(exc.code, exc.message, settings)}"
        if 400 <= exc.code < 500:
            raise StepTransientError(reason) from exc
        raise StepInputError(reason) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        log.warning("step.smtp_not_supported", host=settings.smtp_host, error=str(exc))
        raise StepInputError("the mail relay cannot send this message") from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise _unavailable("timed out", exc, settings) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:  # connect, disconnect
        raise _unavailable("connection failed", exc, settings) from exc
    return {
        "accepted": [r for r in recipients if r not in refused],
        "rejected": {
            r: _reply(reply.code, reply.message, settings) for r, reply in refused.items()
        },
    }


def _idempotency_key(input: dict[str, Any], ctx: StepContext) -> str:
    if input.get("idempotency_key"):
        return f"email.send:{ctx.tenant_id}:key:{input['idempotency_key']}"
    content = {k: v for k, v in input.items() if k != "idempotency_key"}
    digest = hashlib.sha256(canonical_json(content).encode()).hexdigest()[:32]
    return f"email.send:{ctx.tenant_id}:{ctx.execution_id}:{ctx.step_id}:{digest}"


def _sender(input: dict[str, Any], settings: Settings, limits: TenantLimits) -> Address:
    """`from`: the default, or an address verified for the tenant; refused otherwise."""
    if not input.get("from"):
        return _address(settings.smtp_from, "from")
    sender = _address(input["from"], "from")
    key = str(sender.addr_spec).lower()
    if key != sender_key(settings.smtp_from) and key not in limits.verified_senders:
        raise StepInputRefused(
            f"`from`: {sender.addr_spec!r} is not a verified sender of this tenant; leave "
            "`from` out to send from the default address, or ask the platform operator to "
            "verify this one"
        )
    return sender


def _envelope(input: dict[str, Any], settings: Settings) -> list[str]:
    """to + cc + bcc addr-specs, deduplicated (their number was checked against
    EMAIL_MAX_RECIPIENTS before parsing, by the step's precheck: see the module docstring)."""
    return list(
        dict.fromkeys(
            a.addr_spec for field in _RECIPIENT_FIELDS for a in _addresses(input.get(field), field)
        )
    )


async def send_email(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Send the message once per idempotency key; see the module docstring."""
    limits = await tenant_limits(ctx)
    sender = _sender(input, ctx.settings, limits)
    key = _idempotency_key(input, ctx)
    message_id = f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{sender.domain}>"
    # Parsing addresses and headers, sanitising the HTML and encoding the body are pure Python:
    # ~0.1 s for a message near the step input limit, so off the worker's event loop.
    envelope, message = await run_cpu(_prepare, input, ctx.settings, sender, message_id)

    async def deliver() -> dict[str, Any]:
        # Counted before sending, under the send's own key: a retry is not counted twice.
        await charge_email(ctx, key, limits.tier)
        sent = await _deliver(message, sender.addr_spec, envelope, ctx.settings)
        return {"message_id": message_id, **sent}

    result, deduplicated = await once(ctx.sessions, key, ctx.tenant_id, deliver)
    return {**result, "deduplicated": deduplicated}


_ONE_OR_MORE = {  # one address or a list of them
    "type": ["string", "array"],
    "minLength": 3,
    "items": {"type": "string", "minLength": 3},
    "minItems": 1,
    "maxItems": MAX_ADDRESS_ITEMS,
}

ACTIVITY = define(
    "email.send",
    "send an email over SMTP (text, sanitised HTML), at most once per idempotency key",
    {
        "type": "object",
        "required": ["to", "subject", "text"],
        "additionalProperties": False,
        "properties": {
            "to": _ONE_OR_MORE,
            "cc": _ONE_OR_MORE,
            "bcc": _ONE_OR_MORE,
            "reply_to": _ONE_OR_MORE,
            "from": {"type": "string", "minLength": 3},
            "subject": {"type": "string", "maxLength": 998},
            "text": {"type": "string"},
            "html": {"type": "string"},
            "headers": {
                "type": "object",
                "maxProperties": MAX_HEADERS,
                "additionalProperties": {"type": "string"},
            },
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    send_email,
    precheck=_count_recipients,
)

ACTIVITIES: list[StepActivity] = [ACTIVITY]
