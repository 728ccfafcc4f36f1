"""The rule-based text activities (the non-AI path of classify, summarise and extract)."""

from __future__ import annotations

import pytest

from app.settings import Settings
from app.steps.base import StepContext, StepInputError
from app.steps.text import TEXT_ACTIVITIES, classify, extract_entities, summarize

DOC = (
    "Invoice INV-2 from ACME Corp. Total due: $1,250.00 by 2026-12-01. "
    "Contact billing@acme.com or +1 555 123 4567. We paid 50% upfront. "
    "Details at https://acme.com/inv/2. The invoice covers consulting for the invoice period."
)


def test_classify_stays_inside_the_given_categories() -> None:
    out = classify(DOC, ["contract", "invoice", "other"], {"contract": ["agreement", "party"]})
    assert out["category"] == "invoice"
    assert out["scores"]["invoice"] == 3
    assert classify("hello there", ["invoice", "other"])["category"] == "other"
    assert classify("hello there", ["a", "b"], default="b")["category"] == "b"


def test_summarize_respects_its_limits_and_keeps_order() -> None:
    out = summarize(DOC, max_sentences=2, max_chars=400)
    assert out["sentences"] == 2
    picked = out["summary"]
    assert picked.startswith("Invoice INV-2") or DOC.index(picked.split(". ")[0]) >= 0
    assert len(summarize(DOC, max_sentences=5, max_chars=40)["summary"]) <= 40


def test_entities_are_found_and_occur_in_the_text() -> None:
    entities = extract_entities(DOC)["entities"]
    by_type = {e["type"]: e["text"] for e in entities}
    assert by_type == {
        "money": "$1,250.00",
        "date": "2026-12-01",
        "email": "billing@acme.com",
        "phone": "+1 555 123 4567",
        "percent": "50%",
        "url": "https://acme.com/inv/2",
    }
    for e in entities:
        assert DOC[e["start"] : e["end"]] == e["text"]
    assert [e["type"] for e in extract_entities(DOC, ["email"])["entities"]] == ["email"]


async def test_activities_validate_their_input() -> None:
    registry = {a.name: a for a in TEXT_ACTIVITIES}
    ctx = StepContext("t", "e", "s", 1, Settings(), None)
    run = registry["text.classify"].run
    assert run is not None
    with pytest.raises(StepInputError, match="categories"):
        await run({"text": "x", "categories": []}, ctx)
    assert (await run({"text": "an invoice", "categories": ["invoice"]}, ctx))[
        "category"
    ] == "invoice"
