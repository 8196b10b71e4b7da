"""Rule coverage: every one of the original's 153 pattern lines on a sentence of its own.

Each FIRING row is a natural radiology sentence (our own words) that the rule is meant to
catch, with the mention it should catch and that mention's final label. The test checks, through
the real spaCy parse and our CoreNLP conversion, that the rule matches at a node of the mention
(negation rules with the ``key`` veto, as the detector applies them) and that the labeler gives
the expected label. SILENT rows are the rules that do not fire on any spaCy parse we could find,
each with the reason; the test asserts they stay silent, so a conversion change that revives one
fails here and the row moves to FIRING. ``docs/labeler_fidelity.md`` lists the same numbers.
"""

from __future__ import annotations

import pytest

from pipeline.labeler.api import Labeler
from pipeline.labeler.clean import clean
from pipeline.labeler.detect import default_rules, negation_matches
from pipeline.labeler.graph import DepGraph
from pipeline.labeler.ngrex import Pattern, matches
from pipeline.labeler.propagate import propagate

#: (phase, rule number in file order, sentence, mention text, expected mention label)
FIRING: list[tuple[str, int, str, str, float]] = [
    ("pre", 1, "Cannot exclude a small left pleural effusion.", "effusion", -1.0),
    ("pre", 2, "A small apical pneumothorax is not excluded.", "pneumothorax", -1.0),
    ("pre", 3, "No new focal consolidation.", "consolidat", -1.0),
    ("pre", 5, "No new edema pattern.", "edema", -1.0),
    ("pre", 6, "No new area of consolidation.", "consolidat", -1.0),
    ("pre", 7, "Pneumonia with no new area of involvement.", "pneumonia", -1.0),
    ("pre", 8, "Cannot rule out early pneumonia.", "pneumonia", -1.0),
    ("pre", 9, "No evidence to rule out pneumonia.", "pneumonia", -1.0),
    ("neg", 1, "No definite apical pneumothorax.", "pneumothorax", 0.0),
    ("neg", 2, "No obvious pleural effusion.", "effusion", 0.0),
    ("neg", 3, "Normal cardiac silhouette.", "cardiac silhouette", 0.0),
    ("neg", 4, "The cardiomediastinum is unremarkable.", "cardiomediastinum", 0.0),
    ("neg", 5, "The cardiac silhouette is normal.", "cardiac silhouette", 0.0),
    ("neg", 6, "Normal heart size on both views.", "heart size", 0.0),
    ("neg", 7, "Heart size is normal on both views.", "heart size", 0.0),
    ("neg", 9, "No pneumonia or consolidative opacity.", "consolidat", 0.0),
    ("neg", 10, "The heart size is within the upper limits of normal.", "heart size", 0.0),
    ("neg", 12, "Dense consolidation obscures the cardiac silhouette.", "cardiac silhouette", 0.0),
    ("neg", 13, "The radiographs show a normal cardiac silhouette.", "cardiac silhouette", 0.0),
    (
        "neg",
        14,
        "The lateral view shows a normal appearance of the mediastinum.",
        " mediastinum",
        0.0,
    ),
    ("neg", 15, "The mediastinal silhouette is normal.", "mediastinal silhouette", 0.0),
    ("neg", 16, "No consolidative opacity.", "consolidat", 0.0),
    ("neg", 18, "Calcified hilar structures appear normal.", "calcifi", 0.0),
    ("neg", 19, "No edema pattern.", "edema", 0.0),
    ("neg", 20, "Pneumothorax is absent.", "pneumothorax", 0.0),
    ("neg", 21, "Clear lungs without evidence of consolidative opacity.", "consolidat", 0.0),
    ("neg", 22, "No evidence of consolidative opacity.", "consolidat", 0.0),
    ("neg", 23, "The radiographs show heart size within normal limits.", "heart size", 0.0),
    (
        "neg",
        24,
        "Cardiac silhouette within normal limits on both views.",
        "cardiac silhouette",
        0.0,
    ),
    ("neg", 25, "Overall heart size is at the upper limits of normal.", "heart size", 0.0),
    ("neg", 26, "The heart size is at upper limits of normal.", "heart size", 0.0),
    ("neg", 27, "Heart size is still within normal limits.", "heart size", 0.0),
    ("neg", 29, "The heart size appears within normal limits.", "heart size", 0.0),
    ("neg", 30, "Cardiomediastinum within normal limits.", "cardiomediastinum", 0.0),
    ("neg", 31, "Right mediastinal contour within normal limits.", "contour", 0.0),
    ("neg", 32, "The cardiac silhouette appears normal.", "cardiac silhouette", 0.0),
    ("neg", 33, "Heart size, which remains within normal limits, is unchanged.", "heart size", 0.0),
    ("neg", 34, "Findings represent atelectasis rather than pneumonia.", "pneumonia", 0.0),
    ("neg", 35, "Clear lungs without consolidation.", "consolidat", 0.0),
    ("neg", 36, "The lungs are clear of consolidation.", "consolidat", 0.0),
    ("neg", 37, "Rule out pneumonia.", "pneumonia", 0.0),
    ("neg", 38, "Interval removal of the chest tube.", "tube", 0.0),
    ("neg", 39, "Negative for apical pneumothorax.", "pneumothorax", 0.0),
    ("neg", 40, "The study excludes a pneumothorax.", "pneumothorax", 0.0),
    # a terse reply to the clinical question: spaCy makes the reply "no" the root
    ("neg", 41, "No, nothing new, no effusion.", "effusion", 0.0),
    ("neg", 42, "The left pleural effusion has resolved.", "effusion", 0.0),
    # the reply "No," hangs off "be" (discourse, as CoreNLP names an interjection)
    ("neg", 43, "No, there is no pleural effusion.", "effusion", 0.0),
    ("neg", 44, "Clear lungs without evidence of pneumonia.", "pneumonia", 0.0),
    ("neg", 45, "Stable appearance without development of effusion.", "effusion", 0.0),
    ("neg", 46, "No development of pneumothorax.", "pneumothorax", 0.0),
    ("neg", 47, "No evidence of lobar pneumonia.", "pneumonia", 0.0),
    ("neg", 48, "Lungs are clear without findings of edema.", "edema", 0.0),
    ("neg", 49, "No focus of consolidation.", "consolidat", 0.0),
    ("neg", 50, "No focus of pneumonia.", "pneumonia", 0.0),
    ("neg", 51, "No moderate to large pleural effusion.", "effusion", 0.0),
    # "developing" after the finding is a noun (lemma "developing") heading "a pneumothorax"
    (
        "neg",
        52,
        "Lungs clear without evidence of a pneumothorax developing.",
        "pneumothorax",
        0.0,
    ),
    ("neg", 53, "No evidence of a pneumothorax developing.", "pneumothorax", 0.0),
    ("neg", 55, "The nodule was previously demonstrated.", "nodule", 0.0),
    ("neg", 56, "No findings are seen to suggest pneumonia.", "pneumonia", 0.0),
    ("neg", 57, "No pleural line to suggest pneumothorax.", "pneumothorax", 0.0),
    ("neg", 59, "The heart is not enlarged on this film.", "the heart", 0.0),
    ("neg", 60, "Interval healing without development of pneumothorax.", "pneumothorax", 0.0),
    ("neg", 61, "The chest tube has been removed.", "tube", 0.0),
    ("neg", 62, "Previously removed chest tube.", "tube", 0.0),
    ("neg", 63, "The pneumothorax is no longer seen.", "pneumothorax", 0.0),
    ("neg", 64, "No, a pneumothorax is not seen on the lateral view.", "pneumothorax", 0.0),
    (
        "neg",
        65,
        "Pneumothorax is not seen, and the lungs are clear without evidence of consolidation.",
        "pneumothorax",
        0.0,
    ),
    ("neg", 66, "Pneumothorax is seen without evidence of tension.", "pneumothorax", 0.0),
    ("neg", 67, "Normal appearance of the cardiac silhouette.", "cardiac silhouette", 0.0),
    ("neg", 68, "Normal cardiac size.", "cardiac size", 0.0),
    ("neg", 69, "The cardiac contour is unremarkable.", "cardiac contour", 0.0),
    ("neg", 70, "The lungs are clear of edema.", "edema", 0.0),
    ("neg", 71, "The cleared right pleural effusion.", "effusion", 0.0),
    ("neg", 73, "No obvious associated pneumothorax.", "pneumothorax", 0.0),
    ("neg", 74, "Right lower lobe pneumonia with interval resolution.", "pneumonia", 0.0),
    ("neg", 75, "No pneumonia at either base.", "pneumonia", 0.0),
    ("neg", 76, "No interstitial pulmonary edema.", "edema", 0.0),
    ("neg", 77, "Clear lungs without focal consolidation.", "consolidat", 0.0),
    ("post", 1, "Stable cardiac silhouette.", "cardiac silhouette", -1.0),
    ("post", 2, "Heart size that has not changed since the prior study.", "heart size", -1.0),
    ("post", 3, "Heart size is stable since the last exam.", "heart size", -1.0),
    ("post", 4, "The heart size has not changed.", "heart size", -1.0),
    ("post", 5, "Heart size is similar to prior.", "heart size", -1.0),
    (
        "post",
        6,
        "The cardiac silhouette is similar to the prior study.",
        "cardiac silhouette",
        -1.0,
    ),
    ("post", 7, "Cardiac silhouette similar to prior.", "cardiac silhouette", -1.0),
    ("post", 8, "Cardiac silhouette similar to the prior examination.", "cardiac silhouette", -1.0),
    ("post", 9, "Stable appearance of the cardiac silhouette.", "cardiac silhouette", -1.0),
    ("post", 11, "Right basilar opacity suspicious for pneumonia.", "pneumonia", -1.0),
    ("post", 12, "This possibly represents pneumonia.", "pneumonia", -1.0),
    ("post", 15, "No new pleural effusion.", "effusion", -1.0),
    ("post", 17, "Left basilar opacity worrisome for pneumonia.", "pneumonia", -1.0),
    ("post", 18, "Atelectasis versus pneumonia.", "pneumonia", -1.0),
    ("post", 19, "Atelectasis versus pneumonia.", "atelecta", -1.0),
    ("post", 23, "Possible pneumonia.", "pneumonia", -1.0),
    ("post", 24, "Pneumonia in question.", "pneumonia", -1.0),
    ("post", 25, "The opacity may be pneumonia.", "pneumonia", -1.0),
    ("post", 26, "Suggestion of pneumonia at the right base.", "pneumonia", -1.0),
    ("post", 27, "The findings favor atelectasis.", "atelecta", -1.0),
    ("post", 28, "Concern for pneumonia.", "pneumonia", -1.0),
    ("post", 29, "Pneumonia is suspected.", "pneumonia", -1.0),
    ("post", 30, "Pneumonia is possible.", "pneumonia", -1.0),
    ("post", 31, "We suspect pneumonia.", "pneumonia", -1.0),
    ("post", 34, "This may reflect atelectasis.", "atelecta", -1.0),
    ("post", 35, "This may indicate the presence of pneumonia.", "pneumonia", -1.0),
    ("post", 36, "Opacity secondary to atelectasis.", "atelecta", -1.0),
    ("post", 37, "This may be due to atelectasis.", "atelecta", -1.0),
    ("post", 38, "This could be related to pneumonia.", "pneumonia", -1.0),
    ("post", 39, "The opacity may be compatible with pneumonia.", "pneumonia", -1.0),
    ("post", 41, "Question left pneumothorax.", "pneumothorax", -1.0),
    ("post", 42, "The differential diagnosis includes pneumonia.", "pneumonia", -1.0),
    ("post", 44, "Pneumonia suspected.", "pneumonia", -1.0),
    ("post", 45, "Clinical correlation for symptoms of pneumonia.", "pneumonia", -1.0),
    ("post", 46, "Borderline heart size on this portable film.", "heart size", -1.0),
    ("post", 47, "Pneumonia could be present.", "pneumonia", -1.0),
    ("post", 48, "Pneumothorax is poorly evaluated.", "pneumothorax", -1.0),
    ("post", 49, "Fracture is incompletely evaluated.", "fracture", -1.0),
    ("post", 50, "The pneumothorax is not well visualized.", "pneumothorax", -1.0),
    ("post", 51, "A small pneumothorax not visualized on the lateral view.", "pneumothorax", -1.0),
    ("post", 52, "The left hemidiaphragm is obscured by consolidation.", "consolidat", -1.0),
    ("post", 53, "The effusion may appear larger on this view.", "effusion", -1.0),
    ("post", 54, "The opacity may be consistent with pneumonia.", "pneumonia", -1.0),
    ("post", 55, "Correlate clinically for pneumonia.", "pneumonia", -1.0),
    ("post", 56, "Correlate clinically for signs of pneumonia.", "pneumonia", -1.0),
    ("post", 57, "The pneumothorax is not clearly seen.", "pneumothorax", -1.0),
    (
        "post",
        58,
        "There is a small pneumothorax not clearly seen on the frontal view.",
        "pneumothorax",
        -1.0,
    ),
    ("post", 59, "Basilar opacity possibly reflecting atelectasis.", "atelecta", -1.0),
    ("post", 60, "The pneumothorax was not appreciated.", "pneumothorax", -1.0),
    ("post", 61, "Pneumonia could have this appearance.", "pneumonia", -1.0),
    ("post", 62, "Mild vascular congestion.", "vascular congestion", -1.0),
    ("post", 63, "Mild pulmonary congestion.", "pulmonary congestion", -1.0),
    ("post", 64, "Perihilar indistinctness.", "indistinctness", -1.0),
    ("post", 65, "Mild vascular prominence.", "vascular prominence", -1.0),
    ("post", 66, "Atelectasis or pneumonia.", "atelecta", -1.0),
    ("post", 67, "Atelectasis or pneumonia.", "pneumonia", -1.0),
]

