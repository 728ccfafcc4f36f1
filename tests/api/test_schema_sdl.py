"""graphql/schema.graphql is the exported SDL: regenerate with `wfs schema` after API changes."""

from pathlib import Path

from graphql import build_schema as parse_sdl
from graphql import parse

from app.api.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]


def test_schema_file_matches_exported_sdl() -> None:
    exported = build_schema().as_str() + "\n"
    on_disk = (ROOT / "graphql" / "schema.graphql").read_text()
    assert on_disk == exported, "graphql/schema.graphql is stale: run `wfs schema`"


def test_every_example_operation_validates_against_the_schema() -> None:
    from graphql import validate

    schema = parse_sdl((ROOT / "graphql" / "schema.graphql").read_text())
    documents = sorted((ROOT / "graphql" / "operations").glob("*.graphql"))
    assert len(documents) >= 8
    for path in documents:
        errors = validate(schema, parse(path.read_text()))
        assert not errors, f"{path.name}: {errors}"


def test_graphql_dir_is_not_a_python_package() -> None:
    # A package named graphql would shadow graphql-core and break strawberry.
    assert not (ROOT / "graphql" / "__init__.py").exists()
