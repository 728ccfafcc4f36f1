"""The tier table: the plan tiers, in order, and what each one includes, written once.

A tenant's tier is what it pays for; everything a tier entitles to is read from here: the
executions it runs at once, the Temporal task priority of its workflows, its default and
maximum monthly AI budget, its daily mail and its storage quota. The models its AI tasks are
routed to (and so the models an admin may choose) are data in the model catalogue
(app/ai_catalog.json, AI_CATALOG), since providers retire and reprice models more often than
plans change. Operators tune the per-deployment ones
through settings (TIER_CONCURRENCY, AI_TIER_BUDGETS_USD, AI_TIER_MAX_BUDGETS_USD,
EMAIL_DAILY_QUOTA, STORAGE_QUOTA_BYTES), whose defaults come from this table.

Entitlements only grow with the tier (an upgrade never takes anything away), and code compares
tiers by their order here. This module imports nothing of the application, so the ORM tables,
settings and every domain can read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class TierName(StrEnum):
    """The tiers, lowest first. Members are their lower-case names (`TierName.PRO == "pro"`)."""

    FREE = "free"
    PRO = "pro"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class Tier:
    """What one tier includes."""

    name: TierName
    concurrency: int  # executions started and not finished at once; more wait as PENDING
    task_priority: int  # Temporal task priority key of its workflows: 1 is served first
    ai_budget_usd: Decimal  # monthly AI budget when the tenant set none
    ai_budget_max_usd: Decimal  # the most a tenant admin may set (setBudget)
    email_daily_quota: int  # messages `email.send` sends per UTC day
    storage_quota_bytes: int  # bytes under the tenant's storage root


TIER_TABLE: tuple[Tier, ...] = (
    Tier(
        name=TierName.FREE,
        concurrency=5,
        task_priority=4,
        ai_budget_usd=Decimal("0"),
        ai_budget_max_usd=Decimal("0"),
        email_daily_quota=100,
        storage_quota_bytes=100 * 2**20,
    ),
    Tier(
        name=TierName.PRO,
        concurrency=25,
        task_priority=3,
        ai_budget_usd=Decimal("10"),
        ai_budget_max_usd=Decimal("100"),
        email_daily_quota=5_000,
        storage_quota_bytes=5 * 2**30,
    ),
    Tier(
        name=TierName.PREMIUM,
        concurrency=100,
        task_priority=2,
        ai_budget_usd=Decimal("100"),
        ai_budget_max_usd=Decimal("1000"),
        email_daily_quota=50_000,
        storage_quota_bytes=50 * 2**30,
    ),
    Tier(
        name=TierName.ENTERPRISE,
        concurrency=500,
        task_priority=1,
        ai_budget_usd=Decimal("1000"),
        ai_budget_max_usd=Decimal("100000"),
        email_daily_quota=500_000,
        storage_quota_bytes=500 * 2**30,
    ),
)
# The names as plain strings, lowest first (the tenants table's CHECK constraint spells them).
TIERS: tuple[str, ...] = tuple(t.name.value for t in TIER_TABLE)
# A template's AI enhancement point runs from this tier up unless it names another (min_tier).
DEFAULT_ENHANCEMENT_TIER: str = TierName.PREMIUM.value

_BY_NAME = {t.name.value: t for t in TIER_TABLE}


def get_tier(name: str) -> Tier | None:
    """The tier called `name`, or None for a name that is not a tier."""
    return _BY_NAME.get(name)


def per_tier(value: Callable[[Tier], T]) -> dict[str, T]:
    """{tier name: value(tier)} in tier order: the shape of the per-tier settings."""
    return {t.name.value: value(t) for t in TIER_TABLE}


def priority_key(name: str) -> int:
    """The Temporal task priority key of a tier's workflows; a name that is not a tier gets
    the lowest, after every tier."""
    known = get_tier(name)
    return known.task_priority if known else len(TIER_TABLE) + 1
