"""Templates every tenant can run (PUBLIC, owned by the platform); `wfs dev` and `wfs seed`
publish them."""

from __future__ import annotations

from typing import Any

ORDER_SUMMARY: dict[str, Any] = {
    "name": "order-summary",
    "title": "Order summary",
    "description": (
        "Normalises an order's line items, holds for a short durable wait, then totals "
        "quantities and value. A small template that shows every step event live."
    ),
    "tags": ["demo", "data"],
    "parameters": {
        "type": "object",
        "required": ["customer", "items"],
        "additionalProperties": False,
        "properties": {
            "customer": {"type": "string", "minLength": 1, "maxLength": 200},
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {
                    "type": "object",
                    "required": ["sku", "qty", "price"],
                    "additionalProperties": False,
                    "properties": {
                        "sku": {"type": "string", "minLength": 1},
                        "qty": {"type": "integer", "minimum": 1},
                        "price": {"type": "number", "minimum": 0},
                    },
                },
            },
            "wait_seconds": {"type": "number", "minimum": 0, "maximum": 60, "default": 2},
        },
    },
    "steps": [
        {
            "id": "normalize",
            "title": "Normalise line items",
            "activity": "data.transform",
            "input": {
                "data": "{{ params['items'] }}",
                "ops": [{"op": "upper", "field": "sku"}, {"op": "sort", "by": "sku"}],
            },
        },
        {
            "id": "hold",
            "title": "Hold before totalling",
            "activity": "wait.timer",
            "input": {"seconds": "{{ params.wait_seconds | default(2) }}"},
        },
        {
            "id": "totals",
            "title": "Total quantities and value",
            "activity": "data.aggregate",
            "input": {"data": "{{ steps.normalize }}", "fields": ["qty"], "weight": "price"},
        },
    ],
    "output": {
        "customer": "{{ params.customer }}",
        "items": "{{ steps.normalize }}",
        "total_qty": "{{ steps.totals.qty.sum }}",
        "total_value": "{{ steps.totals.qty.weighted_sum }}",
    },
    "example_params": {
        "customer": "Ada Lovelace",
        "items": [
            {"sku": "widget-b", "qty": 2, "price": 9.5},
            {"sku": "widget-a", "qty": 1, "price": 20},
        ],
        "wait_seconds": 2,
    },
}

STANDARD_TEMPLATES: list[dict[str, Any]] = [ORDER_SUMMARY]
