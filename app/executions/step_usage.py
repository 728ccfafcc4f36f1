"""What a completed step used, derived from its output: bytes written to the tenant's storage,
emails accepted by the SMTP server, HTTP requests made. Pure (the workflow calls it before it
records STEP_COMPLETED, whose payload keeps the figures under `usage`).

Recorded in the event rather than read back from the output, because the event keeps an output
only up to MAX_KEPT_OUTPUT (a large one becomes `output_truncated`), and a fan-out's output is
a list whose items may be cut too. Steps completed before this existed have no `usage`
(app/analytics reports those figures as unknown, never as zero).
"""

from __future__ import annotations

from typing import Any

# Activities that write to storage and report the bytes written as `size` in their output.
WRITES = frozenset({"files.write", "files.copy", "files.archive"})


def step_usage(activity: str, output: Any, fanned: bool) -> dict[str, int]:
    """{"bytes_written", "emails_sent", "http_calls"} for one step; a fan-out (`fanned`)
    returns one output per item, each counted. Small and bounded: three integers."""
    items = output if fanned and isinstance(output, list) else [output]
    written = emails = calls = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        if activity in WRITES and isinstance(item.get("size"), int):
            written += item["size"]
        elif activity == "email.send" and isinstance(item.get("accepted"), list):
            emails += len(item["accepted"])
        elif activity == "http.request" and "status" in item:
            calls += 1
    return {"bytes_written": written, "emails_sent": emails, "http_calls": calls}
