"""(b) CoreNLP 3.5.2 graphs of negbio2's fixture -> exactly negbio2's expected CheXpert output.

``1.ptb2ud.xml`` was built from the uncleaned text, so offsets differ from
``1.neg_chexpert.xml``; mentions are compared by (observation, text, flags) in order. NegBio's
port calls Lung Opacity "Airspace Opacity" and only emits No Finding when positive.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from pipeline.labeler.aggregate import aggregate, mention_label
from pipeline.labeler.detect import default_rules, detect_sentence
from pipeline.labeler.graph import read_bioc_graphs
from pipeline.labeler.mentions import extract_mentions
from pipeline.labeler.phrases import default_phrases
from tests.pipeline.labeler.conftest import FIXTURES

_RESULT = {"Positive": 1.0, "Negative": 0.0, "Uncertain": -1.0}


def _name(observation: str) -> str:
    return "Lung Opacity" if observation == "Airspace Opacity" else observation


def _expected() -> dict[str, tuple[list[tuple[str, str, bool, bool]], dict[str, float]]]:
    expected = {}
    for doc in ET.parse(FIXTURES / "1.neg_chexpert.xml").getroot().iter("document"):
        labels = {
            _name(i.get("key").split("/", 1)[1]): _RESULT[i.text]
            for i in doc.findall("infon")
            if i.get("key", "").startswith("CheXpert/")
        }
        mentions = []
        for ann in doc.iter("annotation"):
            infons = {i.get("key"): i.text for i in ann.findall("infon")}
            mentions.append(
                (
                    _name(infons["observation"]),
                    ann.findtext("text"),
                    infons.get("negation") == "True",
                    infons.get("uncertainty") == "True",
                )
            )
        expected[doc.findtext("id")] = (mentions, labels)
    return expected


def test_fixture_graphs_are_read() -> None:
    documents = read_bioc_graphs(FIXTURES / "1.ptb2ud.xml")
    assert [d.id for d in documents] == ["00019248", "00000086"]
    graph = documents[0].sentences[3].graph
    assert "neg(evidence, no)" in graph.describe()
    assert "conj:or(infiltrate, effusion)" in graph.describe()
    assert graph.nodes["T4"].lemma == "infiltrate" and graph.nodes["T4"].start == 21
    sentence = documents[0].sentences[3]
    assert all(sentence.text[n.start : n.end] == n.text for n in graph.nodes.values())


def test_fixture_graphs_give_the_expected_mentions_and_labels() -> None:
    expected = _expected()
    phrases, rules = default_phrases(), default_rules()
    documents = read_bioc_graphs(FIXTURES / "1.ptb2ud.xml")
    assert len(documents) == len(expected) == 2
    for document in documents:
        got_mentions = []
        for sentence in document.sentences:
            mentions = extract_mentions(sentence.text.lower(), phrases)
            for mention, flag in zip(
                mentions,
                detect_sentence(sentence.text, mentions, sentence.graph, rules),
                strict=True,
            ):
                got_mentions.append(
                    (mention.observation, mention.text, flag.negation, flag.uncertainty)
                )
        want_mentions, want_labels = expected[document.id]
        assert sorted(got_mentions) == sorted(want_mentions)
        labels = aggregate((o, t, mention_label(n, u)) for o, t, n, u in got_mentions)
        present = {k: v for k, v in labels.items() if not math.isnan(v)}
        assert present == want_labels
