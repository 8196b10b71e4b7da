"""Our own parser and matcher for NegBio's "ngrex" pattern language (docs/labeler.md §4.1).

Grammar (whitespace is ignored)::

    pattern  := primary relexpr?
    primary  := node | "(" pattern ")"
    relexpr  := andexpr ("|" andexpr)*
    andexpr  := relation ("&"? relation)*
    relation := "!"? ("<" | ">") attrs rhs     # A < B: A is a dependent of B
    rhs      := node | "(" pattern ")"
    node     := attrs ("=" NAME)?
    attrs    := "{" (NAME ":" /regex/ ("," NAME ":" /regex/)*)? "}"

All relations after a node attach to that node (``A > {} B > {} C`` is not a chain). The match
semantics copy the original's quirks because the shipped rules depend on them:

* each value ``/v/`` is compiled as ``'^' + v + '$'`` (unless it already starts with ``^`` or
  ends with ``$``) *without grouping* and tested with ``re.match`` — so ``/normal|unremarkable/``
  is a prefix test for ``normal`` and a full test for ``unremarkable``;
* a key missing from a node or edge never matches, which keeps the original's dead rules dead;
* matching is anchored at the mention node (the pattern's group 0), which is equivalent to the
  original's "enumerate everything, then filter by group 0" and much faster.

``!`` before a relation negates it, as in Semgrex: ``A !> {} B`` matches when A governs no B.
The original's rule files never use it; our ``chexpert_plus`` rules do, to guard a rule
("stable silhouette" is normal unless the silhouette is also called enlarged). A negated
relation binds no names.

Matches are yielded as ``{name: node_id}`` bindings so the detector can apply its ``key`` veto.
Where the original drops names of a second ``&`` branch matching ≤ 2 nodes, we keep them; no
shipped pattern combines a name with ``&``, so labels cannot differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.labeler.graph import DepGraph

Bindings = dict[str, str]


class NgrexSyntaxError(ValueError):
    """A pattern that does not parse (or names a node twice)."""


@dataclass(frozen=True)
class Attrs:
    """Attribute constraints: (key, original value, compiled anchored regex)."""

    items: tuple[tuple[str, str, re.Pattern[str]], ...]


@dataclass(frozen=True)
class NodeDesc:
    attrs: Attrs
    name: str | None


@dataclass(frozen=True)
class Relation:
    direction: str  # "<": the node is a dependent of rhs; ">": the node governs rhs
    edge: Attrs
    rhs: NodeDesc | Pattern
    negated: bool = False  # "!": no such neighbour


@dataclass(frozen=True)
class Pattern:
    head: NodeDesc | Pattern
    alternatives: tuple[tuple[Relation, ...], ...]  # OR of ANDs; empty = no relations
    source: str = ""


def compile_value(value: str) -> re.Pattern[str]:
    """The original's anchoring quirk: ``^`` + v + ``$`` with no grouping."""
    if value.startswith("^") or value.endswith("$"):
        return re.compile(value)
    return re.compile("^" + value + "$")


