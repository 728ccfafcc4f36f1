"""Spec validation reports every problem with its path; params are checked by JSON Schema."""

from __future__ import annotations

import copy

import pytest

from app.errors import ValidationFailed
from app.templates.schemas import param_problems, validate_spec
from app.templates.standard import ORDER_SUMMARY, STANDARD_TEMPLATES


@pytest.mark.parametrize("spec", STANDARD_TEMPLATES, ids=lambda s: s["name"])
def test_standard_templates_are_valid(spec: dict) -> None:
    parsed = validate_spec(spec)
    assert parsed.example_params is not None
    assert param_problems(parsed.parameters, parsed.example_params) == []


def test_every_problem_is_reported_with_its_path() -> None:
    spec = copy.deepcopy(ORDER_SUMMARY)
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
    spec = copy.deepcopy(ORDER_SUMMARY)
    spec["example_params"] = {"customer": "x"}
    with pytest.raises(ValidationFailed) as err:
        validate_spec(spec)
    assert err.value.details == [
        {"path": "$.example_params", "message": "'items' is a required property"}
    ]


def _spec(steps: list[dict]) -> dict:
    return {"name": "graph-check", "title": "t", "steps": steps}


def _paths(spec: dict) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as err:
        validate_spec(spec)
    return {p["path"]: p["message"] for p in err.value.details}


def test_graph_problems_are_all_reported() -> None:
    t = {"activity": "data.transform", "input": {"data": {}, "ops": []}}
    paths = _paths(
        _spec(
            [
                {"id": "a", **t, "needs": ["c"]},
                {"id": "b", **t, "needs": ["a", "ghost"]},
                {"id": "c", **t, "needs": ["b"]},
                {"id": "d", **t, "needs": ["d"]},
                {"id": "e", **t, "needs": [], "input": {"data": "{{ steps.a }}", "ops": []}},
                {
                    "id": "f",
                    **t,
                    "needs": ["e"],
                    "when": "steps.nope.x",
                    "for_each": "params.items |",
                },
                {
                    "id": "g",
                    "activity": "wait.timer",
                    "for_each": "[1]",
                    "input": {"seconds": 1},
                    "enhancements": [{"task": "dance", "min_tier": "gold", "fallback": "none"}],
                    "compensate": {"activity": "wait.timer"},
                },
            ]
        )
    )
    assert paths["$.steps[1].needs[1]"] == "unknown step 'ghost'"
    assert "dependency cycle" in paths["$.steps[0].needs"]
    assert {"a", "b", "c"} <= set(paths["$.steps[0].needs"].split(": ")[1].split(" -> "))
    assert paths["$.steps[3].needs[0]"] == "a step cannot need itself"
    assert paths["$.steps[4].input"] == "refers to step 'a', which it does not need"
    assert paths["$.steps[5].when"] == "refers to unknown step 'nope'"
    assert "bad expression" in paths["$.steps[5].for_each"]
    assert paths["$.steps[6].for_each"] == "wait.timer cannot fan out"
    assert "unknown AI task 'dance'" in paths["$.steps[6].enhancements[0].task"]
    assert "unknown tier 'gold'" in paths["$.steps[6].enhancements[0].min_tier"]
    assert paths["$.steps[6].compensate.activity"] == "wait.timer cannot be used here"


def test_steps_without_needs_run_in_listed_order() -> None:
    t = {"activity": "data.transform", "input": {"data": {}, "ops": []}}
    spec = validate_spec(_spec([{"id": "a", **t}, {"id": "b", **t}, {"id": "c", **t, "needs": []}]))
    plans = spec.plan(default_timeout=10, default_attempts=2)
    assert [p.needs for p in plans] == [[], ["a"], []]
    assert plans[0].retry.max_attempts == 2


def test_referencing_a_transitive_ancestor_is_fine() -> None:
    t = {"activity": "data.transform", "input": {"data": {}, "ops": []}}
    validate_spec(
        _spec(
            [
                {"id": "a", **t},
                {"id": "b", **t},
                {"id": "c", **t, "input": {"data": "{{ steps['a'] }}", "ops": []}},
            ]
        )
    )


def test_enhancement_points_are_checked_against_the_task_and_the_activity() -> None:
    """`apply` maps a field the AI task gives to a field the step's activity takes; a point's
    input may use only the steps the step needs; waits have no input to improve."""
    mail = {
        "activity": "email.send",
        "input": {"to": "a@example.com", "subject": "s", "text": "t"},
    }
    point = {"task": "generate_text", "fallback": "plain", "input": {"prompt_template": "p"}}
    paths = _paths(
        _spec(
            [
                {"id": "a", "activity": "data.transform", "input": {"data": {}, "ops": []}},
                {
                    "id": "b",
                    **mail,
                    "needs": [],
                    "enhancements": [
                        {**point, "apply": {"subject": "summary", "body.html": "text"}},
                        {**point, "input": {"prompt_template": "{{ steps.a }}"}, "apply": {}},
                        {**point, "apply": {"text": "text"}},
                    ],
                },
                {
                    "id": "c",
                    "activity": "wait.timer",
                    "input": {"seconds": 1},
                    "enhancements": [{**point, "apply": {"seconds": "text"}}],
                },
            ]
        )
    )
    assert paths["$.steps[1].enhancements[0].apply.subject"] == (
        "generate_text gives no 'summary'; it gives: text"
    )
    assert paths["$.steps[1].enhancements[0].apply.body.html"].startswith(
        "email.send takes no 'body'; it takes: "
    )
    assert paths["$.steps[1].enhancements[1].input"] == (
        "refers to step 'a', which it does not need"
    )
    assert paths["$.steps[1].enhancements[1].apply"] == "map at least one step input field"
    assert not [p for p in paths if p.startswith("$.steps[1].enhancements[2]")]  # a good one
    assert paths["$.steps[2].enhancements[0]"] == "wait.timer has no input an AI task could improve"
