"""SQLAlchemy ORM tables. Importing this package registers every table on Base.metadata."""

from app.models.ai_settings import TenantAiSettings
from app.models.ai_usage import AiUsage, AiUsageDaily, AiUsageRepeatsDaily
from app.models.analytics import (
    ExecutionRollup,
    RollupState,
    StepAttempt,
    StepUsageRollup,
    TemplateCostEstimate,
)
from app.models.base import Base
from app.models.execution import Execution, ExecutionEvent
from app.models.idempotency import StepIdempotency
from app.models.notification import Notification, NotificationCounter
from app.models.sla import SlaBreach, TemplateSla
from app.models.sla_rollup import SlaRollup, SlaRollupState, SlaRollupTarget
from app.models.template import Template, TemplateVersion
from app.models.tenant import ROLES, TIERS, ApiKey, PlatformKey, Tenant
from app.models.tenant_plugin import TenantPlugin
from app.models.webhook import Webhook, WebhookDelivery

__all__ = [
    "ROLES",
    "TIERS",
    "AiUsage",
    "AiUsageDaily",
    "AiUsageRepeatsDaily",
    "ApiKey",
    "Base",
    "Execution",
    "ExecutionEvent",
    "ExecutionRollup",
    "Notification",
    "NotificationCounter",
    "PlatformKey",
    "SlaBreach",
    "SlaRollup",
    "SlaRollupState",
    "SlaRollupTarget",
    "RollupState",
    "StepAttempt",
    "StepIdempotency",
    "StepUsageRollup",
    "Template",
    "TemplateCostEstimate",
    "TemplateSla",
    "TemplateVersion",
    "Tenant",
    "TenantAiSettings",
    "TenantPlugin",
    "Webhook",
    "WebhookDelivery",
]
