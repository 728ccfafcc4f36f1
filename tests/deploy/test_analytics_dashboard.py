"""deploy/grafana/tenant-analytics.json against the code it reads: its layout and data source
wiring as tests/deploy/test_deploy_files.py checks the Prometheus dashboard, and every SQL
query (panels and variables), with Grafana's variables and macros filled in, run on the real
PostgreSQL of the tests over a rolled-up history, where its figures must match the rollup's
own rows (a renamed column or table fails here, not on an operator's screen)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from app.models import ExecutionRollup, Tenant
from app.models.analytics import ALL_TEMPLATES
from tests.api.test_execution_stats import history, period, write
from tests.conftest import make_tenant

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tenant-analytics.json"
README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def fill(sql: str, values: dict[str, str], since: datetime, until: datetime) -> str:
    """Grafana's variables and the time macros the dashboard uses, as Grafana fills them."""
    sql = sql.replace("$__timeFrom()", f"'{since.isoformat()}'::timestamptz")
    sql = sql.replace("$__timeTo()", f"'{until.isoformat()}'::timestamptz")
    sql = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], sql)
    assert "$" not in sql, sql
    return sql


def test_layout_and_wiring() -> None:
    dash = dashboard()
    assert dash["uid"] == "wfs-tenant-analytics" and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "grafana-postgresql-datasource"
    assert {"tenant", "template"} <= set(variables)
    assert variables["template"]["current"]["value"] == str(ALL_TEMPLATES)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    occupied: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, panel["title"]
        occupied |= cells
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["rawSql"].strip()
    assert DASHBOARD.name in README.read_text()


async def test_every_query_runs_and_counts_what_the_rollup_holds(sessions: Any) -> None:
    keys = await make_tenant(sessions, "pro")
    t0 = period()
    runs = history(t0, 40)
    await write(sessions, keys, runs)  # and rolled up
    since, until = t0 - timedelta(weeks=1), t0 + timedelta(weeks=2)
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    async with sessions() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.name == keys.name))
        tenants = (await s.execute(text(variables["tenant"]["query"]))).scalars().all()
        assert keys.name in tenants
        values = {"tenant": keys.name, "template": str(ALL_TEMPLATES)}
        options = await s.execute(text(fill(variables["template"]["query"], values, since, until)))
        templates = {r.__value: r.__text for r in options}
        assert templates[str(ALL_TEMPLATES)] == "(all templates)" and len(templates) == 3
        rolled = await s.scalar(
            select(func.sum(ExecutionRollup.runs)).where(
                ExecutionRollup.tenant_id == tenant_id,
                ExecutionRollup.template_id == ALL_TEMPLATES,
            )
        )
        assert rolled == len(runs)
        answers = {}
        for panel in dash["panels"]:
            (target,) = panel["targets"]
            sql = fill(target["rawSql"], values, since, until)
            answers[panel["title"]] = (await s.execute(text(sql))).mappings().all()
    per_status = answers["Executions per day by status"]
    assert sum(r["value"] for r in per_status) == len(runs)
    assert {r["metric"] for r in per_status} == {r.status for r in runs}
    assert all(r["time"].tzinfo is not None for r in per_status)
    by_template = answers["Runs by template"]
    assert sum(r["runs"] for r in by_template) == len(runs) and len(by_template) == 2
    durations = answers["Duration per day (p50, p95)"]
    assert durations and all(0 < r["p50"] <= r["p95"] for r in durations)
    rates = answers["Success rate per day"]
    assert rates and all(r["success rate"] is None or 0 <= r["success rate"] <= 1 for r in rates)
