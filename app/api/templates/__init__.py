"""Template GraphQL: the Template node and its parts, queries and mutations."""

from app.api.templates.mutations import TemplateMutation, TemplateResult
from app.api.templates.queries import TemplateQuery, TemplateValidation, load_template_node
from app.api.templates.types import (
    Template,
    TemplateDiff,
    TemplateOrder,
    TemplateVersion,
    TemplateVisibility,
)

__all__ = [
    "Template",
    "TemplateDiff",
    "TemplateMutation",
    "TemplateOrder",
    "TemplateQuery",
    "TemplateResult",
    "TemplateValidation",
    "TemplateVersion",
    "TemplateVisibility",
    "load_template_node",
]
