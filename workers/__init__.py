"""Temporal side: TemplateWorkflow (deterministic, no I/O), its activities, and the worker."""