#: (phase, rule number, sentence, mention text, why the rule cannot fire on spaCy's parse)
SILENT: list[tuple[str, int, str, str, str]] = [
    (
        "pre",
        4,
        "No new or enlarging pulmonary nodule.",
        "nodule",
        "needs 'new' to govern both 'no' and the finding; spaCy always makes 'new' an amod of "
        "the finding",
    ),
    (
        "neg",
        28,
        "Normal pulmonary vascularity throughout.",
        "vascularity",
        "anchors on 'vascularity' with amod 'pulmonary'; no mention phrase covers 'pulmonary "
        "vascularity' (only 'cardiac silhouette and vascularity'), so it never labels a mention",
    ),
    (
        "neg",
        54,
        "No right pleural effusion.",
        "effusion",
        "needs nsubj(X, no) over a dobj: a BLLIP mis-parse of 'no X' that spaCy does not make",
    ),
    (
        "neg",
        58,
        "No area of consolidation.",
        "consolidat",
        "needs compound(area, no): a BLLIP mis-parse; spaCy gives det -> neg (rule 49/76 fire "
        "instead)",
    ),
    (
        "neg",
        72,
        "No obvious associated pleural effusion.",
        "effusion",
        "needs 'associated' to govern the finding; spaCy makes every modifier an amod of the "
        "finding (rule 73 fires)",
    ),
    (
        "post",
        10,
        "Pneumothorax not excluded.",
        "pneumothorax",
        "needs lemma 'excluded'; spaCy lemmatises to 'exclude' (pre-negation rule 2 fires)",
    ),
    (
        "post",
        13,
        "Atelectasis and-or pneumonia.",
        "atelecta",
        "'and/or' is rewritten to 'or' by the original's cleaning, and spaCy splits 'and-or'",
    ),
    (
        "post",
        14,
        "Atelectasis and/or pneumonia.",
        "pneumonia",
        "'and/or' is rewritten to 'or' by the original's cleaning (rules 66/67 fire instead)",
    ),
    (
        "post",
        22,
        "Cannot rule out pneumonia.",
        "pneumonia",
        "needs nmod:out under 'cannot'; 'cannot rule out' keeps 'rule' as the head "
        "(pre-negation rule 8 fires)",
    ),
    (
        "post",
        32,
        "Pneumothorax, suspect.",
        "pneumothorax",
        "needs advmod 'suspect' under the finding; spaCy makes 'suspect' the head",
    ),
    (
        "post",
        33,
        "Maybe atelectasis.",
        "atelecta",
        "needs dep(maybe, X); spaCy makes 'maybe' an advmod of the finding",
    ),
    (
        "post",
        40,
        "Question left lower lobe pneumonia.",
        "pneumonia",
        "needs 'left' to govern the finding as dobj; BLLIP's reading, which we rebuild as "
        "amod(finding, left) under 'question' (rule 41 fires)",
    ),
    (
        "post",
        43,
        "There may be a small effusion.",
        "effusion",
        "relations attach to the mention: it must depend on 'be' and govern 'may'; in 'there "
        "may be X' 'may' hangs off 'be'",
    ),
    (
        "neg",
        8,
        "No pneumothorax, no effusion.",
        "effusion",
        "needs conj:no; no parser or converter emits 'no' as a coordinator",
    ),
    (
        "neg",
        11,
        "There is no evidence to exclude pneumothorax.",
        "pneumothorax",
        "constrains the node key 'dependency', which nodes never have: dead in the original too",
    ),
    (
        "neg",
        17,
        "No acute findings of pneumonia.",
        "pneumonia",
        "needs nsubj(acute, no) with 'findings' as its dobj: a BLLIP mis-parse spaCy does not make",
    ),
    (
        "post",
        16,
        "Opacity which may represent pneumonia.",
        "pneumonia",
        "asks 'represent' to depend on 'may' through aux, the inverse of every parse",
    ),
    (
        "post",
        20,
        "Blunting of the costophrenic angle.",
        "blunt",
        "anchors on 'angle' with nsubj 'costophrenic' (a mis-parse); no mention phrase covers "
        "'angle'",
    ),
    (
        "post",
        21,
        "Atelectasis is less likely.",
        "atelecta",
        "constrains the edge key 'lemma', which edges never have: dead in the original too",
    ),
]

