"""The OS limits of a plugin's sandbox, in a leaf module: app.settings checks PLUGIN_LIMITS
against them without importing app.plugins (which imports app.settings; the import contract
forbids the cycle). Plugin authors import them from app.plugins.api."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PluginLimits:
    """OS limits of the plugin's sandbox, per call. Defaults fit a small, I/O-bound step; the
    platform operator may lower (never raise) them per plugin by setting."""

    cpu_seconds: int = 30  # CPU time of one call
    memory_mb: int = 512  # address space of the process running a call
    open_files: int = 64
    processes: int = 0  # child processes a call may start (0: none)
    call_timeout_seconds: float = 60.0  # wall time of one call (also the activity's timeout)
