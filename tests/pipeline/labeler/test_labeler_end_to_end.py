"""(c) sample_reports.csv -> labeled_reports.csv through spaCy, and (d) behaviour probes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.labeler import label_reports, label_reports_csv, read_reports_csv
from pipeline.labeler.api import Labeler
from pipeline.labeler.spacy_graph import SpacyGraphSource, convert
from pipeline.records import CHEXPERT_LABELS
from tests.pipeline.labeler.conftest import FIXTURES


def _present(labeler: Labeler, text: str, **kwargs: object) -> dict[str, float]:
    [row] = label_reports([text], labeler=labeler, **kwargs).to_dict("records")
    return {k: v for k, v in row.items() if not math.isnan(v)}


def test_sample_reports_byte_identical(tmp_path: Path, spacy_labeler: Labeler) -> None:
    out = tmp_path / "labeled.csv"
    assert label_reports_csv(FIXTURES / "sample_reports.csv", out) == 4
    assert out.read_bytes() == (FIXTURES / "labeled_reports.csv").read_bytes()


def test_label_reports_frame_contract(spacy_labeler: Labeler) -> None:
    texts = read_reports_csv(FIXTURES / "sample_reports.csv")
    frame = label_reports(texts, labeler=spacy_labeler)
    assert list(frame.columns) == list(CHEXPERT_LABELS)
    assert list(frame.index) == [0, 1, 2, 3]
    assert frame.dtypes.eq(float).all()
    expected = pd.read_csv(FIXTURES / "labeled_reports.csv")[list(CHEXPERT_LABELS)]
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    # warm cache and a fresh labeler give identical results (determinism)
    pd.testing.assert_frame_equal(label_reports(texts, labeler=spacy_labeler), frame)
    assert len(spacy_labeler.cache) >= 8


def test_issue_15_maintainer_output(spacy_labeler: Labeler) -> None:
    text = (
        "The lungs are clear without evidence of focal airspace disease. There is no evidence "
        "of pneumothorax or large pleural effusion. The cardiac and mediastinal contours are "
        "within normal limits."
    )
    assert _present(spacy_labeler, text) == {
        "No Finding": 1.0,
        "Enlarged Cardiomediastinum": 0.0,
        "Lung Opacity": 0.0,
        "Pneumothorax": 0.0,
        "Pleural Effusion": 0.0,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cannot exclude a small left pleural effusion.", {"Pleural Effusion": -1.0}),
        ("may reflect atelectasis or pneumonia", {"Atelectasis": -1.0, "Pneumonia": -1.0}),
        ("No new consolidation.", {"Consolidation": -1.0}),
        ("Cannot rule out pneumonia.", {"Pneumonia": -1.0}),
        ("Rule out pneumonia.", {"No Finding": 1.0, "Pneumonia": 0.0}),
        ("Heart size is stable.", {"Cardiomegaly": -1.0}),
        ("The heart is not enlarged.", {"No Finding": 1.0, "Cardiomegaly": 0.0}),
        ("Pneumothorax has resolved.", {"No Finding": 1.0, "Pneumothorax": 0.0}),
        (
            "Findings: no pneumothorax, tube in place.",
            {"No Finding": 1.0, "Pneumothorax": 0.0, "Support Devices": 0.0},
        ),
        ("CHF.", {"Cardiomegaly": -1.0, "Edema": 1.0}),
        ("Mild pulmonary vascular congestion.", {"Edema": -1.0}),
        ("Pleural effusion versus atelectasis.", {"Atelectasis": -1.0, "Pleural Effusion": -1.0}),
        ("Atelectasis/infiltrate at the left base.", {"Atelectasis": -1.0, "Lung Opacity": -1.0}),
        ("no knee joint effusion", {"No Finding": 1.0, "Pleural Effusion": 0.0}),
        ("no evidence of tuberculosis", {"No Finding": 1.0, "Support Devices": 0.0}),
        ("heart and mediastinum within normal limits", {"Enlarged Cardiomediastinum": 1.0}),
        ("Osseous structures show scoliosis.", {}),
        ("Right IJ catheter tip in the SVC.", {"No Finding": 1.0, "Support Devices": 1.0}),
    ],
)
def test_behaviour_probes(spacy_labeler: Labeler, text: str, expected: dict[str, float]) -> None:
    assert _present(spacy_labeler, text) == expected


def test_bad_inputs_never_crash(spacy_labeler: Labeler) -> None:
    long_report = ("Stable mild cardiomegaly. No pneumothorax or effusion. " * 1000)[:50_000]
    texts = ["", "   \n\t ", float("nan"), None, long_report, "Épanchement ☃ no pneumothorax — ok"]
    frame = label_reports(texts, labeler=spacy_labeler)
    no_finding_only = {"No Finding": 1.0}
    for i in range(4):
        assert {k: v for k, v in frame.iloc[i].items() if not math.isnan(v)} == no_finding_only
    assert frame.iloc[4]["Cardiomegaly"] == 1.0 and frame.iloc[4]["Pneumothorax"] == 0.0
    assert frame.iloc[5]["Pneumothorax"] == 0.0 and frame.iloc[5]["No Finding"] == 1.0


def test_section_extraction_option(spacy_labeler: Labeler) -> None:
    text = "FINDINGS: Large right pleural effusion. IMPRESSION: No pneumothorax."
    assert _present(spacy_labeler, text, sections_to_extract=["impression"]) == {
        "No Finding": 1.0,
        "Pneumothorax": 0.0,
    }
    assert _present(
        spacy_labeler, "No pneumothorax.", sections_to_extract=["impression"], extract_strict=True
    ) == {"No Finding": 1.0}
    full = _present(spacy_labeler, text)
    assert full["Pleural Effusion"] == 1.0 and full["Pneumothorax"] == 0.0


def test_spacy_conversion_matches_corenlp_conventions(spacy_labeler: Labeler) -> None:
    source = spacy_labeler.graph_source
    assert isinstance(source, SpacyGraphSource)
    docs = list(
        source.nlp.pipe(
            [
                "no evidence of focal consolidation, pleural effusion or pneumothorax.",
                "cannot exclude effusion.",
                "the lungs are clear.",
                "there is no pneumothorax.",
            ]
        )
    )
    evidence = convert(docs[0]).describe()
    for edge in (
        "neg(evidence, no)",
        "nmod:of(evidence, consolidation)",
        "case(consolidation, of)",
        "conj:or(consolidation, effusion)",
        "conj:or(consolidation, pneumothorax)",
        "nmod:of(evidence, pneumothorax)",
    ):
        assert edge in evidence
    cannot = convert(docs[1])
    assert [n.lemma for n in cannot.nodes.values()][:2] == ["cannot", "exclude"]
    assert "aux(exclude, cannot)" in cannot.describe()
    assert {"nsubj(clear, lungs)", "cop(clear, are)"} <= set(convert(docs[2]).describe())
    assert "nsubj(is, pneumothorax)" in convert(docs[3]).describe()


def test_parallel_workers_give_the_same_labels() -> None:
    texts = read_reports_csv(FIXTURES / "sample_reports.csv") * 600  # above the parallel threshold
    parallel = label_reports(texts, workers=2)
    single = label_reports(texts[:4], workers=1)
    assert len(parallel) == 2400
    for start in (0, 1196, 2396):
        pd.testing.assert_frame_equal(
            parallel.iloc[start : start + 4].reset_index(drop=True), single, check_dtype=False
        )