RULE_COUNTS = {"pre": 9, "neg": 77, "post": 67}


def _rule(phase: str, number: int) -> Pattern:
    rules = default_rules()
    files = {
        "pre": rules.pre_negation_uncertainty,
        "neg": rules.negation,
        "post": rules.post_negation_uncertainty,
    }
    return files[phase][number - 1]


def _graph(labeler: Labeler, sentence: str) -> DepGraph:
    [graph] = labeler.graph_source.graphs([sentence])  # type: ignore[union-attr]
    assert graph is not None
    return propagate(graph)


def _fires(labeler: Labeler, phase: str, number: int, sentence: str, mention: str) -> bool:
    text = clean(sentence)
    start = text.index(mention)
    end = start + len(mention)
    graph = _graph(labeler, text)
    pattern = _rule(phase, number)
    test = negation_matches if phase == "neg" else matches
    return any(
        test(pattern, graph, node_id)
        for node_id, node in graph.nodes.items()
        if node.start < end and start < node.end
    )


def test_every_rule_is_accounted_for_once() -> None:
    seen = [(p, n) for p, n, *_ in FIRING] + [(p, n) for p, n, *_ in SILENT]
    assert len(seen) == len(set(seen)) == 153
    assert {
        p: len(default_rules().__getattribute__(f))
        for p, f in (
            ("pre", "pre_negation_uncertainty"),
            ("neg", "negation"),
            ("post", "post_negation_uncertainty"),
        )
    } == RULE_COUNTS
    assert len(FIRING) == 134


@pytest.mark.parametrize(("phase", "number", "sentence", "mention", "label"), FIRING)
def test_rule_fires_with_expected_label(
    spacy_labeler: Labeler, phase: str, number: int, sentence: str, mention: str, label: float
) -> None:
    assert _fires(spacy_labeler, phase, number, sentence, mention), _graph(
        spacy_labeler, clean(sentence)
    ).describe()
    [result] = spacy_labeler.label_sentences([clean(sentence)])
    labels = {value for _, text, value in result if text == mention}
    assert labels == {label}


@pytest.mark.parametrize(("phase", "number", "sentence", "mention", "why"), SILENT)
def test_silent_rule_stays_silent(
    spacy_labeler: Labeler, phase: str, number: int, sentence: str, mention: str, why: str
) -> None:
    assert why
    [result] = spacy_labeler.label_sentences([clean(sentence)])
    labelled = any(text == mention for _, text, _ in result)
    assert not (labelled and _fires(spacy_labeler, phase, number, sentence, mention))
