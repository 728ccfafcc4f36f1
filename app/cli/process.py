"""What every `wfs` process does on its way out."""

from __future__ import annotations

import os
import sys


def hard_exit(code: int) -> None:
    """Flush and leave at once: temporalio's core can abort at interpreter exit in
    short-lived processes (sdk-python #300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
