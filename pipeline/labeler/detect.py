"""The three-phase negation/uncertainty detector (docs/labeler.md §4.2).

Order and vetoes follow chexpert-labeler's ``ModifiedDetector`` exactly, because the rule files
were written against it: pre-negation uncertainty first ("cannot exclude X" must not become a
negation), then negation with two vetoes (a ``key`` node that is itself negated — "not
cleared" — and "no *new* X"), then post-negation uncertainty. A result found at any node that
intersects a mention's span marks every mention lying wholly inside that span.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.labeler.graph import DepGraph
from pipeline.labeler.mentions import Mention
from pipeline.labeler.ngrex import Pattern, load_patterns, match, matches
from pipeline.labeler.phrases import DATA_DIR
from pipeline.labeler.propagate import propagate

NEGATION = "negation"
UNCERTAINTY = "uncertainty"

#: The labeler's sentence short-cut; only fires while section titles are still in the text.
SHORTCUT = re.compile(r"^(findings|impression): no ", re.IGNORECASE)


@dataclass(frozen=True)
class RuleSet:
    """The three rule files, in phase order, and whether the title short-cut applies.

    ``title_shortcut``: the original negates every mention of a sentence that starts
    "findings: no " / "impression: no " without parsing it (:data:`SHORTCUT`), which also
    negates "impression: no significant change in the effusion" (a persisting effusion).
    ``chexpert_plus`` parses such sentences like any other.
    """

    pre_negation_uncertainty: tuple[Pattern, ...]
    negation: tuple[Pattern, ...]
    post_negation_uncertainty: tuple[Pattern, ...]
    title_shortcut: bool = True

    def shortcut(self, sentence: str) -> bool:
        """Whether the title short-cut negates this sentence without a parse."""
        return self.title_shortcut and SHORTCUT.match(sentence) is not None


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped chexpert-labeler rule files (9 / 77 / 67 patterns)."""
    base = DATA_DIR / "patterns"
    return RuleSet(
        tuple(load_patterns(base / "pre_negation_uncertainty.txt")),
        tuple(load_patterns(base / "negation.txt")),
        tuple(load_patterns(base / "post_negation_uncertainty.txt")),
    )


def without_replaced(original: tuple[Pattern, ...], replaced_file: Path) -> tuple[Pattern, ...]:
    """The original's rules of one phase less those ``replaced_file`` lists (a missing file: none).

    Each listed line must be one of the original's rules, word for word, so that a typo or an
    edited rule file is an error here and not a silent no-op.
    """
    if not replaced_file.is_file():
        return original
    replaced = load_patterns(replaced_file)
    unknown = [pattern for pattern in replaced if pattern not in original]
    if unknown:
        raise ValueError(
            f"{replaced_file}: {len(unknown)} listed rule(s) are not among the original's rules"
        )
    return tuple(pattern for pattern in original if pattern not in replaced)


@lru_cache(maxsize=1)
def plus_rules() -> RuleSet:
    """The opt-in ``chexpert_plus`` rules: the original's files, each followed by our extras.

    The extras (``data/patterns_plus/<phase>.txt``) add matches inside the original's phase
    order. A few of the original's rules are replaced rather than extended
    (``<phase>_replaced.txt`` lists them, and a narrower rule of ours follows in the extras):
    where the radiologist gold our dev set is scored on reads a wording differently from
    CheXpert's convention on purpose, adding rules cannot undo a match, only removing one can.
    docs/labeler_fidelity.md §5 lists every extra and replaced rule with its reason.
    """
    base, extra = default_rules(), DATA_DIR / "patterns_plus"

    def phase(original: tuple[Pattern, ...], name: str) -> tuple[Pattern, ...]:
        kept = without_replaced(original, extra / f"{name}_replaced.txt")
        return kept + tuple(load_patterns(extra / f"{name}.txt"))

    return RuleSet(
        phase(base.pre_negation_uncertainty, "pre_negation_uncertainty"),
        phase(base.negation, "negation"),
        phase(base.post_negation_uncertainty, "post_negation_uncertainty"),
        title_shortcut=False,
    )


