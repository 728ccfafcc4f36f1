"""Keyset pagination kit: opaque cursors and pages. Imports no domain."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from app.errors import ValidationFailed

T = TypeVar("T")
MAX_PAGE = 100


@dataclass
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool


def keyset_page(rows: list[T], limit: int, key: Callable[[T], list[Any]]) -> Page[T]:
    """The page of `rows`, fetched with `limit + 1` so that the extra row says a next page
    exists; each item's cursor encodes `key(item)`, its position in the keyset order."""
    items = rows[:limit]
    return Page(items, [encode_cursor(key(item)) for item in items], has_next=len(rows) > limit)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def decode_cursor(cursor: str | None, *kinds: str) -> list[Any] | None:
    """The values of a cursor this service made, or VALIDATION_FAILED for anything else.

    A cursor arrives from the client, so it is hostile input like any other: with `kinds`
    ("datetime", "uuid", "int") it must hold exactly that many values of those kinds, checked
    here so that no forged value reaches SQL.
    """
    if cursor is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError, RecursionError) as exc:
        raise ValidationFailed("invalid cursor") from exc
    if not isinstance(values, list) or (kinds and len(values) != len(kinds)):
        raise ValidationFailed("invalid cursor")
    for value, kind in zip(values, kinds, strict=False):
        if not _is_kind(value, kind):
            raise ValidationFailed("invalid cursor")
    return values


def _is_kind(value: Any, kind: str) -> bool:
    try:
        if kind == "datetime":
            return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
        if kind == "uuid":
            return isinstance(value, str) and bool(uuid.UUID(value))
    except ValueError:
        return False
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    raise ValueError(f"unknown cursor value kind {kind!r}")


def check_first(first: int | None, default: int = 20) -> int:
    if first is None:
        return default
    if first < 0 or first > MAX_PAGE:
        raise ValidationFailed(f"`first` must be between 0 and {MAX_PAGE}")
    return first
