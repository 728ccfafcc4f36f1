"""`wfs plugins check`, run as the operator runs it (the installed `wfs`; a throwaway broken
plugin on its PYTHONPATH beside the installed example), and `wfs plugins list`'s table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.cli.catalog import plugin_table
from app.plugins.registry import activate
from app.settings import Settings
from tests.plugins.throwaway import make_plugin

WFS = Path(sys.executable).parent / "wfs"


def wfs(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS", "PLUGINS_ENABLED")
    }
    environ |= {"PYTHONPATH": str(tmp_path), "LOG_LEVEL": "warning", **env}
    return subprocess.run(
        [str(WFS), "plugins", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    make_plugin(
        tmp_path,
        "shoddy",
        'plugin = Plugin(name="shoddy", version="1", api_version=9, network=["x"])\n',
    )
    checked = wfs(tmp_path, "check")
    assert checked.returncode == 1, checked.stderr
    lines = checked.stdout.splitlines()
    assert "shoddy: REFUSED (2 problems)" in lines
    assert "  - built for plugin API version 9; this service speaks version 1" in lines
    assert "  - network entry 'x': expected host:port (port 1-65535)" in lines
    assert "example 0.1.0: OK" in lines


def test_list_shows_what_each_loaded_plugin_adds(settings: Settings) -> None:
    """The table `wfs plugins list` prints (built in this process: a second `wfs` process
    would cost seconds for the same code)."""
    header, *rows = plugin_table(activate(settings)).splitlines()
    assert header.split() == [
        "NAME",
        "VERSION",
        "STEPS",
        "TASKS",
        "PROVIDERS",
        "TEMPLATES",
        "QUEUE",
    ]
    assert rows == [
        "example  0.1.0    example.word_stats,example.misbehave  example.tone  example.local"
        "  example-word-report  plugin-example"
    ]
