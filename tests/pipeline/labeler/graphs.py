"""Hand-built dependency graphs for the matcher/propagator/detector tests."""

from __future__ import annotations

from pipeline.labeler.graph import DepGraph, Node


def build(tokens: list[str], edges: list[tuple[int, str, int]]) -> DepGraph:
    """``tokens`` as ``"text"`` or ``"text/lemma/TAG"``; edges as (governor, label, dependent).

    Spans are laid out as if the tokens were joined by single spaces.
    """
    graph = DepGraph()
    position = 0
    for i, token in enumerate(tokens):
        text, lemma, tag = ([*token.split("/"), "", ""])[:3]
        graph.add_node(
            Node(f"T{i}", text, lemma or text, tag or "NN", position, position + len(text))
        )
        position += len(text) + 1
    for governor, label, dependent in edges:
        graph.add_edge(f"T{governor}", f"T{dependent}", label)
    return graph
