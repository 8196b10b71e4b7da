"""The opt-in ``chexpert_plus`` backend: the original's rules plus ours, and the few rules and
phrases of the original it replaces (each listed, checked, and tested with wordings that must not
change)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pipeline.labeler import label_reports, read_reports_csv
from pipeline.labeler.api import Labeler, backend_labeler, default_labeler
from pipeline.labeler.detect import backend_rules, default_rules, plus_rules, without_replaced
from pipeline.labeler.mentions import extract_mentions
from pipeline.labeler.ngrex import load_patterns
from pipeline.labeler.phrases import (
    DATA_DIR,
    backend_phrases,
    default_phrases,
    plus_phrases,
    with_changed_mentions,
    without_unmentions,
)
from pipeline.records import CHEXPERT_LABELS
from tests.pipeline.labeler.conftest import FIXTURES

PLUS_DIR = DATA_DIR / "patterns_plus"


@pytest.fixture(scope="module")
def plus_labeler(spacy_labeler: Labeler) -> Labeler:
    return backend_labeler("chexpert_plus", spacy_labeler.graph_source)


def _present(labeler: Labeler, text: str) -> dict[str, float]:
    [row] = label_reports([text], labeler=labeler).to_dict("records")
    return {k: v for k, v in row.items() if not math.isnan(v)}


def test_plus_extends_the_original_rules_in_phase_order() -> None:
    base, plus = default_rules(), plus_rules()
    assert plus.negation[:77] == base.negation and len(plus.negation) == 94
    # post-negation: the original's 67 less the four "X or / versus Y" rules it narrows, in
    # their order, the hedge rule it narrows and "borderline heart size", then our 7 + 6 + 1 + 1
    replaced = load_patterns(PLUS_DIR / "post_negation_uncertainty_replaced.txt")
    assert len(replaced) == 6 and all(p in base.post_negation_uncertainty for p in replaced)
    kept = tuple(p for p in base.post_negation_uncertainty if p not in replaced)
    assert len(kept) == 61 and plus.post_negation_uncertainty[:61] == kept
    assert len(plus.post_negation_uncertainty) == 61 + 15
    assert plus.pre_negation_uncertainty == base.pre_negation_uncertainty
    assert base.title_shortcut and not plus.title_shortcut
    assert base.shortcut("impression: no change.") and not plus.shortcut("impression: no change.")
    assert not base.shortcut("no change in the impression.")
    assert backend_rules("chexpert") is base and backend_rules("chexpert_plus") is plus


def test_a_replaced_rule_must_be_one_of_the_originals(tmp_path: Path) -> None:
    base = default_rules().post_negation_uncertainty
    listed = tmp_path / "replaced.txt"
    listed.write_text("# comment\n{} > {dependency:/conj:or/} {}\n", encoding="utf-8")
    assert len(without_replaced(base, listed)) == 66
    assert without_replaced(base, tmp_path / "absent.txt") == base
    listed.write_text("{} > {dependency:/conj:nor/} {}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"replaced.txt: 1 listed rule\(s\) are not among"):
        without_replaced(base, listed)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown labeler backend 'chexpert_pls'.*chexpert_plus"):
        backend_rules("chexpert_pls")
    with pytest.raises(ValueError, match="unknown labeler backend"):
        label_reports(["No apical pneumothorax."], backend="nope")


@pytest.mark.parametrize(
    ("text", "original", "plus"),
    [
        (
            "Heart size is upper limits of normal for age.",
            {"Cardiomegaly": 1.0},
            {"Cardiomegaly": 0.0},
        ),
        (
            "Heart and mediastinum within normal limits on both views.",
            {"Enlarged Cardiomediastinum": 1.0},
            {"Enlarged Cardiomediastinum": 0.0},
        ),
        (
            "Heart and mediastinum of normal size.",
            {"Enlarged Cardiomediastinum": 1.0},
            {"Enlarged Cardiomediastinum": 0.0},
        ),
        ("Clinical correlation for infection.", {"Pneumonia": 1.0}, {"Pneumonia": -1.0}),
        ("Resolved mild perihilar edema.", {"Edema": 1.0}, {"Edema": 0.0}),
        (
            "Calcified hilar nodes from healed granulomatous infection.",
            {"Pneumonia": 1.0},
            {"Pneumonia": 0.0},
        ),
        (
            "Superimposed infection would be a consideration.",
            {"Pneumonia": 1.0},
            {"Pneumonia": -1.0},
        ),
        ("The differential considerations include edema.", {"Edema": 1.0}, {"Edema": -1.0}),
        (
            "Interstitial pattern, differential diagnosis including chronic interstitial edema.",
            {"Lung Opacity": 1.0, "Edema": 1.0},
            {"Lung Opacity": 1.0, "Edema": -1.0},
        ),
        # "there may be X": a modal on the existential verb
        (
            "There may be a small left pleural effusion.",
            {"Pleural Effusion": 1.0},
            {"Pleural Effusion": -1.0},
        ),
        (
            "There could be early pneumonia at the right base.",
            {"Pneumonia": 1.0},
            {"Pneumonia": -1.0},
        ),
        (
            "There is a small right pleural effusion at the base.",
            {"Pleural Effusion": 1.0},
            {"Pleural Effusion": 1.0},
        ),
        # "no longer": a finding that has gone
        ("The pneumothorax is no longer visible.", {"Pneumothorax": 1.0}, {"Pneumothorax": 0.0}),
        (
            "There is no longer a pleural effusion.",
            {"Pleural Effusion": 1.0},
            {"Pleural Effusion": 0.0},
        ),
        ("The effusion is now larger.", {"Pleural Effusion": 1.0}, {"Pleural Effusion": 1.0}),
        # a limited evaluation of a finding does not show it
        (
            "Limited assessment of heart size due to low lung volumes.",
            {"Cardiomegaly": 1.0},
            {"Cardiomegaly": -1.0},
        ),
        (
            "Evaluation for pneumothorax is limited by overlying devices.",
            {"Pneumothorax": 1.0, "Support Devices": 1.0},
            {"Pneumothorax": -1.0, "Support Devices": 1.0},
        ),
        (
            "The heart size is within normal limits on this view.",
            {"Cardiomegaly": 0.0},
            {"Cardiomegaly": 0.0},
        ),
        # a plain negated verb of seeing (the original's own "not visualized / appreciated"
        # uncertainty rules keep deciding those)
        ("The nodule is not seen.", {"Lung Lesion": 1.0}, {"Lung Lesion": 0.0}),
        ("A pneumothorax is not identified.", {"Pneumothorax": 1.0}, {"Pneumothorax": 0.0}),
        (
            "Pleural effusion is not appreciated.",
            {"Pleural Effusion": -1.0},
            {"Pleural Effusion": -1.0},
        ),
        ("The nodule is seen.", {"Lung Lesion": 1.0}, {"Lung Lesion": 1.0}),
        # a redacted verb: what it said about the finding is unknown
        (
            "The heart and lungs have XXXX XXXX since the last study.",
            {"Cardiomegaly": 1.0},
            {"Cardiomegaly": -1.0},
        ),
        ("The heart is XXXX enlarged.", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 1.0}),
        # "probable" grades a finding as more likely present than not; "possible" does not
        (
            "There is a probable small left pleural effusion.",
            {"Pleural Effusion": -1.0},
            {"Pleural Effusion": 1.0},
        ),
        ("Probable mild interstitial edema.", {"Edema": -1.0}, {"Edema": 1.0}),
        (
            "Possible small left pleural effusion.",
            {"Pleural Effusion": -1.0},
            {"Pleural Effusion": -1.0},
        ),
        ("Questionable right lower lobe pneumonia.", {"Pneumonia": -1.0}, {"Pneumonia": -1.0}),
        # "borderline" grades an enlarged heart, as "mild" does
        ("Borderline heart size.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": 1.0}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 1.0}),
        # a stable structure is a normal one, unless it is also called abnormal
        (
            "Stable cardiomediastinal silhouette.",
            {"Enlarged Cardiomediastinum": -1.0},
            {"Enlarged Cardiomediastinum": 0.0},
        ),
        ("Heart size is unchanged.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": 0.0}),
        ("Stable enlarged cardiac silhouette.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": -1.0}),
        ("Heart size is stable and enlarged.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": -1.0}),
        ("Stable cardiomegaly.", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 1.0}),
        # no title short-cut: "impression: no ..." is parsed like any sentence
        (
            "Impression: no significant change in the small right pleural effusion.",
            {"Pleural Effusion": 0.0},
            {"Pleural Effusion": 1.0},
        ),
        ("Findings: no pneumothorax.", {"Pneumothorax": 0.0}, {"Pneumothorax": 0.0}),
        # a finding stated as present is present, whatever else the report hedges or negates
        (
            "A 2 cm nodule in the right lower lobe. No other nodules. "
            "Possible second mass in the left apex.",
            {"Lung Lesion": -1.0},
            {"Lung Lesion": 1.0},
        ),
        # the verb forms of "upper limits of normal" and "normal"
        (
            "Heart size remains at the upper limits of normal.",
            {"Cardiomegaly": 1.0},
            {"Cardiomegaly": 0.0},
        ),
        (
            "Overall heart size has become normal again.",
            {"Cardiomegaly": 1.0},
            {"Cardiomegaly": 0.0},
        ),
        ("The heart has become enlarged.", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 1.0}),
        # a current or changing infection stays positive
        ("Active infection in the right lower lobe.", {"Pneumonia": 1.0}, {"Pneumonia": 1.0}),
        ("Resolving pneumonia.", {"Pneumonia": 1.0}, {"Pneumonia": 1.0}),
        # where an original rule already decides, plus agrees
        (
            "Overall heart size is at the upper limits of normal.",
            {"Cardiomegaly": 0.0},
            {"Cardiomegaly": 0.0},
        ),
        ("Perihilar haziness suggesting edema.", {"Edema": 1.0}, {"Edema": 1.0}),
        # alternatives that are both findings of one opacity: present for both (radiologist
        # convention); any other alternative, or alternatives under a modal, stay uncertain
        (
            "Bibasilar atelectasis or scarring.",
            {"Lung Opacity": -1.0, "Atelectasis": -1.0},
            {"Lung Opacity": 1.0, "Atelectasis": 1.0},
        ),
        (
            "Linear opacity at the right base, scarring versus subsegmental atelectasis.",
            {"Lung Opacity": 1.0, "Atelectasis": -1.0},
            {"Lung Opacity": 1.0, "Atelectasis": 1.0},
        ),
        (
            "Patchy left basilar infiltrate or pneumonia.",
            {"Lung Opacity": -1.0, "Pneumonia": -1.0},
            {"Lung Opacity": 1.0, "Pneumonia": 1.0},
        ),
        ("Right apical pneumothorax or skin fold.", {"Pneumothorax": -1.0}, {"Pneumothorax": -1.0}),
        (
            "Blunted costophrenic angle, small effusion or pleural thickening.",
            {"Pleural Effusion": -1.0, "Pleural Other": -1.0},
            {"Pleural Effusion": -1.0, "Pleural Other": -1.0},
        ),
        ("Vascular congestion or mild edema.", {"Edema": -1.0}, {"Edema": -1.0}),
        (
            "Hazy perihilar opacities, edema or airspace disease.",
            {"Lung Opacity": -1.0, "Edema": -1.0},
            {"Lung Opacity": 1.0, "Edema": 1.0},
        ),
        (
            "Mild interstitial edema versus atypical infection.",
            {"Edema": -1.0, "Pneumonia": -1.0},
            {"Edema": -1.0, "Pneumonia": -1.0},
        ),
        (
            "Perihilar opacities which may represent scarring or edema.",
            {"Lung Opacity": 1.0, "Edema": -1.0},
            {"Lung Opacity": 1.0, "Edema": -1.0},
        ),
        (
            "Basilar opacity may represent atelectasis or scarring.",
            {"Lung Opacity": 1.0, "Atelectasis": -1.0},
            {"Lung Opacity": 1.0, "Atelectasis": -1.0},
        ),
        (
            "Opacities could be compatible with atelectasis versus consolidation.",
            {"Lung Opacity": 1.0, "Consolidation": -1.0, "Atelectasis": -1.0},
            {"Lung Opacity": 1.0, "Consolidation": -1.0, "Atelectasis": -1.0},
        ),
        (
            "No focal consolidation or pneumothorax.",
            {"Consolidation": 0.0, "Pneumothorax": 0.0},
            {"Consolidation": 0.0, "Pneumothorax": 0.0},
        ),
    ],
)
def test_plus_differs_only_where_its_rules_fire(
    spacy_labeler: Labeler, plus_labeler: Labeler, text: str, original: dict, plus: dict
) -> None:
    def findings(labels: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in labels.items() if k != "No Finding"}

    assert findings(_present(spacy_labeler, text)) == original
    assert findings(_present(plus_labeler, text)) == plus


def test_plus_keeps_the_sample_reports(plus_labeler: Labeler) -> None:
    texts = read_reports_csv(FIXTURES / "sample_reports.csv")
    expected = pd.read_csv(FIXTURES / "labeled_reports.csv")[list(CHEXPERT_LABELS)]
    frame = label_reports(texts, labeler=plus_labeler)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_plus_phrases_leave_out_the_listed_lung_lesion_mentions() -> None:
    base, plus = default_phrases(), plus_phrases()
    removed = {"nodular density", "nodular densities", "nodular opacity", "nodular opacities"}
    assert removed | {"nodular opacification"} == set(base.mentions["Lung Lesion"]) - set(
        plus.mentions["Lung Lesion"]
    )
    assert [p for p, _ in plus.mention_regexes["Lung Lesion"]] == plus.mentions["Lung Lesion"]
    # a nodular density stays a finding: an opacity ("nodular opacit…" already is, by "opaci")
    opacity = plus.mentions["Lung Opacity"]
    assert opacity == base.mentions["Lung Opacity"] + ["nodular density", "nodular densities"]
    assert [p for p, _ in plus.mention_regexes["Lung Opacity"]] == opacity
    # findings outside the 14 that make a study abnormal (data/phrases_plus/README.md)
    no_finding = plus.mentions["No Finding"]
    assert no_finding[: len(base.mentions["No Finding"])] == base.mentions["No Finding"]
    assert {"low lung volume", "tortuous", "spondylosis", "sternotomy"} <= set(no_finding)
    # short stems carry a word boundary, so a longer word is no mention of them
    for sentence in ("atelectatic change", "consistent with edema", "small effusion"):
        found = [m.text for m in extract_mentions(sentence, plus) if m.observation == "No Finding"]
        assert found == [], sentence
    assert [m.text for m in extract_mentions("aortic ectasia", plus)] == ["ectasia"]
    unchanged = set(base.mentions) - {"Lung Lesion", "Lung Opacity", "No Finding"}
    assert {o: plus.mentions[o] for o in unchanged} == {o: base.mentions[o] for o in unchanged}
    # the one unmention dropped: a named nodule is a lesion, calcified or not
    assert plus.unmentions["Lung Lesion"] == ["massive", "massengale"]
    assert base.unmentions["Lung Lesion"] == ["calcified nodul", "massive", "massengale"]
    assert {o: u for o, u in plus.unmentions.items() if o != "Lung Lesion"} == {
        o: u for o, u in base.unmentions.items() if o != "Lung Lesion"
    }
    assert backend_phrases("chexpert") is base and backend_phrases("chexpert_plus") is plus
    with pytest.raises(ValueError, match="unknown labeler backend 'x'"):
        backend_phrases("x")


def test_a_changed_phrase_is_checked_against_the_originals(tmp_path: Path) -> None:
    removed, added, none = tmp_path / "removed", tmp_path / "added", tmp_path / "absent"
    removed.mkdir()
    added.mkdir()
    (removed / "lung_lesion.txt").write_text("nodular_opacity\n", encoding="utf-8")
    (added / "edema.txt").write_text("fluid overload\n", encoding="utf-8")
    changed = with_changed_mentions(default_phrases(), removed, added).mentions
    assert "nodular opacity" not in changed["Lung Lesion"] and "nodule" in changed["Lung Lesion"]
    assert changed["Edema"][-1] == "fluid overload"
    assert with_changed_mentions(default_phrases(), none, none).mentions == (
        default_phrases().mentions
    )
    (removed / "lung_lesion.txt").write_text("nodular shadow\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['nodular shadow'\] are not mention phrases of"):
        with_changed_mentions(default_phrases(), removed, none)
    (added / "edema.txt").write_text("edema\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['edema'\] are already mention phrases of 'Edema'"):
        with_changed_mentions(default_phrases(), none, added)
    (added / "lung_oedema.txt").write_text("x\n", encoding="utf-8")
    (added / "edema.txt").unlink()
    with pytest.raises(ValueError, match="'Lung Oedema' is not an observation"):
        with_changed_mentions(default_phrases(), none, added)


@pytest.mark.parametrize(
    ("text", "original", "plus"),
    [
        # a nodular opacity is an opacity of that shape, not a lesion; a named nodule or mass is
        (
            "Small nodular opacity over the right fourth rib, likely the nipple.",
            {"Lung Opacity": 1.0, "Lung Lesion": 1.0},
            {"Lung Opacity": 1.0},
        ),
        (
            "Scattered nodular densities in both upper lobes.",
            {"Lung Lesion": 1.0},
            {"Lung Opacity": 1.0},
        ),
        ("A 9 mm nodule in the left lower lobe.", {"Lung Lesion": 1.0}, {"Lung Lesion": 1.0}),
        (
            # the lesion is now the hedged mass alone
            "Nodular opacity in the right upper lobe, concerning for a mass.",
            {"Lung Opacity": 1.0, "Lung Lesion": 1.0},
            {"Lung Opacity": 1.0, "Lung Lesion": -1.0},
        ),
    ],
)
def test_plus_phrases_differ_only_where_a_removed_phrase_is_the_mention(
    spacy_labeler: Labeler, plus_labeler: Labeler, text: str, original: dict, plus: dict
) -> None:
    def findings(labels: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in labels.items() if k != "No Finding"}

    assert findings(_present(spacy_labeler, text)) == original
    assert findings(_present(plus_labeler, text)) == plus
    assert findings(_present(default_labeler("chexpert_plus"), text)) == plus


@pytest.mark.parametrize(
    ("text", "original", "plus"),
    [
        # findings outside the 14 observations: CheXpert calls the study No Finding, the
        # radiologist indexers of Open-I (the gold chexpert_plus is measured on) do not
        ("Low lung volumes. The lungs are clear.", {"No Finding": 1.0}, {}),
        ("The lungs are hyperexpanded, with flattened diaphragms.", {"No Finding": 1.0}, {}),
        (
            "The thoracic aorta is tortuous. Heart size is normal.",
            {"No Finding": 1.0, "Cardiomegaly": 0.0},
            {"Cardiomegaly": 0.0},
        ),
        ("Thoracic spondylosis with bridging osteophytes.", {"No Finding": 1.0}, {}),
        ("Surgical clips in the right upper quadrant.", {"No Finding": 1.0}, {}),
        ("Status post median sternotomy. Clear lungs.", {"No Finding": 1.0}, {}),
        ("Mild spurring of the thoracic spine.", {"No Finding": 1.0}, {}),
        # a support device: not a finding for CheXpert, an abnormal study for the indexers
        (
            "Left subclavian catheter with its tip in the SVC. Lungs are clear.",
            {"No Finding": 1.0, "Support Devices": 1.0},
            {"Support Devices": 1.0},
        ),
        # negated or normal wordings leave the study normal in both conventions
        ("No hiatal hernia or adenopathy. The lungs are clear.", {"No Finding": 1.0}, None),
        ("Normal lung volumes and heart size.", {"No Finding": 1.0, "Cardiomegaly": 0.0}, None),
        ("The aorta is not tortuous.", {"No Finding": 1.0}, None),
        # a phrase inside a longer word is no mention of it ("fusion" in "effusion")
        ("No pleural effusion.", {"No Finding": 1.0, "Pleural Effusion": 0.0}, None),
    ],
)
def test_plus_no_finding_means_no_abnormality_at_all(
    spacy_labeler: Labeler, plus_labeler: Labeler, text: str, original: dict, plus: dict | None
) -> None:
    assert _present(spacy_labeler, text) == original
    assert _present(plus_labeler, text) == (original if plus is None else plus)
    assert _present(default_labeler("chexpert_plus"), text) == _present(plus_labeler, text)


def test_a_dropped_unmention_is_checked_against_the_originals(tmp_path: Path) -> None:
    (tmp_path / "lung_lesion.txt").write_text("calcified_granuloma\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['calcified granuloma'\] are not unmention phrases"):
        without_unmentions(default_phrases(), tmp_path)
    assert without_unmentions(default_phrases(), tmp_path / "absent") == default_phrases()


@pytest.mark.parametrize(
    ("text", "original", "plus"),
    [
        # a named nodule is a lesion for the radiologist gold, calcified or not
        ("A 6 mm calcified nodule in the right upper lobe.", {}, {"Lung Lesion": 1.0}),
        ("Noncalcified nodule in the left lower lobe.", {}, {"Lung Lesion": 1.0}),
        ("No calcified nodules.", {"No Finding": 1.0}, {"Lung Lesion": 0.0, "No Finding": 1.0}),
        # a granuloma is still not one
        ("Calcified granuloma in the left apex.", {}, {}),
    ],
)
def test_plus_counts_a_calcified_nodule_as_a_lesion(
    spacy_labeler: Labeler, plus_labeler: Labeler, text: str, original: dict, plus: dict
) -> None:
    assert _present(spacy_labeler, text) == original
    assert _present(plus_labeler, text) == plus
