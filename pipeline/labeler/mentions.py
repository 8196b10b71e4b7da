"""Mention extraction: phrase regexes with unmention filtering (docs/labeler.md §2.3).

Kept faithful to the original on purpose: no word boundaries (``tube`` fires inside
``tuberculosis``), every match is its own mention, overlaps and duplicates are kept, and a
match is dropped only when it overlaps a match of an unmention phrase *of the same
observation*. These quirks are part of the labels the original produces.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.labeler.phrases import PhraseSet


@dataclass(frozen=True)
class Mention:
    """One phrase match in a sentence; ``start``/``end`` are sentence-relative."""

    observation: str
    term: str
    text: str
    start: int
    end: int


def extract_mentions(sentence: str, phrases: PhraseSet) -> list[Mention]:
    """All mentions in one cleaned sentence, in the original's order.

    Order: observation, then phrase, then match position — which only matters for the
    per-mention output, never for the aggregated labels.
    """
    found: list[Mention] = []
    for observation, regexes in phrases.mention_regexes.items():
        blocked: list[tuple[int, int]] | None = None
        for term, regex in regexes:
            for match in regex.finditer(sentence):
                start, end = match.span()
                if blocked is None:
                    blocked = [
                        u.span()
                        for unmention in phrases.unmention_regexes.get(observation, ())
                        for u in unmention.finditer(sentence)
                    ]
                if any(start < u_end and end > u_start for u_start, u_end in blocked):
                    continue
                found.append(Mention(observation, term, match.group(), start, end))
    return found