#: Label backends built on this package: the original's rules, or ours on top of them.
BACKENDS = {"chexpert": default_rules, "chexpert_plus": plus_rules}


def backend_rules(backend: str) -> RuleSet:
    """The rule set of a label backend; an unknown name is an error that lists the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown labeler backend {backend!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[backend]()


@dataclass
class Flags:
    """What the detector marked on one mention (both may be set)."""

    negation: bool = False
    uncertainty: bool = False


def negation_matches(pattern: Pattern, graph: DepGraph, node_id: str) -> bool:
    """A negation match survives unless its ``key`` node has an outgoing ``neg`` edge."""
    for bindings in match(pattern, graph, node_id):
        key = bindings.get("key")
        if key is not None and "neg" in graph.out[key].values():
            continue
        return True
    return False


def classify_node(graph: DepGraph, node_id: str, rules: RuleSet) -> str | None:
    """Run the three phases for one node; ``None`` when nothing matched."""
    if any(matches(p, graph, node_id) for p in rules.pre_negation_uncertainty):
        return UNCERTAINTY
    nodes = graph.nodes
    new_veto = any(
        label == "amod" and nodes[child].lemma == "new"
        for child, label in graph.out[node_id].items()
    )
    if not new_veto and any(negation_matches(p, graph, node_id) for p in rules.negation):
        return NEGATION
    if any(matches(p, graph, node_id) for p in rules.post_negation_uncertainty):
        return UNCERTAINTY
    return None


def detect_sentence(
    text: str, mentions: Sequence[Mention], graph: DepGraph | None, rules: RuleSet
) -> list[Flags]:
    """Flags for each mention of one sentence (spans sentence-relative).

    ``graph`` is modified in place by propagation. ``None`` (parse/convert failure) leaves every
    mention positive, as in the original.
    """
    flags = [Flags() for _ in mentions]
    if not mentions:
        return flags
    if rules.shortcut(text):
        for f in flags:
            f.negation = True
        return flags
    if graph is None:
        return flags
    propagate(graph)
    node_results: dict[str, str | None] = {}

    def result_of(node_id: str) -> str | None:
        if node_id not in node_results:
            node_results[node_id] = classify_node(graph, node_id, rules)
        return node_results[node_id]

    for loc_start, loc_end in dict.fromkeys((m.start, m.end) for m in mentions):
        inside = [
            node_id
            for node_id, node in graph.nodes.items()
            if node.start < loc_end and loc_start < node.end
        ]
        results = [result_of(node_id) for node_id in inside]
        if not any(results):
            results = [result_of(head) for head in phrase_heads(graph, inside)]
        for result in results:
            if result is None:
                continue
            for mention, flag in zip(mentions, flags, strict=True):
                if loc_start <= mention.start and mention.end <= loc_end:
                    if result == NEGATION:
                        flag.negation = True
                    else:
                        flag.uncertainty = True
    return flags


#: Relations inside a noun phrase, from a pre-modifier to the noun it modifies.
NOUN_PHRASE_RELATIONS = frozenset({"compound", "amod", "det"})


def phrase_heads(graph: DepGraph, inside: Sequence[str]) -> list[str]:
    """Head nouns of the noun phrases a mention only modifies, outside the mention.

    The rules anchor on the mention's own tokens, but a mention is often a pre-modifier: "the
    heart" in "the heart size appears within normal limits", "consolidative" in "no
    consolidative airspace opacities". The rules then see "the"/"heart" (two hops below the
    predicate, which no rule reaches) while "size" is caught. The statement is about the whole
    phrase, so when no rule fires on the mention itself its phrase head is asked instead,
    climbing ``compound``/``amod``/``det`` edges. A mention that is itself a head is unaffected.
    """
    inside_set = set(inside)
    heads: list[str] = []
    for node_id in inside:
        current, seen = node_id, {node_id}
        while True:
            governor = next(
                (g for g, label in graph.inc[current].items() if label in NOUN_PHRASE_RELATIONS),
                None,
            )
            if governor is None or governor in seen:
                break
            seen.add(governor)
            current = governor
        if (
            current not in inside_set
            and current not in heads
            and graph.nodes[current].tag.startswith("NN")
        ):
            heads.append(current)
    return heads
