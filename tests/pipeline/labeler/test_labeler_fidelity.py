"""Error classes found on real reports, each pinned with sentences of our own.

Every class is a place where spaCy's parse, converted naively, hid a sentence from a rule that
the original's BLLIP + CoreNLP graph would have shown it to (``docs/labeler_fidelity.md``).
The rules and phrases are the original's, unchanged; only the parse/conversion/matching moved.
The negbio2 reports are also run end to end through spaCy against NegBio's expected labels.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from pipeline.labeler import label_reports
from pipeline.labeler.api import Labeler
from pipeline.labeler.spacy_graph import SpacyGraphSource, convert
from pipeline.records import CHEXPERT_LABELS
from tests.pipeline.labeler.conftest import FIXTURES

NEGATIVE_NORMAL = {"No Finding": 1.0}


def _present(labeler: Labeler, text: str) -> dict[str, float]:
    [row] = label_reports([text], labeler=labeler).to_dict("records")
    return {k: v for k, v in row.items() if not math.isnan(v)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # section title kept in the sentence: spaCy made "findings"/"impression" the root
        (
            "Impression: cardiac silhouette within normal limits on both views.",
            {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0},
        ),
        (
            "Findings: heart size and hilar vascularity within normal limits.",
            {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0},
        ),
        # mention scope: "the heart" only modifies "size", which the within-limits rule catches
        (
            "The heart size again appears within normal limits.",
            {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0},
        ),
        (
            "The heart size and hilar contours appear within normal limits.",
            {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
        ),
        (
            "No consolidative parenchymal opacities.",
            {**NEGATIVE_NORMAL, "Consolidation": 0.0, "Lung Opacity": 0.0},
        ),
        # coordination: adjective conjunct ("... or pleural effusions")
        (
            "No edema or pleural effusions.",
            {**NEGATIVE_NORMAL, "Edema": 0.0, "Pleural Effusion": 0.0},
        ),
        (
            "No pneumothorax or pleural effusions identified.",
            {**NEGATIVE_NORMAL, "Pneumothorax": 0.0, "Pleural Effusion": 0.0},
        ),
        # coordination: the first noun under "no" parsed as preconj
        (
            "There is no edema, pleural effusion, or focal airspace consolidation.",
            {**NEGATIVE_NORMAL, "Edema": 0.0, "Pleural Effusion": 0.0, "Consolidation": 0.0},
        ),
        # coordination: a noun list chained behind a mis-tagged verb
        (
            "Lungs well expanded, no airspace disease, pleural effusion, or pneumothorax.",
            {**NEGATIVE_NORMAL, "Lung Opacity": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
        ),
        # coordination: a list split into two subjects of the verb
        (
            "No focal opacity, pleural effusion, or pneumothorax is demonstrated.",
            {**NEGATIVE_NORMAL, "Lung Opacity": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
        ),
        # coordination: a plural noun the tagger took for a verb
        (
            "No consolidation or other patchy infiltrates.",
            {**NEGATIVE_NORMAL, "Consolidation": 0.0, "Lung Opacity": 0.0},
        ),
        # negated coordinators -> conj:negcc ("rather than XXX" is a negation rule)
        (
            "Findings favor atelectasis rather than pneumonia.",
            {"Atelectasis": -1.0, "Pneumonia": 0.0},
        ),
        ("Subsegmental atelectasis but not pneumonia.", {"Atelectasis": 1.0, "Pneumonia": 0.0}),
        # flat noun phrase: the original's "borderline heart size" rule (uncertain) now fires
        ("Borderline heart size on this portable film.", {"Cardiomegaly": -1.0}),
        # "left" is the side, not the verb: "question left ..." is the original's uncertainty rule
        ("Question left lower lobe pneumonia.", {"Pneumonia": -1.0}),
        ("Left lower lobe pneumonia.", {"Pneumonia": 1.0}),
        # participle before a noun read as a verb with the noun as its object: the noun takes
        # the participle's slot, so the rule about that slot reaches it
        ("No evidence of developing pneumonia.", {**NEGATIVE_NORMAL, "Pneumonia": 0.0}),
        ("Nodular focus, worrisome for developing pneumonia.", {"Pneumonia": -1.0}),
        (
            "The opacity could reflect scarring or evolving pneumonia.",
            {"Lung Opacity": 1.0, "Pneumonia": -1.0},
        ),
        (
            "No sizable effusion or visualized pneumothorax.",
            {**NEGATIVE_NORMAL, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
        ),
        ("The appearance could be evolving or resolving edema.", {"Edema": -1.0}),
        # ... but a participle that is a clause of its own keeps its object
        ("Opacity suggesting pneumonia.", {"Lung Opacity": 1.0, "Pneumonia": 1.0}),
        ("The patient is developing pneumonia.", {"Pneumonia": 1.0}),
        # a reply "No," before a clause answers the question; read as a negation of the verb
        # it vetoed "X has resolved" (double negative) and left the finding positive
        ("No, the pneumothorax has resolved.", {**NEGATIVE_NORMAL, "Pneumothorax": 0.0}),
        ("No, there is no pleural effusion.", {**NEGATIVE_NORMAL, "Pleural Effusion": 0.0}),
        ("No apical pneumothorax.", {**NEGATIVE_NORMAL, "Pneumothorax": 0.0}),
        # one determiner per noun phrase: spaCy hung "no" on an unknown pre-modifier (Open-I's
        # de-identification token XXXX), so the finding itself stayed positive
        ("No XXXX focal lobar consolidation.", {**NEGATIVE_NORMAL, "Consolidation": 0.0}),
        ("There are no XXXX acute consolidations.", {**NEGATIVE_NORMAL, "Consolidation": 0.0}),
        # ... and an unknown proper noun never takes the findings as its objects
        (
            "No XXXX lobar consolidation or pleural effusion.",
            {**NEGATIVE_NORMAL, "Consolidation": 0.0, "Pleural Effusion": 0.0},
        ),
        # a verbless negated noun phrase read as a clause ("infiltrates" as a verb, or a
        # pre-modifier as a verb with the finding as its object)
        ("No bibasilar infiltrates.", {**NEGATIVE_NORMAL, "Lung Opacity": 0.0}),
        ("No cervical XXXX fractures.", {**NEGATIVE_NORMAL, "Fracture": 0.0}),
        ("The opacity infiltrates the lung.", {"Lung Opacity": 1.0}),
        # a preposition that is a conjunct or the root: its object heads the phrase, as in UD
        (
            "The lungs are expanded, and without focal opacity.",
            {**NEGATIVE_NORMAL, "Lung Opacity": 0.0},
        ),
        ("Without evidence of a pleural effusion.", {**NEGATIVE_NORMAL, "Pleural Effusion": 0.0}),
        # a copula keeps its predicate: spaCy gave "normal" to the next clause's subject
        (
            "Heart size is normal and mediastinal contours are normal.",
            {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
        ),
        ("Heart size is normal lungs are hyperinflated.", {**NEGATIVE_NORMAL, "Cardiomegaly": 0.0}),
        (
            "The heart is enlarged and pleural effusions are present.",
            {"Cardiomegaly": 1.0, "Pleural Effusion": 1.0},
        ),
        # conjoined adjective predicates share the subject (CCprocessed): "normal" reaches it
        (
            "The mediastinal silhouette is stable and unremarkable.",
            {**NEGATIVE_NORMAL, "Enlarged Cardiomediastinum": 0.0},
        ),
        # an adjective hung on the next adjective joins the flat noun phrase: the hedge
        # reaches the finding
        ("There is a probable small left pleural effusion.", {"Pleural Effusion": -1.0}),
        ("There is a small left pleural effusion.", {"Pleural Effusion": 1.0}),
        # two negated noun phrases, each with its own "to suggest": spaCy hung the second on
        # the first, with the second noun its object, out of reach of "no"
        (
            "No apical pleural line to suggest a pneumothorax or costophrenic angle blunting "
            "to suggest an effusion.",
            {
                **NEGATIVE_NORMAL,
                "Pleural Effusion": 0.0,
                "Pneumothorax": 0.0,
                "Support Devices": 0.0,
            },
        ),
        (
            "No pleural line to suggest pneumothorax or blunting to suggest effusion.",
            {
                **NEGATIVE_NORMAL,
                "Pleural Effusion": 0.0,
                "Pneumothorax": 0.0,
                "Support Devices": 0.0,
            },
        ),
    ],
)
def test_error_classes(spacy_labeler: Labeler, text: str, expected: dict[str, float]) -> None:
    assert _present(spacy_labeler, text) == expected


def _graph_edges(labeler: Labeler, sentence: str) -> set[str]:
    source = labeler.graph_source
    assert isinstance(source, SpacyGraphSource)
    [graph] = source.graphs([sentence])
    assert graph is not None
    return set(graph.describe())


def test_conversion_rebuilds_corenlp_structures(spacy_labeler: Labeler) -> None:
    edges = _graph_edges(spacy_labeler, "no edema or pleural effusions.")
    assert {"neg(edema, no)", "conj:or(edema, effusions)", "amod(effusions, pleural)"} <= edges
    edges = _graph_edges(spacy_labeler, "there is no edema, pleural effusion, or consolidation.")
    assert {"neg(edema, no)", "conj:or(edema, effusion)", "conj:or(edema, consolidation)"} <= edges
    edges = _graph_edges(spacy_labeler, "atelectasis rather than pneumonia.")
    assert "conj:negcc(atelectasis, pneumonia)" in edges
    assert {"compound(size, borderline)", "compound(size, heart)"} <= _graph_edges(
        spacy_labeler, "borderline heart size on this portable film."
    )
    edges = _graph_edges(spacy_labeler, "question left pneumothorax.")
    assert {"dobj(question, pneumothorax)", "amod(pneumothorax, left)"} <= edges
    edges = _graph_edges(spacy_labeler, "no, the pneumothorax has resolved.")
    assert "discourse(resolved, no)" in edges and "neg(resolved, no)" not in edges
    edges = _graph_edges(spacy_labeler, "no xxxx focal lobar consolidation.")
    assert "neg(consolidation, no)" in edges and "neg(xxxx, no)" not in edges
    edges = _graph_edges(spacy_labeler, "no xxxx lobar consolidation or pleural effusion.")
    assert {"neg(consolidation, no)", "conj:or(consolidation, effusion)"} <= edges
    assert not any(e.startswith("dobj(xxxx") for e in edges)
    edges = _graph_edges(spacy_labeler, "no bibasilar infiltrates.")
    assert {"neg(infiltrates, no)", "compound(infiltrates, bibasilar)"} <= edges
    edges = _graph_edges(spacy_labeler, "the lungs are expanded, and without focal opacity.")
    assert {"conj:and(expanded, opacity)", "case(opacity, without)"} <= edges
    edges = _graph_edges(spacy_labeler, "heart size is normal and mediastinal contours are normal.")
    assert {"nsubj(normal, size)", "cop(normal, is)", "amod(contours, mediastinal)"} <= edges
    edges = _graph_edges(spacy_labeler, "the mediastinal silhouette is stable and unremarkable.")
    assert {"nsubj(stable, silhouette)", "nsubj(unremarkable, silhouette)"} <= edges


def test_section_title_is_parsed_apart_and_keeps_offsets(spacy_labeler: Labeler) -> None:
    sentence = "findings: cardiac silhouette within normal limits on both views."
    source = spacy_labeler.graph_source
    assert isinstance(source, SpacyGraphSource)
    [graph] = source.graphs([sentence])
    assert graph is not None
    assert all(sentence[n.start : n.end] == n.text for n in graph.nodes.values())
    assert "nmod:within(silhouette, limits)" in graph.describe()
    title = [n for n in graph.nodes.values() if n.text == "findings"]
    assert len(title) == 1 and not graph.out[title[0].id] and not graph.inc[title[0].id]
    # the plain conversion of the whole sentence is what spaCy gives: the title is the root
    whole = convert(source.nlp(sentence)).describe()
    assert "nmod:within(silhouette, limits)" not in whole


def test_negbio_reports_through_spacy_give_negbio_labels(spacy_labeler: Labeler) -> None:
    """negbio2's two reports (the passage text of 1.neg_chexpert.xml) -> its document labels."""
    result = {"Positive": 1.0, "Negative": 0.0, "Uncertain": -1.0}
    documents = list(ET.parse(FIXTURES / "1.neg_chexpert.xml").getroot().iter("document"))
    assert len(documents) == 2
    for document in documents:
        expected = {k: math.nan for k in CHEXPERT_LABELS}
        for infon in document.findall("infon"):
            key = infon.get("key", "")
            if key.startswith("CheXpert/"):
                name = key.split("/", 1)[1].replace("Airspace Opacity", "Lung Opacity")
                expected[name] = result[infon.text or ""]
        text = document.findtext("passage/text") or ""
        [row] = label_reports([text], labeler=spacy_labeler).to_dict("records")
        for category in CHEXPERT_LABELS:
            got, want = row[category], expected[category]
            assert (math.isnan(got) and math.isnan(want)) or got == want, (
                document.findtext("id"),
                category,
            )


