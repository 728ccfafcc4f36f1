"""Rule-based text analysis: keyword classification, extractive summaries and pattern-based
entity extraction. Pure and deterministic: the `text.*` step activities and the AI tasks'
baselines (the non-AI path) both use them.

Their input is tenant text of up to a megabyte, so every function here is linear in it. The
callers run them on the CPU pool, but that alone does not protect the event loop: one call of
a compiled regex holds the GIL until it returns, so a slow pattern stalls every thread."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

METHOD = "baseline"


@dataclass(frozen=True)
class EntityPattern:
    """An entity regex that finds its matches in time linear in the text's length.

    Python's `re` backtracks, and `finditer` retries a pattern at every position: a pattern
    that first consumes a run of characters and then needs something after it (`local@`,
    `1,000 USD`) reads the whole run again from each position inside it, which is quadratic
    on `"a." * n` (40 KB took seconds). For such a pattern `start` finds the positions where a
    match can begin and `run` the run a failed start belongs to: every later start in that run
    reaches the same end and fails too, so the scan jumps past the run. The matches are exactly
    those of `pattern.finditer` (same leftmost-first order), each run is read a bounded number
    of times. Patterns built only of bounded or self-delimiting parts leave `start` unset.
    """

    pattern: re.Pattern[str]
    start: re.Pattern[str] | None = None
    run: re.Pattern[str] | None = None

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        if self.start is None or self.run is None:
            yield from self.pattern.finditer(text)
            return
        pos = 0
        while (candidate := self.start.search(text, pos)) is not None:
            at = candidate.start()
            match = self.pattern.match(text, at)
            if match is not None:
                yield match
                pos = max(match.end(), at + 1)
                continue
            skipped = self.run.match(text, at)
            pos = max(skipped.end() if skipped else at, at + 1)


# Every quantified part below is either bounded ({1,3}), or stops at a character class its
# neighbour cannot match, or is guarded by `start`/`run` above; tests/security/test_sec_cpu.py
# runs each on 200 KB of adversarial text.
ENTITY_PATTERNS: dict[str, EntityPattern] = {
    "email": EntityPattern(
        re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
        start=re.compile(r"\b(?=[\w.+-])"),
        run=re.compile(r"[\w.+-]+"),  # the local part can only end where the run ends
    ),
    "url": EntityPattern(re.compile(r"\bhttps?://[^\s<>\"')]+")),
    "phone": EntityPattern(
        re.compile(r"(?<!\w)\+?\d{1,3}?[\s.-]?\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)")
    ),
    "date": EntityPattern(
        re.compile(
            r"\b(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|"
            r"Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{4})\b"
        )
    ),
    "money": EntityPattern(
        re.compile(r"(?:[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)? ?(?:USD|EUR|GBP)\b)"),
        start=re.compile(r"[$€£]|\b(?=\d)"),
        # A currency symbol is its own run; digits and commas can only be followed by the
        # amount's tail where their run ends.
        run=re.compile(r"[$€£]|[\d,]+"),
    ),
    "percent": EntityPattern(re.compile(r"\b\d+(?:\.\d+)?\s?%")),
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
    lowered = text.lower()  # once: per multi-word term it would copy the whole text again
    words = Counter(_WORD.findall(lowered))
    scores: dict[str, int] = {}
    for category in categories:
        terms = {category.lower(), *(k.lower() for k in (keywords or {}).get(category, []))}
        scores[category] = sum(words[t] if " " not in t else lowered.count(t) for t in terms)
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
