"""Helpers for the template tests: specs, the example documents, and lifecycle shortcuts."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

from app.api.relay import from_global_id
from app.templates.review import CatalogReview
from tests.support import GraphQLClient

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


def op(name: str) -> str:
    return (OPS / f"{name}.graphql").read_text()


def unique_name(prefix: str = "tpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_spec(name: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A small valid spec: one data.transform step over `rows`."""
    spec: dict[str, Any] = {
        "name": name or unique_name(),
        "title": "Sort rows",
        "description": "Sorts rows by a field.",
        "tags": ["test"],
        "parameters": {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {"rows": {"type": "array"}},
        },
        "steps": [
            {
                "id": "sort",
                "activity": "data.transform",
                "input": {"data": "{{ params.rows }}", "ops": [{"op": "sort", "by": "v"}]},
            }
        ],
        "example_params": {"rows": [{"v": 2}, {"v": 1}]},
    }
    spec.update(copy.deepcopy(overrides))
    return spec


async def create(
    client: GraphQLClient, spec: dict[str, Any], visibility: str = "PRIVATE"
) -> dict[str, Any]:
    data = await client.data(
        op("CreateTemplate"), {"input": {"spec": spec, "visibility": visibility}}
    )
    return data["createTemplate"]


async def update_draft(client: GraphQLClient, template_id: str, spec: dict[str, Any]) -> dict:
    data = await client.data(
        op("UpdateTemplateDraft"), {"input": {"templateId": template_id, "spec": spec}}
    )
    return data["updateTemplateDraft"]


async def publish(client: GraphQLClient, template_id: str) -> dict[str, Any]:
    data = await client.data(op("PublishTemplate"), {"input": {"templateId": template_id}})
    return data["publishTemplate"]


async def deprecate(client: GraphQLClient, template_id: str, version: int) -> dict[str, Any]:
    data = await client.data(
        op("DeprecateTemplateVersion"),
        {"input": {"templateId": template_id, "version": version}},
    )
    return data["deprecateTemplateVersion"]


async def share(
    client: GraphQLClient, template_id: str, names: list[str], revoke: bool = False
) -> dict[str, Any]:
    data = await client.data(
        op("ShareTemplate"),
        {"input": {"templateId": template_id, "tenantNames": names, "revoke": revoke}},
    )
    return data["shareTemplate"]


async def published(
    client: GraphQLClient, spec: dict[str, Any], visibility: str = "PRIVATE"
) -> dict[str, Any]:
    """Create and publish version 1; returns the created template."""
    created = await create(client, spec, visibility)
    assert created["__typename"] == "Template", created
    done = await publish(client, created["id"])
    assert done["__typename"] == "Template", done
    return created


async def start(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    data = await client.data(op("StartExecution"), {"input": input})
    return data["startExecution"]


async def accept(client: GraphQLClient, template_id: str, version: int) -> dict[str, Any]:
    data = await client.data(
        op("AcceptTemplate"), {"input": {"templateId": template_id, "version": version}}
    )
    return data["acceptTemplate"]


async def approve(sessions: Any, template_id: str, version: int) -> None:
    """The platform operator approves a version for the public catalog (what
    `wfs template approve` calls)."""
    async with sessions() as session:
        await CatalogReview(session).approve(from_global_id(template_id, "Template")[1], version)
        await session.commit()


async def set_visibility(client: GraphQLClient, template_id: str, visibility: str) -> dict:
    data = await client.data(
        op("SetTemplateVisibility"),
        {"input": {"templateId": template_id, "visibility": visibility}},
    )
    return data["setTemplateVisibility"]