def test_repairs_never_make_a_cycle() -> None:
    from pipeline.labeler.spacy_graph import _is_ancestor

    heads = [1, 2, -1, 2]  # 0 -> 1 -> 2 (root) <- 3
    assert _is_ancestor(heads, 2, 0) and _is_ancestor(heads, 1, 0)
    assert not _is_ancestor(heads, 3, 0) and not _is_ancestor(heads, 0, 2)
    assert not _is_ancestor([1, 0], 5, 0)  # a cycle in the input ends the walk


def test_participle_before_a_noun_becomes_its_modifier(spacy_labeler: Labeler) -> None:
    """The noun, not the participle, is the preposition's object and the conjunct."""
    edges = _graph_edges(spacy_labeler, "No evidence of developing pneumonia.")
    assert "nmod:of(evidence, pneumonia)" in edges and "amod(pneumonia, developing)" in edges
    assert not any(e.startswith("dobj(developing") for e in edges)
    edges = _graph_edges(spacy_labeler, "No sizable effusion or visualized pneumothorax.")
    assert "conj:or(effusion, pneumothorax)" in edges
    assert "amod(pneumothorax, visualized)" in edges
    edges = _graph_edges(spacy_labeler, "The opacity could reflect scarring or evolving pneumonia.")
    assert "conj:or(scarring, pneumonia)" in edges and "dobj(reflect, pneumonia)" in edges


