"""The sentence cache is the labeler's only state that grows with the corpus: it must stay bounded.

At MIMIC-CXR scale a label worker sees hundreds of thousands of distinct sentences
(``benchmarks/bench_label_memory.py`` measures about 300 bytes per entry on real reports), so the
cache evicts its oldest entry once it holds ``cache_size`` sentences, and eviction never changes
a label.
"""

from __future__ import annotations

from pipeline.labeler.api import Labeler

REPORTS = [
    "Mild cardiomegaly.",
    "No pleural effusion.",
    "Small left pneumothorax.",
    "Possible right lower lobe pneumonia.",
    "Heart size is within normal limits.",
    "Mild cardiomegaly.",
]


def test_cache_never_exceeds_its_size_and_evicts_oldest_first(spacy_labeler: Labeler) -> None:
    bounded = Labeler(graph_source=spacy_labeler.graph_source, cache_size=2)
    for report in REPORTS:
        bounded.label([report])
        assert len(bounded.cache) <= 2
    # the last two distinct sentences, in insertion order ("Mild cardiomegaly." came back last)
    assert list(bounded.cache) == ["heart size is within normal limits.", "mild cardiomegaly."]


def test_eviction_never_changes_a_label(spacy_labeler: Labeler) -> None:
    bounded = Labeler(graph_source=spacy_labeler.graph_source, cache_size=1)
    unbounded = Labeler(graph_source=spacy_labeler.graph_source)
    assert bounded.label(REPORTS) == unbounded.label(REPORTS)
    assert [bounded.label([r])[0] for r in REPORTS] == unbounded.label(REPORTS)
    assert unbounded.label(["Mild cardiomegaly."])[0]["Cardiomegaly"] == 1.0
    assert unbounded.label(["Small left pneumothorax."])[0]["Pneumothorax"] == 1.0
