"""The execution state machine: statuses, event types and which event may move which status.

One definition, used by the recorder (every transition is checked against `TRANSITIONS`),
control (what a tenant may ask of an execution in a given status), admission and the
reconciler (which executions wait for a slot, hold one, or should have a running workflow),
the models (the status check constraint, the partial index of slot holders) and the GraphQL
enums. Pure: no I/O, no SQLAlchemy, so every layer may import it.

    PENDING --STARTED--> RUNNING <--PAUSED/RESUMED--> PAUSED
       |                    |                            |
       +--------------------+---COMPLETED/FAILED/CANCELLED--> terminal
    FAILED --RETRIED--> PENDING (queued for its next run)

PENDING has two meanings told apart by the run id: queued (no workflow started for its
current run: admission may start it, a cancel ends it at once) and started (admission claimed
a slot and started, or is starting, the workflow, which records STARTED as its first act).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class EventType(StrEnum):
    CREATED = "CREATED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_FAILED = "STEP_FAILED"
    STEP_SKIPPED = "STEP_SKIPPED"
    COMPENSATING = "COMPENSATING"
    STEP_COMPENSATED = "STEP_COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    STEP_ENHANCED = "STEP_ENHANCED"
    STEP_PROGRESS = "STEP_PROGRESS"
    PAUSED = "PAUSED"
    RESUMED = "RESUMED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    RETRIED = "RETRIED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# Plain strings (what the database and the wire carry), in the order above.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})
# Started and not finished: the statuses whose workflow should exist on Temporal.
OPEN = frozenset({Status.RUNNING, Status.PAUSED})
ACTIVE = frozenset({Status.PENDING, *OPEN})  # not finished: may be cancelled


@dataclass(frozen=True)
class Transition:
    """An event may be recorded while the execution is in one of `before` and leaves it in
    the status it carries, which must be one of `after`."""

    before: frozenset[Status]
    after: frozenset[Status]


_STEP = Transition(OPEN, OPEN)  # step-level events keep RUNNING or PAUSED as the run has it
TRANSITIONS: dict[EventType, Transition] = {
    EventType.CREATED: Transition(frozenset({Status.PENDING}), frozenset({Status.PENDING})),
    EventType.QUEUED: Transition(frozenset({Status.PENDING}), frozenset({Status.PENDING})),
    EventType.STARTED: Transition(frozenset({Status.PENDING}), frozenset({Status.RUNNING})),
    EventType.STEP_STARTED: _STEP,
    EventType.STEP_COMPLETED: _STEP,
    EventType.STEP_FAILED: _STEP,
    EventType.STEP_SKIPPED: _STEP,
    EventType.COMPENSATING: _STEP,
    EventType.STEP_COMPENSATED: _STEP,
    EventType.COMPENSATION_FAILED: _STEP,
    EventType.STEP_ENHANCED: _STEP,
    EventType.STEP_PROGRESS: _STEP,
    EventType.PAUSED: Transition(frozenset({Status.RUNNING}), frozenset({Status.PAUSED})),
    EventType.RESUMED: Transition(frozenset({Status.PAUSED}), frozenset({Status.RUNNING})),
    EventType.CANCEL_REQUESTED: Transition(ACTIVE, ACTIVE),
    EventType.RETRIED: Transition(frozenset({Status.FAILED}), frozenset({Status.PENDING})),
    EventType.COMPLETED: Transition(OPEN, frozenset({Status.COMPLETED})),
    # A start that fails, a lost workflow (the reconciler) or a cancel of a queued execution
    # ends a PENDING one.
    EventType.FAILED: Transition(ACTIVE, frozenset({Status.FAILED})),
    EventType.CANCELLED: Transition(ACTIVE, frozenset({Status.CANCELLED})),
}


def refusal(current: str, event_type: str, new_status: str) -> str | None:
    """Why `event_type` leaving `new_status` may not be recorded on an execution that is
    `current`; None when it may. A late event of a finished run (an activity retried after
    the reconciler ended the execution, a step of the run before a retry) is refused so it
    cannot reopen or rewrite the execution."""
    rule = TRANSITIONS.get(EventType(event_type)) if event_type in EVENT_TYPES else None
    if rule is None:
        return f"unknown event type {event_type!r}"
    if current not in rule.before:
        return f"{event_type} cannot be recorded on a {current} execution"
    if new_status not in rule.after:
        return f"{event_type} cannot leave an execution {new_status}"
    return None


# Admission's two kinds of PENDING, told apart by the run id (see the module docstring).
def is_queued(status: str, run_id: str | None) -> bool:
    """Waiting for admission: no workflow started for its current run."""
    return status == Status.PENDING and run_id is None


def holds_slot(status: str, run_id: str | None) -> bool:
    """Counted against the tenant's concurrency: its workflow was started (or is being
    started) and has not ended. The reconciler watches exactly these."""
    return status in OPEN or (status == Status.PENDING and run_id is not None)


def _sql_list(statuses: frozenset[Status]) -> str:
    return ", ".join(f"'{s}'" for s in STATUSES if s in statuses)


# `holds_slot` in SQL, for the partial index that serves slot counts and the reconciler
# (app/models/execution.py; migration 0007 wrote the same text).
HOLDS_SLOT_SQL = (
    f"status IN ({_sql_list(OPEN)}) OR (status = '{Status.PENDING.value}' AND run_id IS NOT NULL)"
)
