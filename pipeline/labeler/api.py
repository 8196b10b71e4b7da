"""Public entry points: :func:`label_reports`, :func:`label_reports_csv` and the cached engine.

Speed comes from three things, none of which changes a label:

* **Sentence cache.** Every rule is sentence-local, so a sentence's mention labels are a pure
  function of its cleaned text. Radiology reports repeat sentences ("no pneumothorax.")
  constantly, so results are cached per cleaned sentence.
* **Parse only what matters.** Sentences without a mention, and sentences caught by the
  ``findings: no`` short-cut, are never parsed; the rest are parsed in one ``nlp.pipe`` batch.
* **Processes.** Large inputs are split into chunks labelled on several cores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.labeler.aggregate import (
    CHEXPERT_CONVENTIONS,
    RADIOLOGIST_CONVENTIONS,
    Conventions,
    aggregate,
    mention_label,
    write_labeled_csv,
)
from pipeline.labeler.clean import clean, extract_sections, split_sentences
from pipeline.labeler.detect import (
    RuleSet,
    backend_rules,
    default_rules,
    detect_sentence,
)
from pipeline.labeler.graph import GraphSource
from pipeline.labeler.mentions import extract_mentions
from pipeline.labeler.phrases import PhraseSet, backend_phrases, default_phrases
from pipeline.parallel import parallel_map
from pipeline.records import CHEXPERT_LABELS

#: (observation, matched text, label) for every mention of a sentence.
SentenceResult = tuple[tuple[str, str, float], ...]

#: Inputs at least this large are split over processes when ``workers > 1``.
PARALLEL_MIN_REPORTS = 2000
_CHUNK = 500


@dataclass
class Labeler:
    """The labeling engine: phrases + rules + a graph source + a bounded sentence cache.

    ``conventions`` say how mention labels become report labels (CheXpert's, or for
    ``chexpert_plus`` the radiologist indexers', see :data:`BACKEND_CONVENTIONS`).
    """

    phrases: PhraseSet = field(default_factory=default_phrases)
    rules: RuleSet = field(default_factory=default_rules)
    graph_source: GraphSource | None = None
    cache_size: int = 500_000
    cache: dict[str, SentenceResult] = field(default_factory=dict)
    conventions: Conventions = CHEXPERT_CONVENTIONS

    def _source(self) -> GraphSource:
        if self.graph_source is None:
            from pipeline.labeler.spacy_graph import SpacyGraphSource

            self.graph_source = SpacyGraphSource()
        return self.graph_source

    def warm_up(self) -> None:
        """Load the parser now (it is otherwise loaded at the first sentence that needs it)."""
        source = self._source()
        getattr(source, "nlp", None)

    def label_sentences(self, sentences: Sequence[str]) -> list[SentenceResult]:
        """Mention labels for cleaned sentences, parsing only uncached mention sentences.

        Results are collected for this call before they go into the cache: a full cache evicts
        its oldest entries while the batch is stored, and a sentence looked up earlier in the
        same batch may be one of them.
        """
        results: dict[str, SentenceResult] = {}
        pending: dict[str, list] = {}
        for sentence in sentences:
            if sentence in results or sentence in pending:
                continue
            cached = self.cache.get(sentence)
            if cached is not None:
                results[sentence] = cached
                continue
            mentions = extract_mentions(sentence, self.phrases)
            if not mentions or self.rules.shortcut(sentence):
                flags = detect_sentence(sentence, mentions, None, self.rules)
                results[sentence] = self._store(sentence, mentions, flags)
            else:
                pending[sentence] = mentions
        if pending:
            texts = list(pending)
            for text, graph in zip(texts, self._source().graphs(texts), strict=True):
                mentions = pending[text]
                try:
                    flags = detect_sentence(text, mentions, graph, self.rules)
                except Exception:  # the original logs and keeps the mentions as they are
                    flags = detect_sentence(text, mentions, None, self.rules)
                results[text] = self._store(text, mentions, flags)
        return [results[s] for s in sentences]

    def _store(self, sentence: str, mentions: list, flags: list) -> SentenceResult:
        """Cache one sentence's result (evicting the oldest entry when full) and return it."""
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        result = tuple(
            (m.observation, m.text, mention_label(f.negation, f.uncertainty))
            for m, f in zip(mentions, flags, strict=True)
        )
        self.cache[sentence] = result
        return result

    def label(
        self,
        texts: Sequence[object],
        sections_to_extract: Sequence[str] = (),
        extract_strict: bool = False,
    ) -> list[dict[str, float]]:
        """One ``{category: value}`` dict per report (see :func:`label_reports`)."""
        reports = []
        for text in texts:
            cleaned = clean(_as_text(text))
            if sections_to_extract:
                cleaned = extract_sections(cleaned, sections_to_extract, extract_strict)
            reports.append([s.text for s in split_sentences(cleaned)])
        flat = [s for sentences in reports for s in sentences]
        results = dict(zip(flat, self.label_sentences(flat), strict=True))
        return [
            aggregate((mention for s in sentences for mention in results[s]), self.conventions)
            for sentences in reports
        ]


def _as_text(value: object) -> str:
    """Missing values (NaN/None from CSV readers) are empty reports; anything else -> str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else str(value)


_DEFAULT: dict[str, Labeler] = {}

#: How each backend turns mention labels into report labels (``aggregate.Conventions``).
BACKEND_CONVENTIONS = {"chexpert": CHEXPERT_CONVENTIONS, "chexpert_plus": RADIOLOGIST_CONVENTIONS}


def backend_labeler(backend: str, graph_source: GraphSource | None = None) -> Labeler:
    """A fresh labeler with a backend's phrases, rules and aggregation conventions.

    An unknown backend is an error that lists the choices. ``graph_source`` lets several
    labelers share one loaded parser.
    """
    return Labeler(
        phrases=backend_phrases(backend),
        rules=backend_rules(backend),
        graph_source=graph_source,
        conventions=BACKEND_CONVENTIONS[backend],
    )


def default_labeler(backend: str = "chexpert") -> Labeler:
    """The process-wide labeler of a backend, so the model loads once and the cache stays warm.

    Backends share the spaCy model; each keeps its own sentence cache (labels differ).
    """
    if backend not in _DEFAULT:
        shared = next(iter(_DEFAULT.values()), None)
        source = shared._source() if shared is not None else None
        _DEFAULT[backend] = backend_labeler(backend, source)
    return _DEFAULT[backend]


def _label_chunk(args: tuple[list[object], tuple[str, ...], bool, str]) -> list[dict[str, float]]:
    texts, sections, strict, backend = args
    return default_labeler(backend).label(texts, sections, strict)


def label_reports(
    texts: Sequence[object],
    *,
    workers: int = 1,
    sections_to_extract: Sequence[str] = (),
    extract_strict: bool = False,
    labeler: Labeler | None = None,
    backend: str = "chexpert",
) -> pd.DataFrame:
    """Label reports like chexpert-labeler: one row per input, columns ``CHEXPERT_LABELS``.

    Values are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or NaN (not mentioned); the
    index is 0..n-1. ``sections_to_extract`` takes lower-case titles (e.g. ``"impression"``),
    as the original. Deterministic: results never depend on ``workers`` or cache state.
    ``backend`` picks the rules and phrases: ``chexpert`` (the original's, the default) or the
    opt-in ``chexpert_plus`` (ours on top, a few of the original's replaced); it is ignored
    when ``labeler`` is given.
    """
    texts = list(texts)
    sections = tuple(sections_to_extract)
    if labeler is None:
        backend_rules(backend)  # an unknown backend fails here, before any work
    if workers > 1 and len(texts) >= PARALLEL_MIN_REPORTS and labeler is None:
        default_labeler(backend).warm_up()  # load spaCy once in the parent; workers share it
        chunks = [
            (texts[i : i + _CHUNK], sections, extract_strict, backend)
            for i in range(0, len(texts), _CHUNK)
        ]
        rows = [
            row
            for chunk in parallel_map(_label_chunk, chunks, workers, "label reports", chunksize=1)
            for row in chunk
        ]
    else:
        rows = (labeler or default_labeler(backend)).label(texts, sections, extract_strict)
    frame = pd.DataFrame(rows, columns=list(CHEXPERT_LABELS), dtype=float)
    frame.index = pd.RangeIndex(len(texts))
    return frame


def read_reports_csv(path: Path) -> list[object]:
    """Read the original's input format: a headerless single-column CSV (blank lines skipped)."""
    frame = pd.read_csv(path, header=None, names=["Reports"], dtype=str)
    return frame["Reports"].tolist()


def label_reports_csv(
    reports_csv: Path,
    output_csv: Path,
    workers: int = 1,
    sections_to_extract: Sequence[str] = (),
    extract_strict: bool = False,
    backend: str = "chexpert",
) -> int:
    """Drop-in for ``label.py --reports_path R --output_path O``; returns the report count."""
    texts = read_reports_csv(Path(reports_csv))
    labels = label_reports(
        texts,
        workers=workers,
        sections_to_extract=sections_to_extract,
        extract_strict=extract_strict,
        backend=backend,
    )
    write_labeled_csv(texts, labels, Path(output_csv))
    return len(texts)
