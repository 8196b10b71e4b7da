"""Load the CheXpert mention / unmention phrase lists shipped under ``data/phrases``.

The files are the original chexpert-labeler files, unchanged (MIT, see ``data/LICENSE``). Their
semantics are reproduced exactly (docs/labeler.md §2.1-2.2) because every label depends on them:
each line is an *unescaped, unanchored* Python regex, ``_`` stands for a space, and the Cardiomegaly
/ Enlarged Cardiomediastinum unmentions are generated in code — including the double-space quirk
that makes the generated `` mediastinum`` unmentions unmatchable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

#: Where the shipped data files live (package data ``pipeline.labeler/data/**``).
DATA_DIR = Path(str(resources.files("pipeline.labeler") / "data"))

#: The 12 positional prefixes of the generated unmentions (docs/labeler.md §2.2).
POSITIONAL_PREFIXES: tuple[str, ...] = tuple(
    base + side
    for base in ("over the", "overly the", "in the")
    for side in ("", " superior", " left", " right")
)


def observation_name(stem: str) -> str:
    """File stem -> observation name, as the original does: ``lung_opacity`` -> ``Lung Opacity``."""
    return stem.replace("_", " ").title()


def read_phrase_file(path: Path) -> list[str]:
    """One phrase per line; ``_`` becomes a space.

    Like the original, a line is kept when the *raw* line is truthy, so a blank line would yield
    an empty (match-everything) phrase; the shipped files contain none.
    """
    phrases = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line:
                phrases.append(line.strip().replace("_", " "))
    return phrases


def _read_dir(directory: Path) -> dict[str, list[str]]:
    # Sorted for determinism; the original used filesystem order, which never affects labels.
    return {observation_name(p.stem): read_phrase_file(p) for p in sorted(directory.glob("*.txt"))}


def generate_unmentions(mentions: dict[str, list[str]]) -> dict[str, list[str]]:
    """The code-generated unmentions for Cardiomegaly and Enlarged Cardiomediastinum.

    They *replace* any file list for those two observations. The EC mention ``" mediastinum"``
    keeps its leading space, so its unmentions contain a double space and never match
    whitespace-normalised text (bug-for-bug, docs/labeler.md §2.2).
    """
    generated: dict[str, list[str]] = {}
    cardio = [
        m
        for m in mentions.get("Cardiomegaly", [])
        if m not in ("cardiomegaly", "cardiac enlargement")
    ]
    generated["Cardiomegaly"] = [
        f"{prefix} {m.replace('the ', '')}" for m in cardio for prefix in POSITIONAL_PREFIXES
    ]
    generated["Enlarged Cardiomediastinum"] = [
        f"{prefix} {m}"
        for m in mentions.get("Enlarged Cardiomediastinum", [])
        for prefix in POSITIONAL_PREFIXES
    ]
    return generated


@dataclass(frozen=True)
class PhraseSet:
    """Mention and unmention phrases per observation, with compiled regexes."""

    mentions: dict[str, list[str]]
    unmentions: dict[str, list[str]]
    mention_regexes: dict[str, list[tuple[str, re.Pattern[str]]]] = field(repr=False)
    unmention_regexes: dict[str, list[re.Pattern[str]]] = field(repr=False)

    @property
    def observations(self) -> list[str]:
        return list(self.mentions)

    def count_mentions(self) -> int:
        return sum(len(v) for v in self.mentions.values())


def build_phrase_set(mention_dir: Path, unmention_dir: Path) -> PhraseSet:
    """Read both directories and compile every phrase as the original does."""
    mentions = _read_dir(mention_dir)
    unmentions = _read_dir(unmention_dir)
    unmentions.update(generate_unmentions(mentions))
    return PhraseSet(
        mentions=mentions,
        unmentions=unmentions,
        mention_regexes={o: [(p, re.compile(p)) for p in ps] for o, ps in mentions.items()},
        unmention_regexes={o: [re.compile(p) for p in ps] for o, ps in unmentions.items()},
    )


@lru_cache(maxsize=1)
def default_phrases() -> PhraseSet:
    """The shipped chexpert-labeler phrase set (cached: loaded once per process)."""
    return build_phrase_set(DATA_DIR / "phrases" / "mention", DATA_DIR / "phrases" / "unmention")


def with_changed_mentions(phrases: PhraseSet, removed_dir: Path, added_dir: Path) -> PhraseSet:
    """``phrases`` less the mention phrases listed in ``removed_dir``, plus those in ``added_dir``.

    Both folders hold one ``<observation>.txt`` per observation (a missing folder changes
    nothing). A removed phrase must be a mention phrase of that observation and an added one
    must not be, spelled as in the original's files, so that a typo or an edited phrase file is
    an error and not a no-op. Unmentions are kept as they are.
    """
    removed = _read_dir(removed_dir) if removed_dir.is_dir() else {}
    added = _read_dir(added_dir) if added_dir.is_dir() else {}
    for observation, listed in removed.items():
        unknown = [p for p in listed if p not in phrases.mentions.get(observation, [])]
        if unknown:
            raise ValueError(f"{removed_dir}: {unknown} are not mention phrases of {observation!r}")
    for observation, listed in added.items():
        if observation not in phrases.mentions:
            raise ValueError(f"{added_dir}: {observation!r} is not an observation")
        present = [p for p in listed if p in phrases.mentions[observation]]
        if present:
            raise ValueError(
                f"{added_dir}: {present} are already mention phrases of {observation!r}"
            )
    mentions = {
        o: [p for p in ps if p not in removed.get(o, [])] + added.get(o, [])
        for o, ps in phrases.mentions.items()
    }
    return PhraseSet(
        mentions=mentions,
        unmentions=phrases.unmentions,
        mention_regexes={o: [(p, re.compile(p)) for p in ps] for o, ps in mentions.items()},
        unmention_regexes=phrases.unmention_regexes,
    )


def without_unmentions(phrases: PhraseSet, removed_dir: Path) -> PhraseSet:
    """``phrases`` less the unmention phrases listed in ``removed_dir/<observation>.txt``.

    Each listed phrase must be one of that observation's unmentions (a typo or an edited
    phrase file is an error, not a no-op); a missing folder changes nothing.
    """
    removed = _read_dir(removed_dir) if removed_dir.is_dir() else {}
    for observation, listed in removed.items():
        unknown = [p for p in listed if p not in phrases.unmentions.get(observation, [])]
        if unknown:
            raise ValueError(
                f"{removed_dir}: {unknown} are not unmention phrases of {observation!r}"
            )
    unmentions = {
        o: [p for p in ps if p not in removed.get(o, [])] for o, ps in phrases.unmentions.items()
    }
    return PhraseSet(
        mentions=phrases.mentions,
        unmentions=unmentions,
        mention_regexes=phrases.mention_regexes,
        unmention_regexes={o: [re.compile(p) for p in ps] for o, ps in unmentions.items()},
    )


@lru_cache(maxsize=1)
def plus_phrases() -> PhraseSet:
    """The opt-in ``chexpert_plus`` phrase set: the original's, changed by ``data/phrases_plus``.

    Unmentions are the original's, including the generated ones (they come from the
    Cardiomegaly / Enlarged Cardiomediastinum mentions, which plus does not change), less those
    listed in ``unmention_removed``.
    """
    plus = DATA_DIR / "phrases_plus"
    changed = with_changed_mentions(
        default_phrases(), plus / "mention_removed", plus / "mention_added"
    )
    return without_unmentions(changed, plus / "unmention_removed")


#: The phrase set of each label backend (the rules are in ``detect.BACKENDS``).
BACKEND_PHRASES = {"chexpert": default_phrases, "chexpert_plus": plus_phrases}


def backend_phrases(backend: str) -> PhraseSet:
    """The phrase set of a label backend; an unknown name is an error that lists the choices."""
    if backend not in BACKEND_PHRASES:
        raise ValueError(
            f"unknown labeler backend {backend!r}; choose one of {sorted(BACKEND_PHRASES)}"
        )
    return BACKEND_PHRASES[backend]()