def test_a_preposition_never_keeps_a_subject() -> None:
    """spaCy's shape for "this could reflect lobar pneumonia given fever" (seen on real
    reports, not reproducible on every wording): "pneumonia" is the subject of "given"."""
    from pipeline.labeler.spacy_graph import _repair_subject_of_preposition

    # this could reflect lobar pneumonia given fever .
    heads = [2, 2, -1, 4, 5, 2, 5, 2]
    labels = ["nsubj", "aux", "ROOT", "amod", "nsubj", "prep", "dobj", "punct"]
    tags = ["DT", "MD", "VB", "JJ", "NN", "VBN", "NN", "."]
    _repair_subject_of_preposition(heads, labels, tags)
    assert (heads[4], labels[4]) == (2, "dobj")  # the verb's object, for "could reflect XXX"
    assert (heads[6], labels[6]) == (5, "pobj")  # -> nmod:given(reflect, fever)
    # a verb that already has its object keeps its parse
    heads = [2, 2, -1, 2, 5, 2, 5, 2]
    labels = ["nsubj", "aux", "ROOT", "dobj", "nsubj", "prep", "dobj", "punct"]
    tags = ["DT", "MD", "VB", "NN", "NN", "VBN", "NN", "."]
    _repair_subject_of_preposition(heads, labels, tags)
    assert (heads[4], labels[4]) == (5, "nsubj")


