"""Spec validation reports every problem with its path; params are checked by JSON Schema."""

from __future__ import annotations

import copy

import pytest

from app.errors import ValidationFailed
from app.templates.schemas import param_problems, validate_spec
from app.templates.standard import STANDARD_TEMPLATES


@pytest.mark.parametrize("spec", STANDARD_TEMPLATES, ids=lambda s: s["name"])
def test_standard_templates_are_valid(spec: dict) -> None:
    parsed = validate_spec(spec)
    assert parsed.example_params is not None
    assert param_problems(parsed.parameters, parsed.example_params) == []


def test_every_problem_is_reported_with_its_path() -> None:
    spec = copy.deepcopy(STANDARD_TEMPLATES[0])
    spec["steps"][0]["activity"] = "no.such"
    spec["steps"][1]["id"] = "normalize"
    spec["steps"][2]["input"]["data"] = "{{ steps.normalize | }}"
    spec["parameters"] = {"type": "objekt"}
    with pytest.raises(ValidationFailed) as err:
        validate_spec(spec)
    paths = {p["path"]: p["message"] for p in err.value.details}
    assert "unknown activity 'no.such'" in paths["$.steps[0].activity"]
    assert "duplicate step id" in paths["$.steps[1].id"]
    assert "bad expression" in paths["$.steps[2].input.data"]
    assert "invalid JSON Schema" in paths["$.parameters"]


def test_shape_errors_come_from_the_model_with_paths() -> None:
    with pytest.raises(ValidationFailed) as err:
        validate_spec({"name": "Bad Name", "title": "", "steps": [{"id": "1x"}]})
    paths = {p["path"] for p in err.value.details}
    assert {"$.name", "$.title", "$.steps[0].id", "$.steps[0].activity"} <= paths


def test_example_params_must_match_the_parameters() -> None:
    spec = copy.deepcopy(STANDARD_TEMPLATES[0])
    spec["example_params"] = {"customer": "x"}
    with pytest.raises(ValidationFailed) as err:
        validate_spec(spec)
    assert err.value.details == [
        {"path": "$.example_params", "message": "'items' is a required property"}
    ]
