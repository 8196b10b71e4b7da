"""(a) The ngrex pattern parser and matcher on hand-built graphs (docs/labeler.md §4.1)."""

from __future__ import annotations

import pytest

from pipeline.labeler.ngrex import (
    NgrexSyntaxError,
    NodeDesc,
    Pattern,
    compile_pattern,
    match,
    matches,
)
from tests.pipeline.labeler.graphs import build

# "no evidence of focal infiltrate or effusion" in CoreNLP UD CCprocessed form
EVIDENCE = build(
    ["no", "evidence", "of", "focal/focal/JJ", "infiltrate", "or/or/CC", "effusion"],
    [
        (1, "neg", 0),
        (4, "case", 2),
        (4, "amod", 3),
        (1, "nmod:of", 4),
        (4, "cc", 5),
        (4, "conj:or", 6),
        (1, "nmod:of", 6),
    ],
)


def test_parser_structure() -> None:
    pattern = compile_pattern("({} > {} {}) < {dependency:/nsubj|dobj/} {lemma:/normal/}=key")
    assert isinstance(pattern.head, Pattern)
    assert len(pattern.alternatives) == 1
    (relation,) = pattern.alternatives[0]
    assert relation.direction == "<"
    assert relation.edge.items[0][:2] == ("dependency", "nsubj|dobj")
    assert isinstance(relation.rhs, NodeDesc) and relation.rhs.name == "key"
    chained = compile_pattern("{} > {} {lemma:/new/} & > {dependency:/neg/} {lemma:/no/}")
    assert len(chained.alternatives[0]) == 2
    implicit = compile_pattern("{} < {} ({lemma:/area/} > {} {lemma:/no/} > {} {lemma:/new/})")
    assert len(implicit.alternatives[0][0].rhs.alternatives[0]) == 2
    assert len(compile_pattern("{} > {} {lemma:/a/} | < {} {lemma:/b/}").alternatives) == 2


@pytest.mark.parametrize(
    "bad",
    ["{} <", "{lemma:normal}", "{} {}", "({} > {} {}", "{}=a > {} {}=a", "{} ~ {} {}", "{} ! {}"],
)
def test_parser_rejects_bad_patterns(bad: str) -> None:
    with pytest.raises(NgrexSyntaxError):
        compile_pattern(bad)


def test_relations_anchor_at_the_mention_node() -> None:
    no_evidence_of = compile_pattern(
        "{} <{dependency:/nmod:of|nmod:for/} ({lemma:/evidence/} >{dependency:/neg/} {})"
    )
    assert matches(no_evidence_of, EVIDENCE, "T4")
    assert matches(no_evidence_of, EVIDENCE, "T6")  # through the propagated nmod:of edge
    assert not matches(no_evidence_of, EVIDENCE, "T1")  # group 0 must be the mention node
    assert not matches(compile_pattern("{} > {dependency:/neg/} {}"), EVIDENCE, "T4")
    assert matches(compile_pattern("{} > {dependency:/neg/} {}"), EVIDENCE, "T1")


def test_several_relations_attach_to_the_same_node_not_a_chain() -> None:
    siblings = compile_pattern("{} > {dependency:/neg/} {} > {dependency:/nmod:of/} {}")
    assert matches(siblings, EVIDENCE, "T1")
    chain = compile_pattern("{} > {dependency:/nmod:of/} {} > {dependency:/amod/} {}")
    assert not matches(chain, EVIDENCE, "T1")  # evidence has no amod child itself
    nested = compile_pattern("{} > {dependency:/nmod:of/} ({} > {dependency:/amod/} {})")
    assert matches(nested, EVIDENCE, "T1")


