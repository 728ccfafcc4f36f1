"""Every GraphQL example in the README is valid against the schema, so the docs cannot drift
from the API (field names, arguments, types)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import parse, validate

from app.api.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```graphql\n(.*?)```", re.S)
EXAMPLES = [
    (f"{path.name}#{i}", text)
    for path in (ROOT / "README.md",)
    for i, text in enumerate(BLOCK.findall(path.read_text()), 1)
]


def test_the_readme_has_graphql_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_is_valid(where: str, text: str) -> None:
    errors = validate(build_schema()._schema, parse(text))
    assert not errors, f"{where}: {[e.message for e in errors]}\n{text}"
