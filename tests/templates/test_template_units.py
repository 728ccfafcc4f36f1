"""The pure parts of the template lifecycle: param migration, spec diffs, search criteria and
cursors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.errors import ValidationFailed
from app.templates.lifecycle import checked_spec, diff_specs, migrate_params, same_content
from app.templates.search import SearchCursor, TemplateFilter
from tests.templates.template_kit import make_spec


def test_migration_renames_then_drops_then_fills_defaults() -> None:
    migration = {
        "rename": {"rows": "records", "gone": "kept"},
        "drop": ["legacy"],
        "defaults": {"order": "asc", "records": []},
    }
    params = {"rows": [1], "legacy": True, "gone": 1, "kept": 2}
    assert migrate_params(params, migration) == {"records": [1], "kept": 2, "order": "asc"}
    assert params == {"rows": [1], "legacy": True, "gone": 1, "kept": 2}  # not mutated
    assert migrate_params(params, None) == params


def test_defaults_are_copied_not_shared() -> None:
    migration = {"defaults": {"items": []}}
    first = migrate_params({}, migration)
    first["items"].append(1)
    assert migrate_params({}, migration) == {"items": []}


def test_diff_names_steps_by_id_and_the_fields_that_changed() -> None:
    old = make_spec("a-b")
    new = make_spec("a-b", title="New title")
    new["steps"][0]["input"] = {"data": []}
    new["steps"].append({"id": "more", "activity": "data.aggregate"})
    old["steps"].append({"id": "gone", "activity": "wait.timer"})
    diff = diff_specs(old, new, 1, 2)
    assert diff.added_steps == ["more"]
    assert diff.removed_steps == ["gone"]
    assert [(c.step_id, c.fields) for c in diff.changed_steps] == [("sort", ["input"])]
    assert diff.changed_fields == ["title"]
    assert diff.unified.startswith("--- v1\n+++ v2\n")


def test_diff_notices_reordered_steps() -> None:
    old = make_spec("a-b")
    old["steps"].append({"id": "two", "activity": "data.aggregate"})
    new = make_spec("a-b")
    new["steps"].insert(0, {"id": "two", "activity": "data.aggregate"})
    assert diff_specs(old, new, 1, 2).changed_fields == ["steps (order)"]
    assert diff_specs(old, old, 1, 1).unified == ""


def test_param_migration_alone_is_not_a_change() -> None:
    spec = make_spec("a-b")
    assert same_content({**spec, "param_migration": {"drop": ["x"]}}, spec)
    assert not same_content({**spec, "title": "x"}, spec)


def test_filter_defaults_and_checks() -> None:
    assert (
        TemplateFilter.build(
            search=" x ", tags=None, category=None, visibility=None, order=None
        ).order
        == "RELEVANCE"
    )
    plain = TemplateFilter.build(
        search="  ", tags=["b", "a", "a"], category=None, visibility=None, order=None
    )
    assert (plain.search, plain.order, plain.tags) == (None, "NAME", ["a", "b"])
    with pytest.raises(ValidationFailed):
        TemplateFilter.build(
            search=None, tags=None, category=None, visibility=None, order="RELEVANCE"
        )
    with pytest.raises(ValidationFailed):
        TemplateFilter.build(
            search="x" * 201, tags=None, category=None, visibility=None, order=None
        )


@pytest.mark.parametrize(
    ("order", "key"),
    [
        ("NAME", "order-summary"),
        ("RELEVANCE", 0.0607927106320858),
        ("POPULARITY", 12),
        ("CREATED", datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)),
    ],
)
def test_cursors_round_trip_exactly(order: str, key: object) -> None:
    for verified in (False, True):
        cursor = SearchCursor(order, key, uuid.uuid4(), verified)
        assert SearchCursor.decode(cursor.encode(), order) == cursor


@pytest.mark.parametrize(
    ("order", "key"),
    [
        ("NAME", 3),
        ("POPULARITY", -1),
        ("POPULARITY", "3"),
        ("CREATED", "2026-01-01T00:00:00"),
        ("RELEVANCE", True),
        ("CREATED", "yesterday"),
    ],
)
def test_cursors_with_values_of_the_wrong_type_are_refused(order: str, key: object) -> None:
    from app.pagination import encode_cursor

    with pytest.raises(ValidationFailed):
        SearchCursor.decode(encode_cursor([order, key, str(uuid.uuid4()), False]), order)


def test_a_cursor_of_another_ordering_is_refused() -> None:
    cursor = SearchCursor("NAME", "a", uuid.uuid4()).encode()
    with pytest.raises(ValidationFailed):
        SearchCursor.decode(cursor, "CREATED")


def test_tags_must_fit_the_catalog() -> None:
    with pytest.raises(ValidationFailed) as err:
        checked_spec(make_spec(tags=["ok", "x" * 51]))
    assert [p["path"] for p in err.value.details] == ["$.tags[1]"]
