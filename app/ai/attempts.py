"""Why an AI call ended as it did: one record per candidate tried (or skipped), kept with the
usage row (ai_usage.attempts) and shown as `aiUsage { attempts { provider model kind message } }`.

A record is {provider, model, kind, message}: `kind` is one of contracts.ATTEMPT_KINDS and the
message is short and sanitised. Messages come from provider error bodies and from our output
checks, both of which may quote text a model or a server produced (and so, possibly, the
tenant's prompt echoed back); they never should carry prompt text or credentials into a
record that every viewer of the tenant can read. So: control characters go, anything that
looks like a key or bearer token is replaced, any quoted run longer than a few words is
replaced by an ellipsis (escaped quotes and apostrophes inside it do not end it), and the whole
is cut to MAX_MESSAGE_CHARS. Our own output checks (app/ai/tasks) never quote the model's
answer: they say what was wrong, not the text.
"""

from __future__ import annotations

import re
from typing import Any

from app.ai.contracts import ModelChoice

MAX_MESSAGE_CHARS = 200
MAX_ATTEMPTS = 12  # stored per usage row (candidates x 2 tries stays far below)
_QUOTED_CHARS = 40  # a quoted run longer than this is data, not an identifier
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Credentials, replaced in this order: bearer tokens, API keys of both providers (sk-...,
# sk-ant-...), then whatever follows a key-like name.
_SECRETS = (
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(
        r"(?i)\b(?:api[_-]?key|x-api-key|authorization|token|secret)[\"']?\s*[:=]\s*[\"']?"
        r"(?!\[redacted\])[A-Za-z0-9._~+/=\-]{6,}"
    ),
)
# A quoted run of at least _QUOTED_CHARS characters. Escaped quotes (\' \" as repr() and JSON
# write them) do not end it; nor, in single quotes, an apostrophe inside a word (it's, Ann's).
# A quote opens a run only where no word character precedes it (a closing quote follows a
# word: `gpt-4o` must not open a run to the end). A run that the cut (or the server) left
# unclosed goes to the end of the text.
_QUOTED = re.compile(
    rf'(?<!\w)"(?:[^"\\]|\\.){{{_QUOTED_CHARS},}}(?:"|$)'
    rf"|(?<!\w)'(?:[^'\\]|\\.|'(?=\w)){{{_QUOTED_CHARS},}}(?:'|$)"
    rf"|(?<!\w)`(?:[^`\\]|\\.){{{_QUOTED_CHARS},}}(?:`|$)",
    re.DOTALL,
)


def sanitize(message: str) -> str:
    """`message` fit to store and show: no control characters, credentials or long quotes."""
    text = _CONTROL.sub(" ", message[: MAX_MESSAGE_CHARS * 20])
    for secret in _SECRETS:
        text = secret.sub("[redacted]", text)
    text = _QUOTED.sub("'…'", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def record(choice: ModelChoice, kind: str, message: str) -> dict[str, Any]:
    """One attempt, as stored."""
    return {
        "provider": choice.provider,
        "model": choice.model,
        "kind": kind,
        "message": sanitize(message),
    }


def stored(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a usage row keeps: the first MAX_ATTEMPTS records, fields as strings."""
    return [
        {k: str(a.get(k, ""))[:MAX_MESSAGE_CHARS] for k in ("provider", "model", "kind", "message")}
        for a in attempts[:MAX_ATTEMPTS]
    ]
