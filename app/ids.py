"""GraphQL global ids (`base64url("<Type>:<uuid>")`, unpadded), as `node(id:)`, `execution(id:)`
and `template(id:)` take them. Here, below the API layer, because notification data and webhook
payloads name objects the same way. Imports no domain."""

from __future__ import annotations

import base64
import uuid


def global_id(type_name: str, pk: uuid.UUID | str) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")
