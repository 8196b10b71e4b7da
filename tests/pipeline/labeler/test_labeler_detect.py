"""(a) Propagator and three-phase detector on hand-built graphs (docs/labeler.md §3.3, §4.2)."""

from __future__ import annotations

from pipeline.labeler.detect import (
    NEGATION,
    UNCERTAINTY,
    classify_node,
    default_rules,
    detect_sentence,
)
from pipeline.labeler.mentions import Mention
from pipeline.labeler.propagate import propagate
from tests.pipeline.labeler.graphs import build


def test_conj_between_nouns_copies_neg_amod_and_case_without() -> None:
    graph = build(
        ["no/no/DT", "edema/edema/NN", "or/or/CC", "pneumonia/pneumonia/NN", "without/without/IN"],
        [(1, "neg", 0), (1, "cc", 2), (1, "conj:or", 3), (1, "case", 4)],
    )
    propagate(graph)
    assert graph.out["T3"] == {"T0": "neg", "T4": "case"}
    assert "T2" not in graph.out["T3"]  # cc is not copied


def test_appos_area_of_and_negated_x_of_y() -> None:
    graph = build(
        ["no", "area", "of", "consolidation", "seen/see/VBN"],
        [(4, "nsubjpass", 1), (1, "neg", 0), (1, "nmod:of", 3)],
    )
    propagate(graph)
    assert graph.out["T4"]["T3"] == "nsubjpass"  # area/amount/combination of X
    assert graph.out["T3"]["T0"] == "neg"  # X of Y with negated X
    appos = build(["effusion", "finding", "no"], [(1, "appos", 0), (1, "neg", 2)])
    propagate(appos)
    assert appos.out["T0"]["T2"] == "neg"


def test_propagation_never_overwrites_and_stops() -> None:
    graph = build(["a/a/NN", "b/b/NN", "no"], [(0, "conj:and", 1), (0, "neg", 2), (1, "amod", 2)])
    propagate(graph)
    assert graph.out["T1"]["T2"] == "amod"
    assert len(graph.edges()) == 3


def _flags(tokens, edges, mentions, text="x"):
    graph = build(tokens, edges)
    found = [
        Mention("X", "x", "x", graph.nodes[f"T{i}"].start, graph.nodes[f"T{j}"].end)
        for i, j in mentions
    ]
    return [
        (f.negation, f.uncertainty) for f in detect_sentence(text, found, graph, default_rules())
    ]


def test_phase_order_pre_negation_uncertainty_wins() -> None:
    # "cannot exclude effusion": the generic neg rule would fire, phase 1 comes first
    tokens = ["cannot/cannot/MD", "exclude/exclude/VB", "effusion"]
    assert _flags(tokens, [(1, "aux", 0), (1, "dobj", 2)], [(2, 2)]) == [(False, True)]
    # "X is not excluded" (neg on the governor)
    tokens = ["effusion", "not/not/RB", "excluded/exclude/VBN"]
    assert _flags(tokens, [(2, "nsubjpass", 0), (2, "neg", 1)], [(0, 0)]) == [(False, True)]


def test_no_new_veto_and_key_veto() -> None:
    tokens = ["no/no/DT", "new/new/JJ", "consolidation"]
    assert _flags(tokens, [(2, "neg", 0), (2, "amod", 1)], [(2, 2)]) == [(False, True)]
    # "do not rule out effusion": the key node 'rule' has a neg child -> match ignored
    tokens = ["not/not/RB", "rule/rule/VB", "effusion"]
    result = _flags(tokens, [(1, "neg", 0), (1, "nmod:out", 2)], [(2, 2)])
    assert result == [(False, False)]
    assert _flags(tokens, [(1, "nmod:out", 2)], [(2, 2)]) == [(True, False)]


def test_marks_contained_mentions_and_both_flags() -> None:
    # "heart size": 'size' negated by 'normal'; 'heart' alone stays unmarked, but the mention
    # "heart" lies inside the loc "heart size" and is therefore marked too.
    tokens = ["heart", "size", "normal/normal/JJ", "may/may/MD"]
    edges = [(1, "compound", 0), (1, "xcomp", 2), (0, "aux", 3)]
    assert _flags(tokens, edges, [(0, 1), (0, 0)]) == [(True, True), (True, True)]


def test_shortcut_and_unparsed_sentences() -> None:
    mention = [Mention("Pneumothorax", "pneumothorax", "pneumothorax", 13, 25)]
    [flag] = detect_sentence("findings: no pneumothorax.", mention, None, default_rules())
    assert flag.negation and not flag.uncertainty
    [flag] = detect_sentence(
        "pneumothorax.", [Mention("P", "p", "pneumothorax", 0, 12)], None, default_rules()
    )
    assert not flag.negation and not flag.uncertainty


def test_classify_node_phases() -> None:
    graph = propagate(
        build(["pneumonia", "or/or/CC", "atelectasis"], [(0, "cc", 1), (0, "conj:or", 2)])
    )
    assert classify_node(graph, "T2", default_rules()) == UNCERTAINTY
    graph = propagate(build(["no/no/DT", "pneumothorax"], [(1, "neg", 0)]))
    assert classify_node(graph, "T1", default_rules()) == NEGATION
    assert classify_node(graph, "T0", default_rules()) is None
