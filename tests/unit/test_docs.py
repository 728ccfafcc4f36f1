"""The template guide lists every activity a template may use."""

from pathlib import Path

from app.steps import STEP_ACTIVITIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"


def test_template_guide_lists_every_activity() -> None:
    text = DOC.read_text()
    missing = [name for name in STEP_ACTIVITIES if f"| `{name}` |" not in text]
    assert not missing, f"docs/templates.md does not list {missing}"


ROOT = DOC.parents[1]
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_stand_alone_every_link_is_a_file_of_the_repo() -> None:
    """Users get the repository only: links and named paths never leave it."""
    import re

    broken = []
    for page in PAGES:
        text = page.read_text()
        if "../shared" in text or "DESIGN.md" in text:
            broken.append(f"{page.name}: refers to files outside the repository")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path = (page.parent / target).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.name}: {target}")
    assert not broken, broken


def test_security_page_names_only_tests_that_exist() -> None:
    """Each rule in docs/security.md names its proof; the names must be real tests."""
    import re

    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", text))
    assert named, "docs/security.md names no test"
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = sorted(n for n in named if f"def {n}(" not in sources)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
