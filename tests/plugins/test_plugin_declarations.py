"""Loading plugins: each manifest is read in a sandbox process and checked in the parent; a
plugin with any problem is refused whole with every problem named, the others load and
register their steps on their own queue. Throwaway distributions (tests/plugins/throwaway.py)
stand in for installed ones: nothing is installed, no Temporal or database is needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.plugins.api import PluginLoadError
from app.plugins.checks import parse_manifest
from app.plugins.manifest import ManifestError, read_manifest
from app.plugins.registry import PluginRegistry, handed_or_read, load, unload, use_read
from app.settings import Settings
from app.steps import PLUGIN_ACTIVITIES, find_activity
from tests.plugins.throwaway import GOOD_STEP, make_plugin
from workers.plugin_worker import describe_plugin


@pytest.fixture
def loaded() -> Iterator[list[PluginRegistry]]:
    """Registries a test loaded, unloaded afterwards (the step registry is process-wide)."""
    made: list[PluginRegistry] = []
    yield made
    for found in made:
        unload(found)


def load_from(folder: Path, names: list[str], loaded: list[PluginRegistry]) -> PluginRegistry:
    found = load(
        names,
        installed=names,
        reader=lambda name: read_manifest(name, extra_paths=[str(folder)], timeout=30),
    )
    loaded.append(found)
    return found


TEMPLATE = {
    "name": "acme-report",
    "title": "Acme report",
    "steps": [
        {
            "id": "find",
            "activity": "acme.lookup",
            "input": {"id": "c-1"},
            "enhancements": [{"task": "acme.score", "fallback": "unscored"}],
        },
        {"id": "score", "activity": "ai.acme.score", "input": {"any": 1}},
    ],
}


def test_a_good_plugin_loads_and_its_steps_run_on_its_queue(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    make_plugin(
        tmp_path,
        "acme",
        f"""
        print("chatter at import must not spoil the manifest")
        SCORE = PluginAiTask("score", "Scores", {{"type": "object"}},
                             {{"type": "object", "required": ["n"]}}, "Score it",
                             baseline_output={{"n": 0}})
        TEMPLATE = {TEMPLATE!r}
        plugin = Plugin(name="acme", version="1.2.0", steps=[{GOOD_STEP}], ai_tasks=[SCORE],
                        templates=[TEMPLATE], network=["crm.acme.example:443"],
                        env=["PLUGIN_ACME_TOKEN"])
        """,
    )
    found = load_from(tmp_path, ["acme"], loaded)
    # Its template uses its own step, AI step and AI task (enhancement point): all known.
    assert found.refused == {} and list(found.loaded) == ["acme"]
    assert found.templates() == [TEMPLATE]
    step = find_activity("acme.lookup")
    assert step is not None and step.run is None  # its code never runs in this process
    assert (step.plugin, step.task_queue, step.timeout_seconds) == ("acme", "plugin-acme", 7 + 5)
    unload(found)
    assert "acme.lookup" not in PLUGIN_ACTIVITIES


def test_every_problem_of_a_bad_declaration_is_named(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    make_plugin(
        tmp_path,
        "shoddy",
        """
        plugin = Plugin(
            name="shoddy", version="0.1", api_version=2,
            steps=[
                PluginStep("Bad-Name", "x", {"type": "object"}, run),
                PluginStep("twice", "x", {"type": "nope"}, run),
                PluginStep("twice", "x", {"type": "object"}, run),
            ],
            ai_tasks=[PluginAiTask("score", "x", {"type": "object"}, {"type": "object"}, "do")],
            providers=[PluginProvider("llm", "ftp://x", "OPENAI_API_KEY")],
            network=["no-port"], env=["DATABASE_URL"],
        )
        """,
    )
    found = load_from(tmp_path, ["shoddy"], loaded)
    assert found.loaded == {}
    problems = "\n".join(found.refused["shoddy"])
    for expected in (
        "built for plugin API version 2; this service speaks version 1",
        "step 'Bad-Name': names are lower case letters",
        "step 'twice' is declared twice",
        "step shoddy.twice: input_schema: invalid JSON Schema",
        "AI task shoddy.score: give baseline_output",
        "provider shoddy.llm: base_url must be an http(s) URL",
        "provider shoddy.llm: api_key_env OPENAI_API_KEY must start with PLUGIN_SHODDY_",
        "provider shoddy.llm: declare at least one model",
        "network entry 'no-port': expected host:port",
        "env 'DATABASE_URL': DATABASE_URL must start with PLUGIN_SHODDY_",
    ):
        assert expected in problems, (expected, problems)
    assert find_activity("shoddy.twice") is None


async def test_the_plugin_worker_refuses_what_the_api_refuses(tmp_path: Path) -> None:
    """One description path and one set of checks: the worker reads the same manifest and
    refuses a plugin with the problems the API names (here: it asks for a service setting,
    which is not one of its own PLUGIN_GREEDY_* variables)."""
    make_plugin(
        tmp_path,
        "greedy",
        f'plugin = Plugin(name="greedy", version="1", steps=[{GOOD_STEP}], env=["DATABASE_URL"])\n',
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    refused = "env 'DATABASE_URL': DATABASE_URL must start with PLUGIN_GREEDY_"
    with pytest.raises(PluginLoadError, match=refused):
        await describe_plugin("greedy", settings, extra_paths=[str(tmp_path)])
    make_plugin(
        tmp_path, "fine", f'plugin = Plugin(name="fine", version="2", steps=[{GOOD_STEP}])\n'
    )
    described = await describe_plugin("fine", settings, extra_paths=[str(tmp_path)])
    assert (described.version, [s.name for s in described.steps]) == ("2", ["lookup"])


def test_import_errors_wrong_objects_and_taken_names_are_refused(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    make_plugin(tmp_path, "broken", "raise ImportError('no module named crmlib')\n")
    make_plugin(tmp_path, "notplugin", "plugin = {'name': 'notplugin'}\n")
    make_plugin(tmp_path, "data", 'plugin = Plugin(name="data", version="1")\n')
    template = {
        "name": "order-summary",  # a standard template's name
        "title": "T",
        "steps": [{"id": "a", "activity": "nope.step"}],
    }
    make_plugin(
        tmp_path,
        "tmpl",
        f'plugin = Plugin(name="tmpl", version="1", steps=[{GOOD_STEP.replace("lookup", "go")}],'
        f" templates=[{template!r}])\n",
    )
    found = load_from(tmp_path, ["broken", "notplugin", "data", "tmpl", "ghost"], loaded)
    assert found.loaded == {}
    refused = {name: " | ".join(problems) for name, problems in found.refused.items()}
    assert "failed to import: ImportError: no module named crmlib" in refused["broken"]
    assert "is a dict, not app.plugins.api.Plugin" in refused["notplugin"]
    assert "plugin name 'data' is taken by the service's own steps" in refused["data"]
    assert "unknown activity 'nope.step'" in refused["tmpl"]
    assert "no installed plugin named 'ghost'" in refused["ghost"]
    assert find_activity("tmpl.go") is None  # registered for the template check, taken back


def test_two_plugins_cannot_publish_one_template_name(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    for name in ("first", "second"):
        spec = {
            "name": "shared-report",
            "title": "T",
            "steps": [{"id": "a", "activity": f"{name}.lookup", "input": {"id": "1"}}],
        }
        make_plugin(
            tmp_path,
            name,
            f'plugin = Plugin(name="{name}", version="1", steps=[{GOOD_STEP}],'
            f" templates=[{spec!r}])\n",
        )
    found = load_from(tmp_path, ["first", "second"], loaded)
    assert list(found.loaded) == ["first"]
    assert found.refused["second"] == [
        "template 'shared-report': the name is taken by the plugin 'first'"
    ]


def test_a_plugin_that_hangs_floods_or_pries_at_import_is_cut_off(tmp_path: Path) -> None:
    make_plugin(tmp_path, "sleepy", "import time\ntime.sleep(60)\n")
    # 100 MB printed at import: killed at the cap on what it prints (1 MB), not written out.
    make_plugin(
        tmp_path,
        "chatty",
        "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024 * 1024)\n",
    )
    # Its import reads the environment of the process that reads its manifest (the API's).
    make_plugin(
        tmp_path,
        "prying",
        "import os\nSECRETS = open(f'/proc/{os.getppid()}/environ').read()\n"
        f'plugin = Plugin(name="prying", version="1", description=SECRETS,'
        f" steps=[{GOOD_STEP}])\n",
    )
    make_plugin(tmp_path, "big", f'plugin = Plugin(name="big", version="1", steps=[{GOOD_STEP}])\n')
    paths = [str(tmp_path)]
    with pytest.raises(ManifestError, match="loading took longer than 1 s"):
        read_manifest("sleepy", extra_paths=paths, timeout=1)
    with pytest.raises(ManifestError, match=r"while loading it printed more than 1048576 bytes"):
        read_manifest("chatty", extra_paths=paths, timeout=30)
    with pytest.raises(ManifestError) as prying:
        read_manifest("prying", extra_paths=paths, timeout=30)
    assert "refused opening '/proc/" in str(prying.value)
    assert "PATH=" not in str(prying.value)
    # An answer over the cap is refused (a well-formed manifest of a few hundred bytes).
    with pytest.raises(ManifestError, match=r"more than 50"):
        read_manifest("big", extra_paths=paths, max_bytes=50)


def test_a_plugin_names_only_its_own_variables() -> None:
    """A provider's key goes to the plugin's own base_url as a Bearer token, and `env` reaches
    its code: any secret of the worker's environment that is not a Settings field
    (AWS_SECRET_ACCESS_KEY, OTEL_EXPORTER_OTLP_HEADERS) would leak. Only PLUGIN_<NAME>_*."""
    limits = dict(cpu_seconds=1, memory_mb=64, open_files=16, processes=0, call_timeout_seconds=5)
    model = {"name": "m", "input_usd_per_million": "1", "output_usd_per_million": "1"}
    provider = {
        "name": "llm",
        "base_url": "https://evil.example/v1",
        "api_key_env": "AWS_SECRET_ACCESS_KEY",
        "base_url_env": "REDIS_URL",
        "models": [model],
    }
    manifest = {
        "name": "thief",
        "version": "1",
        "api_version": 1,
        "limits": limits,
        "providers": [provider],
        "env": ["OTEL_EXPORTER_OTLP_HEADERS", "PLUGIN_THIEF_", "PLUGIN_THIEF_TOKEN"],
    }
    _, problems = parse_manifest("thief", manifest)
    assert problems == [
        "provider thief.llm: api_key_env AWS_SECRET_ACCESS_KEY must start with PLUGIN_THIEF_"
        " (a plugin names only its own variables)",
        "provider thief.llm: base_url_env REDIS_URL must start with PLUGIN_THIEF_"
        " (a plugin names only its own variables)",
        "env 'OTEL_EXPORTER_OTLP_HEADERS': OTEL_EXPORTER_OTLP_HEADERS must start with"
        " PLUGIN_THIEF_ (a plugin names only its own variables)",
        "env 'PLUGIN_THIEF_': PLUGIN_THIEF_ must start with PLUGIN_THIEF_"
        " (a plugin names only its own variables)",
    ]
    provider |= {"api_key_env": "PLUGIN_THIEF_KEY", "base_url_env": "PLUGIN_THIEF_URL"}
    manifest["env"] = ["PLUGIN_THIEF_TOKEN"]
    assert parse_manifest("thief", manifest)[1] == []
    # A plugin whose prefix reaches a service setting still cannot name it.
    manifest |= {"name": "manifest", "env": ["PLUGIN_MANIFEST_TIMEOUT_SECONDS"], "providers": []}
    assert parse_manifest("manifest", manifest)[1] == [
        "env 'PLUGIN_MANIFEST_TIMEOUT_SECONDS': PLUGIN_MANIFEST_TIMEOUT_SECONDS is a setting"
        " of the service, not the plugin's"
    ]


def test_a_handed_over_manifest_is_checked_like_one_read_here(tmp_path: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    """`wfs dev` hands its roles the manifests it read (use_read): a role checks them as it
    checks its own reads, so a bad one is refused there too, and a failed read fails the same.
    (A throwaway plugin: loading and unloading the example would take its steps away from the
    session's registry.)"""
    declared = f'plugin = Plugin(name="handy", version="0.1", steps=[{GOOD_STEP}])'
    make_plugin(tmp_path, "handy", declared)
    good = read_manifest("handy", extra_paths=[str(tmp_path)], timeout=30)
    try:
        use_read({"handy": good | {"api_version": 99}})
        refused = load(["handy"], installed=["handy"], reader=handed_or_read(20))
        loaded.append(refused)
        assert not refused.loaded and any("API version 99" in p for p in refused.refused["handy"])
        use_read({"handy": "plugin 'handy': loading took longer than 20 s"})
        failed = load(["handy"], installed=["handy"], reader=handed_or_read(20))
        loaded.append(failed)
        assert failed.refused == {"handy": ["plugin 'handy': loading took longer than 20 s"]}
        # Handed over, it loads without a read here (a sandbox here could not even find it).
        use_read({"handy": good})
        fine = load(["handy"], installed=["handy"], reader=handed_or_read(20))
        loaded.append(fine)
        assert list(fine.loaded) == ["handy"] and fine.read == {"handy": good}
    finally:
        use_read({})