def test_a_word_alone_in_a_noun_slot_is_a_noun(spacy_labeler: Labeler) -> None:
    """spaCy tags "adenopathy" JJ; at the end of a noun list it heads its own noun phrase, so
    "no" reaches it along the conjunction. An adjective before its noun keeps its tag."""
    source = spacy_labeler.graph_source
    assert isinstance(source, SpacyGraphSource)
    for sentence in ("no effusion or adenopathy.", "no nodules or adenopathy are seen."):
        [graph] = source.graphs([sentence])
        assert graph is not None
        [word] = [n for n in graph.nodes.values() if n.text == "adenopathy"]
        assert word.tag == "NN", sentence
    [graph] = source.graphs(["no effusion or pleural thickening."])
    assert graph is not None
    assert {n.text: n.tag for n in graph.nodes.values()}["pleural"] == "JJ"


def test_a_redacted_verb_heads_its_clause(spacy_labeler: Labeler) -> None:
    """Open-I's de-identification token where the verb was: the finding is its subject."""
    edges = _graph_edges(spacy_labeler, "the heart and lungs have xxxx xxxx since the last study.")
    assert {"nsubj(xxxx, heart)", "aux(xxxx, have)"} <= edges
    assert not any(e.startswith("dobj(have") for e in edges)
    edges = _graph_edges(spacy_labeler, "heart size xxxx within normal limits.")
    assert {"nsubj(xxxx, size)", "nmod:within(xxxx, limits)"} <= edges
    # so the original's within-normal-limits rule reaches the finding
    assert _present(spacy_labeler, "Heart size XXXX within normal limits.") == {
        "Cardiomegaly": 0.0,
        "No Finding": 1.0,
    }
    # a token that is no verb keeps its place
    edges = _graph_edges(spacy_labeler, "no xxxx focal lobar consolidation.")
    assert "neg(consolidation, no)" in edges


def test_parallel_infinitives_become_two_noun_phrases(spacy_labeler: Labeler) -> None:
    edges = _graph_edges(
        spacy_labeler, "no pleural line to suggest pneumothorax or blunting to suggest effusion."
    )
    assert {"conj:or(line, blunting)", "acl(blunting, suggest)", "neg(line, no)"} <= edges
    assert not any(e.startswith("advcl(suggest") for e in edges)
    # one verb with two objects stays as it is
    edges = _graph_edges(spacy_labeler, "no opacity to suggest pneumonia or edema.")
    assert "conj:or(pneumonia, edema)" in edges