_TOKEN = re.compile(
    r"\s*(?:(?P<regex>/[^/]*/)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>[{}()<>&|=:,!]))"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split a pattern into (kind, value) tokens; kind is ``regex``, ``name`` or the symbol."""
    tokens: list[tuple[str, str]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise NgrexSyntaxError(f"unexpected character at {position} in {text!r}")
        if match.group("regex") is not None:
            tokens.append(("regex", match.group("regex")[1:-1]))
        elif match.group("name") is not None:
            tokens.append(("name", match.group("name")))
        else:
            sym = match.group("sym")
            tokens.append((sym, sym))
        position = match.end()
    return tokens


class _Parser:
    """Recursive-descent parser over the token list."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.names: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise NgrexSyntaxError(f"expected {kind!r} at token {self.pos} in {self.text!r}")
        value = self.tokens[self.pos][1]
        self.pos += 1
        return value

    def parse(self) -> Pattern:
        pattern = self.pattern()
        if self.pos != len(self.tokens):
            raise NgrexSyntaxError(f"trailing tokens at {self.pos} in {self.text!r}")
        return Pattern(pattern.head, pattern.alternatives, self.text)

    def pattern(self) -> Pattern:
        head = self.group_or_node()
        alternatives: list[tuple[Relation, ...]] = []
        if self.peek() in ("<", ">", "!"):
            alternatives.append(self.and_expr())
            while self.peek() == "|":
                self.take("|")
                alternatives.append(self.and_expr())
        return Pattern(head, tuple(alternatives))

    def and_expr(self) -> tuple[Relation, ...]:
        relations = [self.relation()]
        while self.peek() in ("&", "<", ">", "!"):
            if self.peek() == "&":
                self.take("&")
            relations.append(self.relation())
        return tuple(relations)

    def relation(self) -> Relation:
        negated = self.peek() == "!"
        if negated:
            self.take("!")
        kind = self.peek()
        if kind not in ("<", ">"):
            raise NgrexSyntaxError(f"expected a relation at token {self.pos} in {self.text!r}")
        direction = self.take(kind)
        edge = self.attrs()
        return Relation(direction, edge, self.group_or_node(), negated)

    def group_or_node(self) -> NodeDesc | Pattern:
        if self.peek() == "(":
            self.take("(")
            inner = self.pattern()
            self.take(")")
            return inner
        return self.node()

    def node(self) -> NodeDesc:
        attrs = self.attrs()
        name = None
        if self.peek() == "=":
            self.take("=")
            name = self.take("name")
            if name in self.names:
                raise NgrexSyntaxError(f"duplicate node name {name!r} in {self.text!r}")
            self.names.add(name)
        return NodeDesc(attrs, name)

    def attrs(self) -> Attrs:
        self.take("{")
        items = []
        while self.peek() != "}":
            if items:
                self.take(",")
            key = self.take("name")
            self.take(":")
            value = self.take("regex")
            items.append((key, value, compile_value(value)))
        self.take("}")
        return Attrs(tuple(items))


def compile_pattern(text: str) -> Pattern:
    """Parse one ngrex pattern."""
    return _Parser(text.strip()).parse()


def load_patterns(path: Path) -> list[Pattern]:
    """One pattern per stripped line; blank lines and ``#`` comments skipped (as the original)."""
    patterns = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(compile_pattern(line))
    return patterns


def _node_ok(attrs: Attrs, graph: DepGraph, node_id: str) -> bool:
    node = graph.nodes[node_id]
    for key, _, regex in attrs.items:
        value = node.attr(key)
        if value is None or regex.match(value) is None:
            return False
    return True


def _edge_ok(attrs: Attrs, label: str) -> bool:
    for key, _, regex in attrs.items:
        if key != "dependency" or regex.match(label) is None:
            return False
    return True


def _match_part(part: NodeDesc | Pattern, graph: DepGraph, node_id: str) -> Iterator[Bindings]:
    if isinstance(part, NodeDesc):
        if _node_ok(part.attrs, graph, node_id):
            yield {part.name: node_id} if part.name else {}
        return
    yield from match(part, graph, node_id)


def _match_relation(relation: Relation, graph: DepGraph, node_id: str) -> Iterator[Bindings]:
    neighbours = graph.inc[node_id] if relation.direction == "<" else graph.out[node_id]
    for other, label in list(neighbours.items()):
        if _edge_ok(relation.edge, label):
            yield from _match_part(relation.rhs, graph, other)


def _match_all(
    relations: tuple[Relation, ...], graph: DepGraph, node_id: str, index: int = 0
) -> Iterator[Bindings]:
    if index == len(relations):
        yield {}
        return
    if relations[index].negated:
        if next(_match_relation(relations[index], graph, node_id), None) is None:
            yield from _match_all(relations, graph, node_id, index + 1)
        return
    for first in _match_relation(relations[index], graph, node_id):
        for rest in _match_all(relations, graph, node_id, index + 1):
            yield {**rest, **first}


def match(pattern: Pattern, graph: DepGraph, node_id: str) -> Iterator[Bindings]:
    """Every match of ``pattern`` whose group 0 is ``node_id``, as name bindings."""
    for head in _match_part(pattern.head, graph, node_id):
        if not pattern.alternatives:
            yield head
            continue
        for relations in pattern.alternatives:
            for rest in _match_all(relations, graph, node_id):
                yield {**rest, **head}


def matches(pattern: Pattern, graph: DepGraph, node_id: str) -> bool:
    """Whether ``pattern`` matches with group 0 at ``node_id``."""
    return next(match(pattern, graph, node_id), None) is not None
