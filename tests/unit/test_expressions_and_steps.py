"""Sandboxed step expressions and the data.* step activities."""

from __future__ import annotations

import pytest

from app.steps.data import StepInputError, aggregate, transform
from app.templates.expressions import ExpressionError, check, render

CTX = {"params": {"n": 3, "names": ["b", "a"]}, "steps": {"s1": {"total": 7}}}


def test_single_expression_keeps_its_type_and_text_renders() -> None:
    assert render("{{ params.names }}", CTX) == ["b", "a"]
    assert render("{{ params.n * 2 }}", CTX) == 6
    assert render("total={{ steps.s1.total }}", CTX) == "total=7"
    assert render({"a": ["{{ params.n }}", 1]}, CTX) == {"a": [3, 1]}


def test_undefined_names_fail_instead_of_rendering_empty() -> None:
    with pytest.raises(ExpressionError, match="has no attribute .missing."):
        render("{{ params.missing }}", CTX)
    with pytest.raises(ExpressionError):
        render("x {{ steps.nope.total }}", CTX)


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(ExpressionError):
        render("{{ params.__class__.__mro__ }}", CTX)
    with pytest.raises(ExpressionError):
        render("{{ params.names.append(1) }}", CTX)  # immutable sandbox


def test_check_finds_syntax_errors_with_paths() -> None:
    assert check({"a": "{{ ok }}", "b": ["{{ broken( }}"]}) == [
        ("$.b[0]", check(["{{ broken( }}"])[0][1])
    ]


def test_transform_ops() -> None:
    rows = [{"sku": "b", "q": 2}, {"sku": "a", "q": 1}]
    assert transform(
        {"data": rows, "ops": [{"op": "upper", "field": "sku"}, {"op": "sort", "by": "sku"}]}
    ) == [{"sku": "A", "q": 1}, {"sku": "B", "q": 2}]
    assert transform({"data": {"x": 1}, "ops": [{"op": "rename", "mapping": {"x": "y"}}]}) == {
        "y": 1
    }
    assert transform({"data": rows, "ops": [{"op": "filter", "field": "q", "equals": 2}]}) == [
        rows[0]
    ]
    with pytest.raises(StepInputError, match="unknown op"):
        transform({"data": rows, "ops": [{"op": "explode"}]})
    with pytest.raises(StepInputError, match="needs field"):
        transform({"data": rows, "ops": [{"op": "upper"}]})


def test_aggregate_is_exact_with_decimals() -> None:
    rows = [{"qty": 3, "price": 0.1}, {"qty": 1, "price": 0.2}]
    out = aggregate({"data": rows, "fields": ["qty", "price"], "weight": "price"})
    assert out["count"] == 2
    assert out["qty"] == {"sum": 4, "min": 1, "max": 3, "avg": 2, "weighted_sum": 0.5}
    assert out["price"]["sum"] == 0.3  # not 0.30000000000000004
    with pytest.raises(StepInputError, match="not a number"):
        aggregate({"data": [{"qty": "many"}], "fields": ["qty"]})
