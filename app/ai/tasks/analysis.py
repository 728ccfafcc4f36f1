"""Tasks that analyse a text: classify_content and extract_entities.

Their outputs only point into the input (a given category, verbatim entity texts), so
validation is a membership check and needs no sanitising.

Long texts: classify_content reads the first MAX_TEXT_CHARS characters (a document's category
shows in its beginning; the cut is recorded in the step's `ai` record); extract_entities refuses
a longer text, because a list of the entities of the first part would look complete and not be.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.ai import rules
from app.ai.contracts import InvalidOutput
from app.ai.tasks.base import TEXT_SCHEMA, BaseTask, require_object, text_size_problem

ENTITY_TYPES = (
    "email",
    "url",
    "phone",
    "date",
    "money",
    "percent",
    "person",
    "organization",
    "location",
)
MAX_ENTITIES = 500
MAX_ENTITY_CHARS = 1000  # one entity's text in a model's answer (each is searched in the text)
# Keyword scoring counts every multi-word term in the whole text: bound how many there are.
KEYWORDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": 200,
    "additionalProperties": {
        "type": "array",
        "maxItems": 100,
        "items": {"type": "string", "maxLength": 200},
    },
}


class ClassifyContent(BaseTask):
    """Pick one of the given categories for a text, with a confidence."""

    name = "classify_content"
    truncated_fields = ("text",)
    instructions = (
        "Classify `text` into exactly one of `categories` (copy the category's spelling). "
        "`keywords` (optional) lists words that hint at a category. If no category fits and "
        "`default` is given, answer `default`. `confidence` is your probability (0 to 1) that "
        "the category is right."
    )
    input_schema = {
        "type": "object",
        "required": ["text", "categories"],
        "additionalProperties": False,
        "properties": {
            "text": TEXT_SCHEMA,
            "categories": {
                "type": "array",
                "minItems": 1,
                "maxItems": 200,
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            "keywords": KEYWORDS_SCHEMA,
            "default": {"type": "string", "maxLength": 200},
        },
    }
    output_schema = {
        "type": "object",
        "required": ["category", "confidence"],
        "additionalProperties": False,
        "properties": {
            "category": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }

    def input_problems(self, input: dict[str, Any]) -> list[str]:
        seen: set[str] = set()
        problems = []
        for i, category in enumerate(input["categories"]):
            key = category.strip().casefold()
            if key in seen:
                problems.append(f"$.categories[{i}]: {category!r} repeats another category")
            seen.add(key)
        return problems

    def reply_schema(self, input: dict[str, Any]) -> dict[str, Any]:
        """The categories as an enum: a schema-following model cannot invent one."""
        properties = self.output_schema["properties"]
        return {
            **self.output_schema,
            "properties": {
                **properties,
                "category": {"type": "string", "enum": input["categories"]},
            },
        }

    def prompt_data(self, input: dict[str, Any]) -> dict[str, Any]:
        data = {"text": input["text"], "categories": input["categories"]}
        for optional in ("keywords", "default"):
            if input.get(optional):
                data[optional] = input[optional]
        return data

    def validate(self, input: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        output = require_object(output)
        answer, confidence = output.get("category"), output.get("confidence")
        if not isinstance(answer, str):
            raise InvalidOutput("'category' must be a string")
        by_key = {c.strip().casefold(): c for c in input["categories"]}
        category = by_key.get(answer.strip().casefold())
        if category is None:
            # Says what was wrong, never the answer's text (it may echo the prompt).
            raise InvalidOutput(
                f"'category' is not one of the categories ({len(answer)} characters)"
            )
        # bool is an int in Python, but true/false is not a confidence.
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise InvalidOutput("'confidence' must be a number")
        if not 0 <= confidence <= 1:
            raise InvalidOutput(f"confidence {confidence} is outside [0, 1]")
        return {"category": category, "confidence": float(confidence)}

    def baseline(self, input: dict[str, Any]) -> dict[str, Any]:
        """Keyword rules; confidence is the winner's share of all keyword hits (0.0 if none)."""
        self.check_input(input)
        result = rules.classify(
            input["text"], input["categories"], input.get("keywords"), input.get("default")
        )
        scores: dict[str, int] = result["scores"]
        total = sum(scores.values())
        share = scores.get(result["category"], 0) / total if total else 0.0
        return {"category": result["category"], "confidence": round(share, 4)}


class ExtractEntities(BaseTask):
    """Find entities of the requested types; each must occur verbatim in the text."""

    name = "extract_entities"
    instructions = (
        "List the entities of the requested `types` that occur in `text`. Each entity's `text` "
        "must be copied exactly, character for character, from `text`; `type` is one of "
        "`types`. List each entity once, in order of appearance; an empty list if none."
    )
    input_schema = {
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": TEXT_SCHEMA,
            "types": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": list(ENTITY_TYPES)},
            },
        },
    }
    output_schema = {
        "type": "object",
        "required": ["entities"],
        "additionalProperties": False,
        "properties": {
            "entities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "text"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": list(ENTITY_TYPES)},
                        "text": {"type": "string"},
                    },
                },
            }
        },
    }

    def _types(self, input: dict[str, Any]) -> list[str]:
        return list(input.get("types") or ENTITY_TYPES)

    def input_problems(self, input: dict[str, Any]) -> list[str]:
        return text_size_problem(
            "text", input["text"], "extract_entities reads; split the text and extract each part"
        )

    def prompt_data(self, input: dict[str, Any]) -> dict[str, Any]:
        return {"text": input["text"], "types": self._types(input)}

    def validate(self, input: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        entities = require_object(output).get("entities")
        if not isinstance(entities, list):
            raise InvalidOutput("'entities' must be a list")
        if len(entities) > MAX_ENTITIES:
            raise InvalidOutput(f"more than {MAX_ENTITIES} entities")
        wanted, text = set(self._types(input)), input["text"]
        problems: list[str] = []
        found: list[dict[str, str]] = []
        for i, entity in enumerate(entities):
            kind = entity.get("type") if isinstance(entity, dict) else None
            value = entity.get("text") if isinstance(entity, dict) else None
            if not isinstance(kind, str) or not isinstance(value, str) or not value.strip():
                problems.append(f"entities[{i}] needs a string type and a non-empty text")
            elif len(value) > MAX_ENTITY_CHARS:
                problems.append(f"entities[{i}] text is longer than {MAX_ENTITY_CHARS} characters")
            elif kind.strip().lower() not in wanted:
                problems.append(f"entities[{i}] has a type that was not requested")
            elif value not in text:
                problems.append(f"entities[{i}] text does not occur in the text")
            else:
                found.append({"type": kind.strip().lower(), "text": value})
        if problems:
            raise InvalidOutput("; ".join(problems[:10]))
        return {"entities": _unique(found)}

    def baseline(self, input: dict[str, Any]) -> dict[str, Any]:
        """Pattern matches of the supported types; person/organization/location find none."""
        self.check_input(input)
        supported = [t for t in self._types(input) if t in rules.ENTITY_PATTERNS]
        if not supported:  # rules.extract_entities reads [] as "all types"
            return {"entities": []}
        result = rules.extract_entities(input["text"], supported)
        return {
            "entities": _unique({"type": e["type"], "text": e["text"]} for e in result["entities"])
        }


def _unique(entities: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """Entities without repeats of the same (type, text), first occurrence kept."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for entity in entities:
        key = (entity["type"], entity["text"])
        if key not in seen:
            seen.add(key)
            unique.append(entity)
    return unique
