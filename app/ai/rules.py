"""Rule-based text analysis: keyword classification, extractive summaries and pattern-based
entity extraction. Pure and deterministic: the `text.*` step activities and the AI tasks'
baselines (the non-AI path) both use them."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

METHOD = "baseline"
ENTITY_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "url": re.compile(r"\bhttps?://[^\s<>\"')]+"),
    "phone": re.compile(r"(?<!\w)\+?\d{1,3}?[\s.-]?\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)"),
    "date": re.compile(
        r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|"
        r"Aug|Sep|Oct|Nov|Dec)[a-z]* \d{4})\b"
    ),
    "money": re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)? ?(?:USD|EUR|GBP)\b)"),
    "percent": re.compile(r"\b\d+(?:\.\d+)?\s?%"),
}
STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were will with we you your our they their not but if then than so such can".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_WORD = re.compile(r"[a-z0-9']+")


def classify(
    text: str,
    categories: list[str],
    keywords: dict[str, list[str]] | None = None,
    default: str | None = None,
) -> dict[str, Any]:
    """The category whose name and keywords occur most often (whole words, any case)."""
    words = Counter(_WORD.findall(text.lower()))
    scores: dict[str, int] = {}
    for category in categories:
        terms = {category.lower(), *(k.lower() for k in (keywords or {}).get(category, []))}
        scores[category] = sum(words[t] if " " not in t else text.lower().count(t) for t in terms)
    best = max(categories, key=lambda c: scores[c])  # max keeps the first of equal scores
    if scores[best] == 0:
        best = default if default in categories else ("other" if "other" in categories else best)
    return {"category": best, "scores": scores, "method": METHOD}


def summarize(text: str, max_sentences: int = 3, max_chars: int = 500) -> dict[str, Any]:
    """The highest-scoring sentences (by frequency of their content words), in text order."""
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    freq = Counter(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS)

    def score(sentence: str) -> float:
        words = [w for w in _WORD.findall(sentence.lower()) if w not in STOPWORDS]
        return sum(freq[w] for w in words) / (len(words) or 1)

    ranked = sorted(range(len(sentences)), key=lambda i: (-score(sentences[i]), i))
    chosen = sorted(ranked[:max_sentences])
    summary = " ".join(sentences[i] for i in chosen)
    if len(summary) > max_chars:
        cut = summary[: max_chars - 1]
        summary = (cut[: cut.rfind(" ")] if " " in cut else cut).rstrip(",;: ") + "…"
    return {"summary": summary, "sentences": len(chosen), "method": METHOD}


def extract_entities(text: str, types: list[str] | None = None) -> dict[str, Any]:
    """Entities of the requested types found by pattern; each one's text occurs in the input."""
    found = []
    for kind in types or list(ENTITY_PATTERNS):
        for match in ENTITY_PATTERNS[kind].finditer(text):
            value = match.group(0).rstrip(".,;:!?") if kind == "url" else match.group(0)
            start = match.start()
            found.append({"type": kind, "text": value, "start": start, "end": start + len(value)})
    found.sort(key=lambda e: (e["start"], e["type"]))
    return {"entities": found, "method": METHOD}


SENTENCE = _SENTENCE
