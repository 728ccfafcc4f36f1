"""optimize_timing: when to send a message to one user, within a window after `now`.

The caller passes `now` (workflows must be deterministic), so the result depends on the input
only. Times are local to the user's IANA time zone (zoneinfo): a preferred hour that a DST
change skips lands on the first instant after the gap; a repeated hour means its first occurrence.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.ai.contracts import InvalidOutput
from app.ai.tasks.base import BaseTask, require_object, require_text, truncate

DEFAULT_WINDOW_HOURS = 48
BUSINESS_HOUR = 10  # the fallback send hour, local time
MAX_REASON_CHARS = 300


def parse_instant(value: str) -> datetime | None:
    """An ISO-8601 date-time with an offset ("Z" or "+02:00"), in UTC; None otherwise."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def at_local(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """`hour`:00 local on `day` as a UTC instant (fold=0: the first of a repeated hour)."""
    return datetime.combine(day, time(hour), tzinfo=tz).astimezone(UTC)


def next_local_hour(now: datetime, hour: int, tz: ZoneInfo) -> datetime:
    """The first `hour`:00 local strictly after `now`."""
    today = now.astimezone(tz).date()
    for days in range(3):  # today, tomorrow, or the day after across a DST change
        candidate = at_local(today + timedelta(days=days), hour, tz)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a local hour recurs within three days")


def next_business_day(now: datetime, tz: ZoneInfo) -> datetime:
    """BUSINESS_HOUR local on the first Monday-to-Friday after the local date of `now`."""
    day = now.astimezone(tz).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return at_local(day, BUSINESS_HOUR, tz)


def next_hour_boundary(now: datetime, tz: ZoneInfo) -> datetime:
    """The next full hour of local time after `now` (at most an hour away)."""
    local = now.astimezone(tz)
    into_hour = timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    return now - into_hour + timedelta(hours=1)


class OptimizeTiming(BaseTask):
    """Pick a send time from the user's past engagement hours and time zone."""

    name = "optimize_timing"
    instructions = (
        "Choose when to send a message to a user so they are most likely to engage. "
        "`engagement_hours` are local hours (0-23, in `timezone`) at which the user engaged "
        "before. `send_at` must be after `now` and no later than `latest`, as an ISO-8601 UTC "
        "date-time ending in Z (for example 2024-05-01T08:00:00Z); `reason` is one short "
        "sentence."
    )
    input_schema = {
        "type": "object",
        "required": ["timezone", "now"],
        "additionalProperties": False,
        "properties": {
            "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
            "engagement_hours": {
                "type": "array",
                "maxItems": 10_000,
                "items": {"type": "integer", "minimum": 0, "maximum": 23},
            },
            "now": {"type": "string", "format": "date-time", "maxLength": 64},
            "window_hours": {"type": "integer", "minimum": 1, "maximum": 24 * 31},
        },
    }
    output_schema = {
        "type": "object",
        "required": ["send_at", "reason"],
        "additionalProperties": False,
        "properties": {
            "send_at": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
        },
    }

    def input_problems(self, input: dict[str, Any]) -> list[str]:
        problems = []
        if zone(input["timezone"]) is None:
            problems.append(f"$.timezone: {input['timezone']!r} is not an IANA time zone")
        if parse_instant(input["now"]) is None:
            problems.append("$.now: not an ISO-8601 date-time with an offset (e.g. ...Z)")
        return problems

    def _context(self, input: dict[str, Any]) -> tuple[datetime, ZoneInfo, datetime]:
        """(now, zone, latest allowed send time) of a checked input."""
        now, tz = parse_instant(input["now"]), zone(input["timezone"])
        assert now is not None and tz is not None  # check_input guarantees both
        window = timedelta(hours=input.get("window_hours", DEFAULT_WINDOW_HOURS))
        return now, tz, now + window

    def prompt_data(self, input: dict[str, Any]) -> dict[str, Any]:
        now, tz, latest = self._context(input)
        return {
            "timezone": input["timezone"],
            "now": format_instant(now),
            "now_local": now.astimezone(tz).strftime("%Y-%m-%d %H:%M %A"),
            "latest": format_instant(latest),
            "engagement_hours": input.get("engagement_hours", []),
        }

    def validate(self, input: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        self.check_input(input)
        now, _, latest = self._context(input)
        output = require_object(output)
        raw = output.get("send_at")
        send_at = parse_instant(raw) if isinstance(raw, str) else None
        if send_at is None:
            raise InvalidOutput("'send_at' is not an ISO-8601 date-time with an offset")
        send_at = send_at.replace(microsecond=0)  # what format_instant keeps
        if not now < send_at <= latest:
            raise InvalidOutput(
                f"send_at {format_instant(send_at)} is not after now and within the window"
            )
        reason = truncate(require_text(output, "reason"), MAX_REASON_CHARS)
        return {"send_at": format_instant(send_at), "reason": reason}

    def baseline(self, input: dict[str, Any]) -> dict[str, Any]:
        """The next time of the user's most frequent engagement hour (earliest on ties), else
        BUSINESS_HOUR on the next business day (or the next BUSINESS_HOUR when that is past the
        window); when the choice is still past the window, the next full local hour."""
        self.check_input(input)
        now, tz, latest = self._context(input)
        counts = Counter(input.get("engagement_hours", []))
        if counts:
            hour = min(counts, key=lambda h: (-counts[h], h))
            send_at = next_local_hour(now, hour, tz)
            reason = f"the user engaged most often at {hour:02d}:00 local time"
        else:
            send_at = next_business_day(now, tz)
            reason = f"no engagement history: {BUSINESS_HOUR}:00 local on the next business day"
            if send_at > latest:  # e.g. Friday afternoon with a 48-hour window
                send_at = next_local_hour(now, BUSINESS_HOUR, tz)
                reason = f"no engagement history: the next {BUSINESS_HOUR}:00 local"
        if send_at > latest:  # a window shorter than a day
            send_at = next_hour_boundary(now, tz)
            reason += " is past the window, so the next full hour"
        return {"send_at": format_instant(send_at), "reason": reason}
