"""The example plugin (docs/plugins.md walks through it).

Adds the step `example.word_stats` and `example.misbehave`, a step that does what its input
asks: answer, spin the CPU, eat memory, crash, exit, hang, or reach for what the sandbox keeps
from it. The sandbox tests (and anyone trying the limits) use it. Also an AI task
(`example.tone`: enhancement points name it so, templates run it as the step `ai.example.tone`),
an AI provider (`example.local`: any OpenAI-compatible server, used where the AI worker has
PLUGIN_EXAMPLE_LLM_API_KEY, at PLUGIN_EXAMPLE_LLM_BASE_URL) and a template (`example-word-report`).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any

from app.plugins.api import (
    Plugin,
    PluginAiTask,
    PluginContext,
    PluginLimits,
    PluginModel,
    PluginProvider,
    PluginStep,
)

WORD_STATS_INPUT = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "maxLength": 100_000},
        "top": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
    },
    "required": ["text"],
    "additionalProperties": False,
}
WORD_STATS_OUTPUT = {
    "type": "object",
    "properties": {
        "words": {"type": "integer"},
        "distinct": {"type": "integer"},
        "top": {"type": "array", "items": {"type": "array"}},
    },
    "required": ["words", "distinct", "top"],
}


def word_stats(input: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    words = [w.strip(".,;:!?\"'()").lower() for w in input["text"].split()]
    counts = Counter(w for w in words if w)
    return {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "top": [[word, n] for word, n in counts.most_common(input.get("top", 5))],
    }


MISBEHAVE_MODES = ["ok", "loop", "sleep", "memory", "crash", "exit", "raise", "network"]
MISBEHAVE_MODES += ["secrets", "files", "fork_exec"]
MISBEHAVE_INPUT = {
    "type": "object",
    "properties": {
        "mode": {"enum": MISBEHAVE_MODES},
        "seconds": {"type": "number", "minimum": 0, "maximum": 3600, "default": 1},
        "host": {"type": "string", "maxLength": 255, "default": "127.0.0.1"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432},
        "path": {"type": "string", "maxLength": 1024, "default": "/etc/hostname"},
    },
    "required": ["mode"],
    "additionalProperties": False,
}


def misbehave(input: dict[str, Any], ctx: PluginContext) -> dict[str, Any]:
    mode = input["mode"]
    if mode == "loop":  # CPU until the CPU limit or the call timeout stops it
        while True:
            pass
    if mode == "sleep":  # hangs without heartbeating
        time.sleep(float(input.get("seconds", 1)))
    if mode == "memory":  # grows until the memory limit stops it
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))
    if mode == "crash":
        os.abort()
    if mode == "exit":
        os._exit(3)
    if mode == "raise":
        raise RuntimeError("the example plugin was told to fail")
    if mode == "network":  # a host:port the plugin did not declare
        with socket.create_connection(
            (input.get("host", "127.0.0.1"), input.get("port", 5432)), timeout=5
        ):
            return {"mode": mode, "connected": True}
    if mode == "secrets":  # what of the service's environment reached the sandbox
        return {"mode": mode, "env": sorted(os.environ)}
    if mode == "files":
        with open(input.get("path", "/etc/hostname"), "rb") as f:
            return {"mode": mode, "read": len(f.read())}
    if mode == "fork_exec":  # a process started past the audit hook, reading the worker's secrets
        return {"mode": mode, "read": _unaudited_process(f"cat /proc/{os.getppid()}/environ")}
    return {"mode": mode, "pid": os.getpid()}


def _unaudited_process(command: str) -> str:
    """Run `command` the way subprocess does, but without its audit event: subprocess's
    `sys.audit` is swapped for a no-op, leaving `_posixsubprocess.fork_exec`, which raises
    none itself. The sandbox must refuse it anyway (docs/plugins-sandbox.md)."""
    import subprocess
    import sys
    import types

    real_sys = subprocess.sys  # type: ignore[attr-defined]
    names = {k: getattr(sys, k) for k in dir(sys) if not k.startswith("__")}
    quiet = types.SimpleNamespace(**(names | {"audit": lambda *a: None}))
    subprocess.sys = quiet  # type: ignore[attr-defined,assignment]
    try:
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True)
    finally:
        subprocess.sys = real_sys  # type: ignore[attr-defined]
    return done.stdout.decode("utf-8", "replace")


TONE_TASK = PluginAiTask(
    "tone",
    "The tone of a text: positive, neutral or negative",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 20_000}},
        "required": ["text"],
        "additionalProperties": False,
    },
    output_schema={
        "type": "object",
        "properties": {
            "tone": {"enum": ["positive", "neutral", "negative"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["tone", "confidence"],
        "additionalProperties": False,
    },
    instructions="Say whether the tone of `text` is positive, neutral or negative, and how sure"
    " you are (confidence between 0 and 1).",
    baseline_output={"tone": "neutral", "confidence": 0.0},
    max_output_tokens=64,
)
LOCAL_PROVIDER = PluginProvider(
    "local",
    base_url="http://127.0.0.1:11434/v1",  # Ollama's OpenAI-compatible API by default
    api_key_env="PLUGIN_EXAMPLE_LLM_API_KEY",
    base_url_env="PLUGIN_EXAMPLE_LLM_BASE_URL",
    models=[PluginModel("example-small", "0.05", "0.20")],
)
WORD_REPORT = {
    "name": "example-word-report",
    "title": "Word report (example plugin)",
    "description": "Counts the words of a text and lists the most frequent, with the example"
    " plugin's example.word_stats step.",
    "tags": ["example", "plugin"],
    "parameters": {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 100_000},
            "top": {"type": "integer", "minimum": 1, "maximum": 50},
        },
    },
    "steps": [
        {
            "id": "stats",
            "title": "Count the words",
            "activity": "example.word_stats",
            "input": {"text": "{{ params.text }}", "top": "{{ params.top | default(3) }}"},
        }
    ],
    "output": {
        "words": "{{ steps.stats.words }}",
        "distinct": "{{ steps.stats.distinct }}",
        "top": "{{ steps.stats.top }}",
    },
    "example_params": {"text": "the cat and the hat and the bat", "top": 2},
}

plugin = Plugin(
    name="example",
    version="0.1.0",
    description="Word statistics, and a step that misbehaves on request",
    steps=[
        PluginStep(
            "word_stats",
            "Counts the words of a text and lists the most frequent",
            WORD_STATS_INPUT,
            word_stats,
            output_schema=WORD_STATS_OUTPUT,
            timeout_seconds=30,
        ),
        PluginStep(
            "misbehave",
            "Does what `mode` says (ok, loop, sleep, memory, crash, exit, raise, network, secrets,"
            " files): the sandbox's limits contain each",
            MISBEHAVE_INPUT,
            misbehave,
            timeout_seconds=20,
        ),
    ],
    ai_tasks=[TONE_TASK],
    providers=[LOCAL_PROVIDER],
    templates=[WORD_REPORT],
    limits=PluginLimits(
        cpu_seconds=5, memory_mb=256, open_files=64, processes=0, call_timeout_seconds=20
    ),
)
