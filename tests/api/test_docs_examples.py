"""Every GraphQL example in the README and the frontend guide is valid against the schema, so
the docs cannot drift from the API (field names, arguments, types)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from graphql import parse, validate

from app.api.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```graphql\n(.*?)```", re.S)
EXAMPLES = [
    (f"{path.name}#{i}", text)
    for path in (ROOT / "README.md", ROOT / "docs" / "frontend.md", ROOT / "docs" / "analytics.md")
    for i, text in enumerate(BLOCK.findall(path.read_text()), 1)
]


def test_the_docs_have_graphql_examples() -> None:
    assert sum(w.startswith("README.md#") for w, _ in EXAMPLES) >= 5
    assert sum(w.startswith("frontend.md#") for w, _ in EXAMPLES) >= 5


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_example_is_valid(where: str, text: str) -> None:
    errors = validate(build_schema()._schema, parse(text))
    assert not errors, f"{where}: {[e.message for e in errors]}\n{text}"


JS_BLOCK = re.compile(r"```js\n(.*?)```", re.S)


def test_frontend_guide_javascript_parses(tmp_path: Path) -> None:
    """The guide's client set-ups are JavaScript that parses as an ES module (`node --check`
    reads the syntax only; the graphql-ws one also runs, in tests/api/test_http_spec.py)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    blocks = JS_BLOCK.findall((ROOT / "docs" / "frontend.md").read_text())
    assert len(blocks) >= 3
    for i, code in enumerate(blocks, 1):
        script = tmp_path / f"block{i}.mjs"
        script.write_text(code)
        checked = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, f"frontend.md js block {i}: {checked.stderr}"


def test_frontend_guide_names_every_node_type() -> None:
    """Apollo's possibleTypes in the guide lists exactly the schema's Node implementations."""
    listed = re.search(
        r"possibleTypes: \{ Node: \[(.*?)\] \}", (ROOT / "docs" / "frontend.md").read_text()
    )
    assert listed is not None
    schema = build_schema()._schema
    nodes = {t.name for t in schema.get_possible_types(schema.get_type("Node"))}
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == nodes
