"""Relay conventions: the Node interface, global ids and cursor connections."""

from __future__ import annotations

import base64
import uuid
from typing import Generic, TypeVar

import strawberry

from app.errors import NotFound
from app.ids import global_id

T = TypeVar("T")


@strawberry.interface(description="An object with a global id.")
class Node:
    id: strawberry.ID


def to_global_id(type_name: str, pk: uuid.UUID) -> strawberry.ID:
    return strawberry.ID(global_id(type_name, pk))


def from_global_id(global_id: str, expected: str | None = None) -> tuple[str, uuid.UUID]:
    """Decode a global id; a malformed or wrong-type id is NOT_FOUND (it names nothing)."""
    shown = global_id if len(global_id) <= 100 else global_id[:100] + "…"  # echoed in errors
    try:
        if len(global_id) > 200:  # ours are 60-70 characters
            raise ValueError("too long")
        padded = global_id + "=" * (-len(global_id) % 4)
        type_name, _, raw = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        pk = uuid.UUID(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotFound(f"no object with id {shown!r}") from exc
    if expected is not None and type_name != expected:
        raise NotFound(f"no {expected} with id {shown!r}")
    return type_name, pk


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @classmethod
    def build(
        cls, nodes: list[T], cursors: list[str], has_next: bool, has_previous: bool
    ) -> Connection[T]:
        return cls(
            edges=[Edge(cursor=c, node=n) for n, c in zip(nodes, cursors, strict=True)],
            page_info=PageInfo(
                has_next_page=has_next,
                has_previous_page=has_previous,
                start_cursor=cursors[0] if cursors else None,
                end_cursor=cursors[-1] if cursors else None,
            ),
        )
