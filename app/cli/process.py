"""What every `wfs` process does on its way out."""

from __future__ import annotations

import os
import sys


def hard_exit(code: int) -> None:
    """Flush and leave at once: temporalio's core can abort at interpreter exit in
    short-lived processes (sdk-python #300). os._exit skips atexit handlers, the tracer
    provider's flush among them, so the spans still batched are exported here first (within
    tracing.FLUSH_TIMEOUT_SECONDS; nothing to do when tracing is off)."""
    from app import tracing  # light: the OpenTelemetry SDK is imported only when tracing is on

    tracing.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
