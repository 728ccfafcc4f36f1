"""Every alert of deploy/prometheus/rules.yaml links its own section of docs/runbooks.md, and
every section there is an alert's (a renamed alert cannot leave a dead link or a stale page)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.test_deploy_files import alerts

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"


def sections() -> dict[str, str]:
    """GitHub's anchor of each `## ` heading -> the section's text."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-"): body
        for title, body in zip(parts[1::2], parts[2::2], strict=True)
    }


def test_every_alert_links_its_runbook_section_and_every_section_is_an_alert() -> None:
    found = sections()
    names = [alert["alert"] for alert in alerts()]
    for alert in alerts():
        url = alert["annotations"].get("runbook_url")
        assert url == f"docs/runbooks.md#{alert['alert'].lower()}", alert["alert"]
        body = found.get(url.partition("#")[2])
        assert body is not None, f"{alert['alert']}: no section in docs/runbooks.md"
        for part in ("**What it means**", "**Check**", "**Do**"):
            assert part in body, f"{alert['alert']}: its runbook has no {part}"
    assert set(found) == {name.lower() for name in names}
