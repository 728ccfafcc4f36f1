"""A plugin's manifest: what it declares, as JSON data, read in a sandbox process.

The API, the main worker, the AI worker and the plugin worker never import a plugin's code:
they need only what it declares (names, schemas, timeouts, AI task specs, provider data,
templates, network, env, limits). `describe(name)` (async) and `read_manifest(name)` (its
blocking form) run the plugin's import in a sandbox process (app/plugins/sandbox.py,
op `describe`) - the same one a step call runs in: a scrubbed environment, the audit-hook
fence (no /proc, no undeclared network, no processes), OS limits, its own session (killed
whole at the timeout), a bounded answer and a bound on what it prints - and return
`manifest_of` as it answered. One path for everyone: a plugin cannot tell the API one thing
and its worker another. The checks of what the manifest says are the caller's
(app/plugins/checks.py: parse_manifest): a plugin cannot vouch for itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Mapping, Sequence
from typing import Any

from app.plugins.api import PluginLimits
from app.plugins.sandbox import SandboxSpec, effective_limits, run_sandboxed
from app.plugins.sandbox_child import manifest_of as manifest_of  # where the sandbox makes it

# What the answer may hold; a manifest is a few KB, a plugin with many templates some hundreds.
MAX_MANIFEST_BYTES = 2 * 1024 * 1024
# What the plugin may print while it is imported (its stdout and stderr) before it is killed.
MAX_PRINTED_BYTES = 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 20.0
MAX_ERROR_CHARS = 2000


class ManifestError(Exception):
    """The manifest could not be read: the plugin failed to import, timed out, printed too
    much or something that is not a manifest. The message says which."""


async def describe(
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_MANIFEST_BYTES,
    extra_paths: Sequence[str] = (),
    limits: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The manifest of the installed plugin `name`, read in a sandbox process (see the module
    doc) with the default limits lowered by `limits` (PLUGIN_LIMITS); ManifestError with the
    reason otherwise. `extra_paths` go first on the child's sys.path (tests put throwaway
    distributions there)."""
    spec = SandboxSpec(
        name,
        effective_limits(PluginLimits(), limits),
        max_output_bytes=max_bytes,
        max_printed_bytes=MAX_PRINTED_BYTES,
        paths=tuple(str(p) for p in extra_paths),
    )
    outcome = await run_sandboxed(spec, {"op": "describe"}, timeout)
    if outcome.kind == "timeout":
        raise ManifestError(f"plugin {name!r}: loading took longer than {timeout:g} s")
    if outcome.kind == "output":
        raise ManifestError(f"plugin {name!r}: while loading it {outcome.message}")
    if not outcome.ok:
        message = outcome.message.removeprefix("PluginLoadError: ")
        if not message.startswith(f"plugin {name!r}"):
            message = f"plugin {name!r}: its declarations cannot be read: {message}"
        raise ManifestError(message[:MAX_ERROR_CHARS])
    if not isinstance(outcome.output, dict):
        raise ManifestError(f"plugin {name!r}: its description is not a manifest")
    size = len(json.dumps(outcome.output, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ManifestError(f"plugin {name!r}: its manifest is {size} bytes, more than {max_bytes}")
    return outcome.output


def read_manifest(
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_bytes: int = MAX_MANIFEST_BYTES,
    extra_paths: Sequence[str] = (),
) -> dict[str, Any]:
    """`describe`, for callers without an event loop (the registry reads manifests side by
    side in threads); from a thread with a running loop it runs in a thread of its own."""
    call = describe(name, timeout=timeout, max_bytes=max_bytes, extra_paths=extra_paths)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call).result()
