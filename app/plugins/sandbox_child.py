"""The sandbox process of one plugin call: `python -I -B -m app.plugins.sandbox_child FD`.

Started by app/plugins/sandbox.py with a scrubbed environment and its private temp dir as the
working directory; everything it reads comes on stdin from the plugin worker, never from the
plugin. In this order it:

1. reads the setup line (plugin, limits, network, extra sys.path folders) and sets the OS
   limits (RLIMIT_CPU, RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_FSIZE, no core files) - before any of
   the plugin's code;
2. installs the audit-hook fence (app/plugins/fence.py);
3. imports the plugin, then either describes it (`op: describe`: its manifest as data,
   `manifest_of` - the one description the API, the workers and the
   plugin worker all read) or
   reads the call line (step, input, ctx; a warm process started ahead of its call waits
   here), starts its lifeline (stdin stays open; EOF means the worker is gone: exit) and
   runs the step;
4. writes its answer as JSON lines on file descriptor FD: `{"heartbeat": [...]}` any number of
   times, then `{"ok": output}` or `{"error": {...}}` - and exits.

A MemoryError anywhere exits with MEMORY_EXIT_CODE at once (there may be no memory left to
write an answer with). Everything else - a crash, an exit, a kill by a limit - the parent reads
from the exit status. Imports only the standard library and the plugin contract before the
limits are set, so they hold from the plugin's first line.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import resource
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

MEMORY_EXIT_CODE = 86
LIFELINE_EXIT_CODE = 87
MAX_ERROR_CHARS = 500
MAX_HEARTBEAT_CHARS = 4096
MB = 1024 * 1024


class Answer:
    """Writes JSON lines to the parent on one file descriptor (thread-safe: a plugin may
    heartbeat from its own threads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        data = (text + "\n").encode()
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]


class CallContext:
    """The PluginContext a step gets (app/plugins/api.py)."""

    def __init__(self, ctx: dict[str, Any], temp_dir: str, answer: Answer) -> None:
        self.tenant_id = str(ctx.get("tenant_id", ""))
        self.execution_id = str(ctx.get("execution_id", ""))
        self.step_id = str(ctx.get("step_id", ""))
        self.attempt = int(ctx.get("attempt", 1))
        self.temp_dir = temp_dir
        self._answer = answer

    def heartbeat(self, *details: Any) -> None:
        try:
            text = json.dumps(list(details), default=str)
        except ValueError:
            text = "[]"
        if len(text) > MAX_HEARTBEAT_CHARS:
            text = "[]"  # progress details are a hint; a huge one is dropped, the beat kept
        self._answer.send({"heartbeat": json.loads(text)})


def set_limits(limits: dict[str, Any], max_file_mb: int) -> None:
    cpu = max(1, int(limits["cpu_seconds"]))
    # SIGXCPU at the soft limit; SIGKILL a second later if the plugin ignores that signal.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(limits["memory_mb"]) * MB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = int(limits["open_files"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_mb * MB, max_file_mb * MB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # No RLIMIT_NPROC: it counts every process *and thread* of the user, so "no processes"
    # would also forbid threads (asyncio's resolver, thread pools), and root ignores it. The
    # fence refuses process starts; a container's pids limit is the wall.


def read_roots(plugin: str, entry_value: str | None, paths: Sequence[str] = ()) -> list[str]:
    """Folders the plugin may read: the Python installation, the plugin's own package, the
    service's `app` package (the contract it imports) and the extra sys.path folders the
    worker gave (throwaway distributions in tests)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *paths}
    modules = ["app"]
    if entry_value:
        modules.append(entry_value.split(":")[0].split(".")[0])
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        if spec.submodule_search_locations:
            roots.update(spec.submodule_search_locations)
        elif spec.origin:
            roots.add(os.path.dirname(spec.origin))
    return sorted(roots)


def manifest_of(plugin: Any) -> dict[str, Any]:
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
        "ai_tasks": [asdict(task) for task in plugin.ai_tasks],
        "providers": [asdict(provider) for provider in plugin.providers],
        "templates": list(plugin.templates),
        "network": list(plugin.network),
        "env": list(plugin.env),
        "limits": asdict(plugin.limits),
    }


def refused(exc: BaseException) -> bool:
    """Whether the fence's refusal is what failed the call (possibly wrapped by the plugin)."""
    from app.plugins.fence import SandboxRefusal

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SandboxRefusal):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def run_step(plugin: Any, request: dict[str, Any], answer: Answer) -> Any:
    step = next((s for s in plugin.steps if s.name == request["step"]), None)
    if step is None:
        raise LookupError(f"plugin {plugin.name!r} has no step {request['step']!r}")
    ctx = CallContext(request.get("ctx", {}), os.getcwd(), answer)
    result = step.run(request["input"], ctx)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def watch_lifeline() -> None:
    """Exit when stdin closes: the plugin worker is gone (even SIGKILLed), and nobody would
    read the answer or kill this call at its timeout."""

    def wait_for_eof() -> None:
        while os.read(0, 1):  # one byte at a time: small reads need no malloc arena
            pass
        os._exit(LIFELINE_EXIT_CODE)

    try:
        threading.Thread(target=wait_for_eof, name="lifeline", daemon=True).start()
    except RuntimeError as exc:  # "can't start new thread": no address space left for a stack
        raise MemoryError from exc


def read_line() -> dict[str, Any]:
    line = sys.stdin.buffer.readline()
    if not line:  # the worker is gone (or dropped this spare) before sending it
        os._exit(LIFELINE_EXIT_CODE)
    message = json.loads(line)
    assert isinstance(message, dict)
    return message


def main(fd: int) -> None:
    answer = Answer(fd)
    setup = read_line()
    set_limits(setup["limits"], int(setup.get("max_file_mb", 64)))
    # `-I` ignores PYTHONPATH: folders the worker adds (never the plugin) come in the setup.
    paths = [str(p) for p in setup.get("paths", [])]
    sys.path[:0] = paths

    from app.plugins.api import installed_entry_points, load_plugin
    from app.plugins.fence import Fence

    entry = installed_entry_points().get(setup["plugin"])
    fence = Fence(
        setup["plugin"],
        setup.get("network", []),
        os.getcwd(),
        int(setup["limits"]["processes"]),
        read_roots(setup["plugin"], entry.value if entry else None, paths),
    )
    fence.install()
    try:
        plugin = load_plugin(setup["plugin"])
        if setup["op"] == "describe":
            answer.send({"ok": manifest_of(plugin)})
        else:
            call = read_line()  # a warm process waits here for its call
            watch_lifeline()
            output = run_step(plugin, call, answer)
            try:
                answer.send({"ok": output})
            except (TypeError, ValueError) as exc:
                message = f"its output is not JSON: {exc}"[:MAX_ERROR_CHARS]
                answer.send(
                    {"error": {"kind": "output", "type": type(exc).__name__, "message": message}}
                )
    except MemoryError:
        os._exit(MEMORY_EXIT_CODE)
    except BaseException as exc:  # noqa: BLE001 - everything the plugin raises is its answer
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            exc = RuntimeError("the step called sys.exit()")
        kind = "refused" if refused(exc) else "raised"
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        try:
            answer.send({"error": {"kind": kind, "type": type(exc).__name__, "message": message}})
        except MemoryError:
            os._exit(MEMORY_EXIT_CODE)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]))
