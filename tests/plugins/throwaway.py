"""Throwaway plugin distributions: a folder with a module and a `*.dist-info` whose
entry_points.txt declares it in `wfs.plugins`, put on the manifest child's sys.path (or a
`wfs` process's PYTHONPATH). Nothing is installed into the test environment."""

from __future__ import annotations

import textwrap
from pathlib import Path

# A valid step, as one line of code (the declarations below put it in a Plugin(...)).
GOOD_STEP = (
    'PluginStep("lookup", "Looks a customer up", {"type": "object", "properties": {"id":'
    ' {"type": "string"}}, "required": ["id"]}, run, output_schema={"type": "object"},'
    " timeout_seconds=7)"
)


def make_plugin(folder: Path, name: str, body: str, *, obj: str = "plugin") -> Path:
    """A distribution `wfs-<name>` whose entry point `name` is `<module>:<obj>`; `body` is
    the module's code after `from app.plugins.api import *`-style imports."""
    module = f"wfs_throwaway_{name}"
    (folder / f"{module}.py").write_text(
        "from app.plugins.api import (Plugin, PluginAiTask, PluginLimits, PluginModel,\n"
        "    PluginProvider, PluginStep)\n\n"
        "def run(input, ctx):\n    return {}\n\n" + textwrap.dedent(body)
    )
    info = folder / f"wfs_throwaway_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: wfs-throwaway-{name}\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[wfs.plugins]\n{name} = {module}:{obj}\n")
    return folder
