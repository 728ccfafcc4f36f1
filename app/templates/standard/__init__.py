"""The standard templates: PUBLIC, owned by the platform, published by `wfs dev` and `wfs seed`.

Each is a JSON spec in this folder (a template is data: the same document a tenant would send
to `createTemplate`). Their example params run as they are in `wfs dev`, which also puts the
sample files they read into each demo tenant's storage (app/templates/samples/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent


def load() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(FOLDER.glob("*.json"))]


STANDARD_TEMPLATES: list[dict[str, Any]] = load()
ORDER_SUMMARY = next(t for t in STANDARD_TEMPLATES if t["name"] == "order-summary")
