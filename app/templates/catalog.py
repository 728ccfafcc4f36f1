"""What the template catalog tells a tenant before it trusts another publisher's template: who
published it, how it relates to the caller, which version is offered to the caller, and what
a version does (capabilities). Pure rules, no SQL: the repository and services apply them.

A caller relates to a template it can read in one of four ways (the first that holds):
- OWN: its tenant owns it.
- PLATFORM: the platform's own (tenant_id NULL), published by `workflow-service`, verified.
- SHARED: another tenant's SHARED template that is shared with the caller.
- PUBLIC: another tenant's PUBLIC template with a version the platform operator approved.
Another publisher's template (SHARED or PUBLIC) runs only at a version the caller's admin
accepted (docs/templates.md, "Publishing and running others' templates").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from app.executions.workflow_io import active_point
from app.models import Template
from app.models.template import PLATFORM_PUBLISHER_NAME


@dataclass(frozen=True)
class Publisher:
    name: str
    verified: bool


# The platform's own templates; no tenant is ever verified.
PLATFORM_PUBLISHER = Publisher(name=PLATFORM_PUBLISHER_NAME, verified=True)


class Relation(StrEnum):
    OWN = "OWN"
    PLATFORM = "PLATFORM"
    SHARED = "SHARED"
    PUBLIC = "PUBLIC"


def relation(tenant_id: uuid.UUID, template: Template) -> Relation:
    """How the caller relates to a template it can read (the repository's visible_to): a
    PUBLIC template of another tenant is offered through the catalog only, shared or not."""
    if template.tenant_id is None:
        return Relation.PLATFORM
    if template.tenant_id == tenant_id:
        return Relation.OWN
    return Relation.PUBLIC if template.visibility == "PUBLIC" else Relation.SHARED


def needs_acceptance(tenant_id: uuid.UUID, template: Template) -> bool:
    return relation(tenant_id, template) in (Relation.SHARED, Relation.PUBLIC)


def offered_number(tenant_id: uuid.UUID, template: Template) -> int | None:
    """The version offered to the caller when it is fixed by the template row: the approved
    public one for another tenant's PUBLIC template. None: the latest version that is not
    deprecated (own, platform and shared templates), which only the versions tell."""
    if relation(tenant_id, template) is Relation.PUBLIC:
        return template.public_version
    return None


def split_qualified(name: str) -> tuple[str | None, str]:
    """`publisher/name` -> (publisher, name); a bare name -> (None, name). Template names
    have no `/`, so the last one separates them (a tenant's name may hold one)."""
    publisher, slash, bare = name.rpartition("/")
    return (publisher, bare) if slash else (None, name)


# --- capabilities ------------------------------------------------------------------------

READS_FILES = frozenset({"files.read", "files.list", "files.copy", "files.archive"})
WRITES_FILES = frozenset({"files.write", "files.copy", "files.delete", "files.archive"})
SENDS_MAIL = frozenset({"email.send"})
ANY_HOST = "*"
_EXPRESSION_OPENERS = ("{{", "{%", "{#")


@dataclass(frozen=True)
class Capabilities:
    """What a version may do with the tenant that runs it: its files, its mail relay and
    quota, its AI budget, the hosts it calls. Compensations count: they run too."""

    activities: list[str]
    sends_mail: bool
    reads_files: bool
    writes_files: bool
    calls_hosts: list[str]
    uses_ai: bool


# Step input fields that decide where a call goes. An active point's `apply` may set them from
# AI output, which the template's author steers (the prompt) or the data does (injection), so
# the spec cannot tell the destination. http.request `url` -> the host is "*". email.send
# recipients: sendsMail is already true and capabilities list no recipients, so nothing more
# to report; the rule is here so a future recipients field reports "any" the same way.
ROUTING_FIELDS: dict[str, frozenset[str]] = {
    "http.request": frozenset({"url"}),
    "email.send": frozenset({"to", "cc", "bcc"}),
}


def applied_fields(step: dict[str, Any]) -> set[str]:
    """Top-level step input fields its active enhancement points may set (`data.subject`
    sets `data`)."""
    return {
        target.split(".")[0]
        for point in step.get("enhancements") or []
        if isinstance(point, dict) and active_point(point)
        for target in point["apply"]
    }


def capabilities_of(spec: dict[str, Any]) -> Capabilities:
    """Capabilities of a stored (validated) spec."""
    calls: list[tuple[str, Any]] = []
    uses_ai = False
    for step in spec.get("steps") or []:
        activity = step.get("activity", "")
        step_input = step.get("input")
        applied = applied_fields(step)
        # An active enhancement point spends the runner's AI budget.
        uses_ai |= bool(applied)
        if applied & ROUTING_FIELDS.get(activity, frozenset()):
            step_input = None  # the AI's output may name the destination: any
        calls.append((activity, step_input))
        compensate = step.get("compensate")
        if compensate:  # compensations have no enhancement points
            calls.append((compensate.get("activity", ""), compensate.get("input")))
    activities = sorted({activity for activity, _ in calls})
    hosts = {host_of(i) for a, i in calls if a == "http.request"}
    return Capabilities(
        activities=activities,
        sends_mail=bool(SENDS_MAIL.intersection(activities)),
        reads_files=bool(READS_FILES.intersection(activities)),
        writes_files=bool(WRITES_FILES.intersection(activities)),
        calls_hosts=sorted(hosts),
        uses_ai=uses_ai or any(a.startswith("ai.") for a in activities),
    )


def host_of(step_input: Any) -> str:
    """The literal host of an http.request step's url, or "*" when an expression (or anything
    but a plain string) can choose it. Text after the authority (path, query) cannot change
    the host, so `https://api.example.com/{{ params.id }}` still calls api.example.com."""
    url = step_input.get("url") if isinstance(step_input, dict) else None
    if not isinstance(url, str):
        return ANY_HOST
    cut = min((i for i in (url.find(o) for o in _EXPRESSION_OPENERS) if i >= 0), default=None)
    literal = url if cut is None else url[:cut]
    scheme, sep, rest = literal.partition("://")
    if not sep or (cut is not None and not any(c in rest for c in "/?#")):
        return ANY_HOST  # the authority is not complete before the first expression
    try:
        host = urlsplit(literal).hostname
    except ValueError:
        return ANY_HOST
    return host or ANY_HOST
