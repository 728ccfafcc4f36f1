"""The template guide lists every activity a template may use."""

from pathlib import Path

from app.steps import STEP_ACTIVITIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"


def test_template_guide_lists_every_activity() -> None:
    text = DOC.read_text()
    missing = [name for name in STEP_ACTIVITIES if f"| `{name}` |" not in text]
    assert not missing, f"docs/templates.md does not list {missing}"
