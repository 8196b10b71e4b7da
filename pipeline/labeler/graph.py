"""The dependency-graph type the rules run on, the graph-source interface, and a BioC reader.

A deliberately small replacement for the networkx ``DiGraph`` NegBio uses (so ``pipeline``
needs neither networkx nor torch). It keeps the one DiGraph property the rules can observe:
at most one edge per ordered (governor, dependent) pair, a later ``add_edge`` overwriting the
earlier label. Node spans are *sentence-relative* everywhere in this package.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Node:
    """A token: CoreNLP-style PTB ``tag``, lower-case ``lemma`` and a [start, end) span."""

    id: str
    text: str
    lemma: str
    tag: str
    start: int
    end: int

    def attr(self, key: str) -> str | None:
        """Attribute lookup for ngrex; unknown keys (e.g. ``dependency``) give ``None``."""
        if key == "lemma":
            return self.lemma
        if key == "tag":
            return self.tag
        if key == "text":
            return self.text
        if key == "start":
            return str(self.start)
        if key == "end":
            return str(self.end)
        return None


@dataclass
class DepGraph:
    """Nodes plus labelled edges governor -> dependent, indexed both ways."""

    nodes: dict[str, Node] = field(default_factory=dict)
    out: dict[str, dict[str, str]] = field(default_factory=dict)
    inc: dict[str, dict[str, str]] = field(default_factory=dict)

    def add_node(self, node: Node) -> None:
        self.nodes[node.id] = node
        self.out.setdefault(node.id, {})
        self.inc.setdefault(node.id, {})

    def add_edge(self, governor: str, dependent: str, label: str) -> None:
        """Add or overwrite the edge (DiGraph semantics)."""
        self.out[governor][dependent] = label
        self.inc[dependent][governor] = label

    def has_edge(self, governor: str, dependent: str) -> bool:
        return dependent in self.out.get(governor, {})

    def edges(self) -> list[tuple[str, str, str]]:
        """All edges as (governor, dependent, label), in insertion order."""
        return [(g, d, lab) for g, deps in self.out.items() for d, lab in deps.items()]

    def describe(self) -> list[str]:
        """``label(governor-text, dependent-text)`` strings, handy in tests and debugging."""
        n = self.nodes
        return [f"{lab}({n[g].text}, {n[d].text})" for g, d, lab in self.edges()]


class GraphSource(Protocol):
    """Anything that turns sentences into dependency graphs in CoreNLP UD conventions.

    ``None`` means the sentence could not be parsed/converted; the original then leaves all
    its mentions positive.
    """

    def graphs(self, sentences: Sequence[str]) -> list[DepGraph | None]: ...


@dataclass
class BiocSentence:
    """A sentence read from a BioC file, with its document offset and graph."""

    text: str
    offset: int
    graph: DepGraph


@dataclass
class BiocDocument:
    id: str
    sentences: list[BiocSentence]


def read_bioc_graphs(path: Path) -> list[BiocDocument]:
    """Read NegBio ``ptb2ud`` output (token annotations + dependency relations) from BioC XML.

    This is the parser-free graph source: it lets the matcher, propagator and detector be
    tested on real CoreNLP 3.5.2 graphs (negbio2 ``tests/data/1.ptb2ud.xml``).
    """
    documents = []
    for doc in ET.parse(path).getroot().iter("document"):
        sentences = []
        for sentence in doc.iter("sentence"):
            offset = int(sentence.findtext("offset", "0"))
            graph = DepGraph()
            for ann in sentence.findall("annotation"):
                infons = {i.get("key"): i.text or "" for i in ann.findall("infon")}
                loc = ann.find("location")
                start = int(loc.get("offset", "0")) - offset if loc is not None else 0
                length = int(loc.get("length", "0")) if loc is not None else 0
                graph.add_node(
                    Node(
                        id=ann.get("id", ""),
                        text=ann.findtext("text", ""),
                        lemma=infons.get("lemma", "").lower(),
                        tag=infons.get("tag", ""),
                        start=start,
                        end=start + length,
                    )
                )
            for rel in sentence.findall("relation"):
                infons = {i.get("key"): i.text or "" for i in rel.findall("infon")}
                roles = {n.get("role"): n.get("refid") for n in rel.findall("node")}
                gov, dep = roles.get("governor"), roles.get("dependant")
                if gov in graph.nodes and dep in graph.nodes:
                    graph.add_edge(gov, dep, infons.get("dependency", ""))
            sentences.append(BiocSentence(sentence.findtext("text", ""), offset, graph))
        documents.append(BiocDocument(doc.findtext("id", ""), sentences))
    return documents
