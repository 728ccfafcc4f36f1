"""A plugin's manifest: what it declares, as JSON data, read in a short-lived child process.

The API, the main worker and the AI worker never import a plugin's code: they need only what
it declares (names, schemas, timeouts, AI task specs, provider data, templates, network, env,
limits). `read_manifest(name)` runs `python -m app.plugins.manifest NAME` in a child process
with a timeout and a cap on what it may print, and returns the JSON it printed; the child
imports the plugin (its module code runs there, and only there) and prints `manifest_of`.

The child's environment holds only what Python needs to start (no DATABASE_URL, no API keys):
a plugin's import-time code never sees the service's secrets. The checks of what the manifest
says are the parent's (app/plugins/registry.py): a plugin cannot vouch for itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from app.plugins.api import Plugin, PluginLoadError, load_plugin

# What the child may print; a manifest is a few KB, a plugin with many templates some hundreds.
MAX_MANIFEST_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 20.0
# The child's environment: enough for Python to start and find the installed distributions.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
MAX_ERROR_CHARS = 2000


class ManifestError(Exception):
    """The manifest could not be read: the plugin failed to import, timed out, printed too
    much or something that is not a manifest. The message says which."""


def manifest_of(plugin: Plugin) -> dict[str, Any]:
    """Everything `plugin` declares except its functions, as JSON-ready data."""
    return {
        "name": plugin.name,
        "version": plugin.version,
        "api_version": plugin.api_version,
        "description": plugin.description,
        "steps": [
            {
                "name": step.name,
                "description": step.description,
                "input_schema": step.input_schema,
                "output_schema": step.output_schema,
                "timeout_seconds": step.timeout_seconds,
                "heartbeat_seconds": step.heartbeat_seconds,
            }
            for step in plugin.steps
        ],
        "ai_tasks": [dataclasses.asdict(task) for task in plugin.ai_tasks],
        "providers": [dataclasses.asdict(provider) for provider in plugin.providers],
        "templates": list(plugin.templates),
        "network": list(plugin.network),
        "env": list(plugin.env),
        "limits": dataclasses.asdict(plugin.limits),
    }


def read_manifest(
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_MANIFEST_BYTES,
    extra_paths: Sequence[str] = (),
) -> dict[str, Any]:
    """The manifest of the installed plugin `name`, read in a child process (see the module
    doc); ManifestError with the reason otherwise. `extra_paths` go first on the child's
    sys.path (tests put throwaway distributions there)."""
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    if extra_paths:
        env["PYTHONPATH"] = os.pathsep.join([*extra_paths, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    # Files rather than pipes: the child cannot fill our memory (we read at most max_bytes),
    # and no pipe buffer can dead-lock a child that prints a lot before exiting.
    with tempfile.TemporaryDirectory(prefix="wfs-manifest-") as folder:
        out_path, err_path = os.path.join(folder, "out"), os.path.join(folder, "err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", "app.plugins.manifest", name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=folder,
            )
            try:
                code = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise ManifestError(
                    f"plugin {name!r}: loading took longer than {timeout:g} s"
                ) from None
        size = os.path.getsize(out_path)
        if size > max_bytes:
            raise ManifestError(
                f"plugin {name!r}: its manifest is {size} bytes, more than {max_bytes}"
            )
        with open(out_path, "rb") as f:
            text = f.read(max_bytes + 1)
        with open(err_path, "rb") as f:
            f.seek(max(0, os.path.getsize(err_path) - MAX_ERROR_CHARS))
            tail = f.read().decode("utf-8", "replace").strip()
    return _parsed(name, code, text, tail)


def _parsed(name: str, code: int, text: bytes, error_tail: str) -> dict[str, Any]:
    try:
        answer = json.loads(text) if text else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        raise ManifestError(answer["error"][:MAX_ERROR_CHARS])
    if code != 0 or not isinstance(answer, dict) or not isinstance(answer.get("manifest"), dict):
        last = error_tail.splitlines()[-1] if error_tail else "no output"
        raise ManifestError(f"plugin {name!r}: its loader exited with code {code}: {last}")
    manifest: dict[str, Any] = answer["manifest"]
    return manifest


def main(argv: Sequence[str]) -> int:
    """The child: import plugin argv[0], print {"manifest": ...} or {"error": "..."}."""
    if len(argv) != 1:
        print(json.dumps({"error": "usage: python -m app.plugins.manifest NAME"}))
        return 2
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # whatever the plugin prints at import must not spoil the JSON
    try:
        plugin = load_plugin(argv[0])
        text = json.dumps({"manifest": manifest_of(plugin)}, allow_nan=False)
    except PluginLoadError as exc:
        text, code = json.dumps({"error": str(exc)}), 1
    except Exception as exc:  # a declaration that is not what the contract says, or not JSON
        message = (
            f"plugin {argv[0]!r}: its declarations cannot be read: {type(exc).__name__}: {exc}"
        )
        text, code = json.dumps({"error": message}), 1
    else:
        code = 0
    finally:
        sys.stdout = real_stdout
    real_stdout.write(text)
    real_stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
