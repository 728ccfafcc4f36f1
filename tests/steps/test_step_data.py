"""data.* activities through the registry: parse, map, filter, diff, transform, aggregate."""

from __future__ import annotations

from typing import Any

import pytest

from app.steps import StepInputError
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step

ROWS = [
    {"id": 1, "name": "Ada", "tags": ["vip"], "address": {"city": "London"}, "spend": 120.5},
    {"id": 2, "name": "Bob", "tags": [], "address": {"city": "Paris"}, "spend": 40},
    {"id": 3, "name": "Cy", "tags": ["new"], "address": None, "spend": None},
]


async def test_parse_csv_rows_and_json(make_ctx: MakeContext) -> None:
    text = '\ufeffsku,qty,note\nA-1,2,"with, comma"\n\nB-2,1,""\n'
    rows = await run_step("data.parse", {"text": text, "format": "csv"}, make_ctx())
    assert rows == [
        {"sku": "A-1", "qty": "2", "note": "with, comma"},
        {"sku": "B-2", "qty": "1", "note": ""},
    ]
    semi = await run_step(
        "data.parse", {"text": "a;b\n1;2", "format": "csv", "delimiter": ";"}, make_ctx()
    )
    assert semi == [{"a": "1", "b": "2"}]
    assert await run_step("data.parse", {"text": "", "format": "csv"}, make_ctx()) == []
    value = await run_step("data.parse", {"text": '{"a": [1, 2.5]}', "format": "json"}, make_ctx())
    assert value == {"a": [1, 2.5]}


@pytest.mark.parametrize(
    ("text", "fmt", "match"),
    [
        ("a,b\n1,2,3\n", "csv", "line 2 has 3 cells, the header has 2"),
        ("a,a\n1,2\n", "csv", "repeats a column name"),
        ("{nope", "json", "not valid JSON"),
    ],
)
async def test_parse_refuses_malformed_text(
    make_ctx: MakeContext, text: str, fmt: str, match: str
) -> None:
    with pytest.raises(StepInputError, match=match):
        await run_step("data.parse", {"text": text, "format": fmt}, make_ctx())


async def test_map_builds_objects_from_dotted_paths(make_ctx: MakeContext) -> None:
    out = await run_step(
        "data.map", {"data": ROWS, "fields": {"who": "name", "city": "address.city"}}, make_ctx()
    )
    assert out == [
        {"who": "Ada", "city": "London"},
        {"who": "Bob", "city": "Paris"},
        {"who": "Cy", "city": None},
    ]


@pytest.mark.parametrize(
    ("where", "ids"),
    [
        ({"name": "Bob"}, [2]),
        ({"address.city": "London", "id": 1}, [1]),
        ([{"field": "id", "op": "ne", "value": 2}], [1, 3]),
        ([{"field": "spend", "op": "gt", "value": 40}], [1]),
        ([{"field": "spend", "op": "gte", "value": 40}], [1, 2]),
        ([{"field": "spend", "op": "lt", "value": 100}], [2]),  # null never compares
        ([{"field": "spend", "op": "lte", "value": "x"}], []),  # a string never orders a number
        ([{"field": "name", "op": "in", "value": ["Ada", "Cy"]}], [1, 3]),
        ([{"field": "tags", "op": "contains", "value": "vip"}], [1]),
        ([{"field": "name", "op": "contains", "value": "o"}], [2]),
        (
            [
                {"field": "spend", "op": "gte", "value": 10},
                {"field": "address.city", "op": "eq", "value": "Paris"},
            ],
            [2],
        ),
    ],
)
async def test_filter_conditions(make_ctx: MakeContext, where: Any, ids: list[int]) -> None:
    out = await run_step("data.filter", {"data": ROWS, "where": where}, make_ctx())
    assert [r["id"] for r in out] == ids


async def test_filter_in_needs_a_list(make_ctx: MakeContext) -> None:
    where = [{"field": "name", "op": "in", "value": "Ada"}]
    with pytest.raises(StepInputError, match=r"\$.where\[0\].value: 'Ada' is not of type"):
        await run_step("data.filter", {"data": ROWS, "where": where}, make_ctx())


async def test_diff_by_key(make_ctx: MakeContext) -> None:
    source = [
        {"id": 1, "name": "Ada", "seen": "mon"},
        {"id": 2, "name": "Bob", "seen": "mon"},
        {"id": 3, "name": "Cy", "seen": "mon"},
    ]
    target = [
        {"id": 4, "name": "Di"},
        {"id": 3, "name": "Cy", "seen": "tue"},
        {"id": 1, "name": "Ada L.", "email": "ada@example.com", "seen": "tue"},
    ]
    out = await run_step(
        "data.diff",
        {"source": source, "target": target, "key": "id", "ignore": ["seen"]},
        make_ctx(),
    )
    assert out == {
        "added": [{"id": 4, "name": "Di"}],
        "removed": [{"id": 2, "name": "Bob", "seen": "mon"}],
        "changed": [
            {"key": 1, "before": source[0], "after": target[2], "fields": ["email", "name"]}
        ],
        "unchanged": 1,
    }


async def test_diff_keys_are_typed_and_unique(make_ctx: MakeContext) -> None:
    out = await run_step(
        "data.diff", {"source": [{"id": 1}], "target": [{"id": "1"}], "key": "id"}, make_ctx()
    )
    assert (len(out["added"]), len(out["removed"])) == (1, 1)  # 1 and "1" are different keys
    with pytest.raises(StepInputError, match="more than once"):
        await run_step(
            "data.diff", {"source": [{"id": 1}, {"id": 1}], "target": [], "key": "id"}, make_ctx()
        )
    with pytest.raises(StepInputError, match=r"`target\[0\]` has no key field"):
        await run_step("data.diff", {"source": [], "target": [{"x": 1}], "key": "id"}, make_ctx())


async def test_transform_and_aggregate_run_through_the_registry(make_ctx: MakeContext) -> None:
    rows = [{"sku": "b", "qty": 2, "price": 9.5}, {"sku": "a", "qty": 1, "price": 20}]
    ops = [{"op": "upper", "field": "sku"}, {"op": "sort", "by": "sku"}]
    normalised = await run_step("data.transform", {"data": rows, "ops": ops}, make_ctx())
    assert [r["sku"] for r in normalised] == ["A", "B"]
    totals = await run_step(
        "data.aggregate", {"data": normalised, "fields": ["qty"], "weight": "price"}, make_ctx()
    )
    assert totals["qty"] == {"sum": 3, "min": 1, "max": 2, "avg": 1.5, "weighted_sum": 39}
    with pytest.raises(StepInputError, match=r"\$.ops\[0\]: 'by' is a required property"):
        await run_step("data.transform", {"data": rows, "ops": [{"op": "sort"}]}, make_ctx())


async def test_squash_makes_one_line_of_a_field(make_ctx: MakeContext) -> None:
    data = {"subject": "  Big\nnews:\t autumn \r\n update ", "n": 1}
    out = await run_step(
        "data.transform", {"data": data, "ops": [{"op": "squash", "field": "subject"}]}, make_ctx()
    )
    assert out == {"subject": "Big news: autumn update", "n": 1}