def test_regex_anchoring_quirk() -> None:
    graph = build(["x", "normally/normally/RB", "remarkably/unremarkable/JJ"], [(0, "amod", 1)])
    quirky = compile_pattern("{} > {} {lemma:/normal|unremarkable/}")
    assert matches(quirky, graph, "T0")  # first alternative is only a prefix test
    graph2 = build(["x", "y/xunremarkable/JJ"], [(0, "amod", 1)])
    assert matches(quirky, graph2, "T0") is False  # re.match anchors the start of the last one
    graph3 = build(["x", "appearance"], [(0, "dep", 1)])
    assert matches(compile_pattern("{} > {} {lemma:/appear|remain/}"), graph3, "T0")
    assert not matches(
        compile_pattern("{} > {} {lemma:/no/}"), build(["x", "none"], [(0, "dep", 1)]), "T0"
    )
    explicit = compile_pattern("{} > {} {lemma:/^no/}")
    assert matches(explicit, build(["x", "none"], [(0, "dep", 1)]), "T0")


def test_dead_rules_stay_dead() -> None:
    graph = build(["effusion", "exclude/exclude/VB", "no"], [(1, "dobj", 0), (1, "neg", 2)])
    assert not matches(compile_pattern("{} < {} ({dependency:/exclude/} < {} {})"), graph, "T0")
    nsubj = build(["effusion", "likely", "less"], [(1, "nsubj", 0), (1, "advmod", 2)])
    dead = compile_pattern("{} < {lemma:/nsubj/} ({} > {} {lemma:/less/})")
    assert not matches(dead, nsubj, "T0")
    assert matches(
        compile_pattern("{} < {dependency:/nsubj/} ({} > {} {lemma:/less/})"), nsubj, "T0"
    )


def test_and_requires_the_same_group_zero_and_tag_constraints() -> None:
    graph = build(
        ["effusion", "new/new/JJ", "no/no/DT", "suspected/suspect/VBN"],
        [(0, "amod", 1), (0, "neg", 2), (3, "nsubj", 0)],
    )
    assert matches(
        compile_pattern("{} > {} {lemma:/new/} & > {dependency:/neg/} {lemma:/no/}"), graph, "T0"
    )
    assert not matches(
        compile_pattern("{} > {} {lemma:/new/} & > {dependency:/amod/} {lemma:/no/}"), graph, "T0"
    )
    assert matches(
        compile_pattern("{} <{dependency:/nsubj/} {lemma:/suspect/,tag:/VBN/}"), graph, "T0"
    )
    assert not matches(
        compile_pattern("{} <{dependency:/nsubj/} {lemma:/suspect/,tag:/VBD/}"), graph, "T0"
    )


def test_named_nodes_are_bound() -> None:
    graph = build(
        ["effusion", "clear/clear/JJ", "a/clearing/NN"], [(1, "nmod:of", 0), (2, "nmod:without", 0)]
    )
    pattern = compile_pattern(
        "{} <{dependency:/nmod:without|nmod:of/} {lemma:/clear|clearing/}=key"
    )
    assert [b["key"] for b in match(pattern, graph, "T0")] == ["T1", "T2"]


def test_a_negated_relation_matches_when_no_neighbour_does() -> None:
    """``!`` (ours, Semgrex's meaning): the node has no such neighbour; it binds nothing."""
    focal = compile_pattern("{} !> {dependency:/amod/} {lemma:/focal/}")
    assert focal.alternatives[0][0].negated
    assert not matches(focal, EVIDENCE, "T4")  # "focal infiltrate"
    assert matches(focal, EVIDENCE, "T6")  # "effusion" has no "focal" of its own
    guarded = compile_pattern(
        "{} < {dependency:/nmod:of/} {lemma:/evidence/} !> {dependency:/amod/} {lemma:/focal/}"
    )
    assert [matches(guarded, EVIDENCE, t) for t in ("T4", "T6")] == [False, True]
    either = compile_pattern("{} !< {} {lemma:/evidence/} | > {} {lemma:/focal/}")
    assert matches(either, EVIDENCE, "T4") and not matches(either, EVIDENCE, "T6")
    # the original's files never use it, so their parsed rules are unchanged
    assert not compile_pattern("{} > {} {lemma:/no/}").alternatives[0][0].negated
