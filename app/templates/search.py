"""Template search criteria and their keyset cursors (no SQL here: see the repository).

Verified (platform) templates come first in every ordering, so a tenant's look-alike never
ranks above the standard template it imitates. Then every ordering is a keyset on (sort
value, id): NAME ascending; RELEVANCE (ts_rank), POPULARITY (executions in the last 30 days)
and CREATED descending, ties broken by id in the same direction. A cursor carries the
ordering, the sort value, the id and whether that row was verified, and is checked on the way
in: a cursor from another ordering or with a value of the wrong type is rejected
rather than silently paging from the wrong place.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.errors import ValidationFailed
from app.models.template import VISIBILITIES
from app.pagination import decode_cursor, encode_cursor

ORDERS = ("RELEVANCE", "NAME", "POPULARITY", "CREATED")
MAX_SEARCH_CHARS = 200
MAX_TAGS = 20


@dataclass
class TemplateFilter:
    search: str | None = None
    tags: list[str] = field(default_factory=list)
    category: str | None = None
    visibility: str | None = None
    order: str = "NAME"

    @classmethod
    def build(
        cls,
        *,
        search: str | None,
        tags: list[str] | None,
        category: str | None,
        visibility: str | None,
        order: str | None,
    ) -> TemplateFilter:
        """Checked criteria; RELEVANCE is the default with a search, NAME without one."""
        text = (search or "").strip() or None
        if text is not None and len(text) > MAX_SEARCH_CHARS:
            raise ValidationFailed(f"search must be at most {MAX_SEARCH_CHARS} characters")
        tags = sorted({t.strip() for t in tags or [] if t.strip()})
        if len(tags) > MAX_TAGS:
            raise ValidationFailed(f"at most {MAX_TAGS} tags")
        if visibility is not None and visibility not in VISIBILITIES:
            raise ValidationFailed(f"unknown visibility {visibility!r}")
        order = order or ("RELEVANCE" if text is not None else "NAME")
        if order not in ORDERS:
            raise ValidationFailed(f"unknown order {order!r}")
        if order == "RELEVANCE" and text is None:
            raise ValidationFailed("orderBy RELEVANCE needs a search")
        return cls(text, tags, category, visibility, order)


@dataclass(frozen=True)
class SearchCursor:
    order: str
    key: Any  # str (NAME), float (RELEVANCE), int (POPULARITY), datetime (CREATED)
    id: uuid.UUID
    verified: bool = False  # a platform template (they come first)

    def encode(self) -> str:
        key = self.key.isoformat() if isinstance(self.key, datetime) else self.key
        return encode_cursor([self.order, key, str(self.id), self.verified])

    @classmethod
    def decode(cls, cursor: str | None, order: str) -> SearchCursor | None:
        values = decode_cursor(cursor)
        if values is None:
            return None
        if len(values) != 4 or values[0] != order:
            raise ValidationFailed(f"invalid cursor: not a cursor of a {order} ordering")
        if not isinstance(values[3], bool):
            raise ValidationFailed("invalid cursor")
        try:
            return cls(order, _parse_key(order, values[1]), uuid.UUID(str(values[2])), values[3])
        except (TypeError, ValueError) as exc:
            raise ValidationFailed("invalid cursor") from exc


def _parse_key(order: str, raw: Any) -> Any:
    if order == "NAME" and isinstance(raw, str):
        return raw
    if order == "CREATED" and isinstance(raw, str):
        at = datetime.fromisoformat(raw)
        if at.tzinfo is None:
            raise ValueError("naive datetime")
        return at
    if order == "POPULARITY" and isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if order == "RELEVANCE" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    raise ValueError(f"bad {order} cursor value")
