"""NegBio's graph propagator (docs/labeler.md §3.3): extra edges that let the rules see through
appositions, noun conjunctions and a few known parse errors.

At most two rounds, stopping early when a round adds nothing. Each round reads a snapshot of
the graph taken at its start, and an edge is added only when that governor/dependent pair
has no edge yet — the same as the original, so the rules see the same graph.
"""

from __future__ import annotations

from pipeline.labeler.graph import DepGraph

_CONJ_COPY = frozenset({"aux", "cop", "neg", "amod"})
_AREA = frozenset({"area", "amount", "combination"})


def _is_noun(graph: DepGraph, node_id: str) -> bool:
    return graph.nodes[node_id].tag.startswith("N")


def _candidates(graph: DepGraph) -> list[tuple[str, str, str]]:
    """Edges proposed by one round, computed on the graph as it is now."""
    nodes = graph.nodes
    out = {k: dict(v) for k, v in graph.out.items()}
    inc = {k: dict(v) for k, v in graph.inc.items()}
    new: list[tuple[str, str, str]] = []

    # hypoinflated ... but clear: nmod:of children move to "clear"
    for p, node in nodes.items():
        if node.lemma != "hypoinflated":
            continue
        clear = next(
            (c for c, lab in out[p].items() if lab == "conj:but" and nodes[c].lemma == "clear"),
            None,
        )
        if clear is not None:
            new.extend((clear, x, "nmod:of") for x, lab in out[p].items() if lab == "nmod:of")

    edges = [(g, d, lab) for g, deps in out.items() for d, lab in deps.items()]
    for p, c, label in edges:
        if label == "appos":
            new.extend((g, c, lab) for g, lab in inc[p].items())
            new.extend((c, n, "neg") for n, lab in out[p].items() if lab == "neg")
    for p, c, label in edges:
        if label == "dep" and _is_noun(graph, p) and _is_noun(graph, c):
            new.extend((p, n, "neg") for n, lab in out[c].items() if lab == "neg")
    for p, c, label in edges:
        if label.startswith("conj") and _is_noun(graph, p) and _is_noun(graph, c):
            for x, lab in out[p].items():
                lemma = nodes[x].lemma
                if (
                    lab in _CONJ_COPY
                    or (lab in ("dep", "compound") and lemma == "no")
                    or (lab == "case" and lemma == "without")
                ):
                    new.append((c, x, lab))
    for p, c, label in edges:
        if label == "nmod:of" and nodes[p].lemma in _AREA:
            new.extend((g, c, lab) for g, lab in inc[p].items())
    for p, c, label in edges:
        if label == "nmod:of":
            new.extend((c, n, "neg") for n, lab in out[p].items() if lab == "neg")
    for p, c, label in edges:
        if label == "neg" and any(nodes[x].lemma in ("or", "and") for x in out[p]):
            new.extend(
                (x, c, "neg")
                for x, lab in out[p].items()
                if lab == "compound" and _is_noun(graph, x)
            )
    return new


def propagate(graph: DepGraph, rounds: int = 2) -> DepGraph:
    """Add the propagated edges in place and return the graph."""
    for _ in range(rounds):
        added = 0
        for governor, dependent, label in _candidates(graph):
            if not graph.has_edge(governor, dependent):
                graph.add_edge(governor, dependent, label)
                added += 1
        if not added:
            break
    return graph
