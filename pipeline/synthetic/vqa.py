"""VQA questions about a synthetic study, answered from its findings (not from its report).

Written in the VQA-RAD release format (``qid, image_name, image_organ, question, answer,
answer_type, question_type, phrase_type``) so the vqa stage reads them with the same code as the
real release. Closed questions ask about presence, side and heart size; open ones ask which
side, which lobe, how large, which device and which view, so that an open answer needs the
image's laterality and location, not just a label set. Hedged findings get no question: their
answer is not known. ``phrase_type`` is ``test_freeform`` for test-split patients, so the VQA
split follows the patient split of the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.synthetic.findings import KINDS, SEVERITIES, Finding, StudyFindings

#: How each kind is named in a question and in an open answer.
KIND_NAMES: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "nodule": "lung nodule",
    "consolidation": "consolidation",
    "atelectasis": "atelectasis",
    "devices": "support device",
}
PRESENCE_TEMPLATES: tuple[str, ...] = (
    "Is there {article} {name}?",
    "Is {article} {name} present?",
    "Does this chest x-ray show {article} {name}?",
)
#: Kinds whose side is asked about (devices and the heart have no side).
SIDED: tuple[str, ...] = ("effusion", "pneumothorax", "nodule", "consolidation", "atelectasis")


def _article(name: str) -> str:
    return "" if name in ("cardiomegaly", "consolidation", "atelectasis") else "a"


def _presence(kind: str, answer: str, rng: np.random.Generator) -> tuple[str, str, str, str]:
    name = KIND_NAMES[kind]
    template = PRESENCE_TEMPLATES[int(rng.integers(0, len(PRESENCE_TEMPLATES)))]
    question = " ".join(template.format(article=_article(name), name=name).split())
    return question, answer, "CLOSED", "PRES"


def _side_answer(finding: Finding) -> str:
    return "both" if finding.side == "bilateral" else finding.side


def finding_questions(
    study: StudyFindings, view: str, rng: np.random.Generator
) -> list[tuple[str, str, str, str]]:
    """(question, answer, answer_type, question_type) tuples for one frontal image."""
    definite = [f for f in study.findings if not f.hedged]
    hedged = {f.kind for f in study.findings if f.hedged}
    present = {f.kind for f in definite}
    questions = [_presence(f.kind, "yes", rng) for f in definite]
    absent = [k for k in KINDS if k not in present and k not in hedged]
    for index in rng.choice(len(absent), size=min(2, len(absent)), replace=False):
        questions.append(_presence(absent[int(index)], "no", rng))
    pathology = [f for f in definite if f.kind != "devices"]
    if not hedged:
        normal = "no" if pathology else "yes"
        questions.append(("Is this chest x-ray normal?", normal, "CLOSED", "ABN"))
    if "cardiomegaly" not in hedged:
        enlarged = "yes" if "cardiomegaly" in present else "no"
        questions.append(("Is the heart enlarged?", enlarged, "CLOSED", "SIZE"))
        questions.append(
            (
                "How large is the heart?",
                "enlarged" if enlarged == "yes" else "normal",
                "OPEN",
                "SIZE",
            )
        )
    for finding in definite:
        name = KIND_NAMES[finding.kind]
        if finding.kind in SIDED:
            questions.append(
                (f"Which side is the {name} on?", _side_answer(finding), "OPEN", "POS")
            )
            if finding.side != "bilateral":
                asked = ("left", "right")[int(rng.integers(0, 2))]
                answer = "yes" if asked == finding.side else "no"
                questions.append((f"Is the {name} on the {asked}?", answer, "CLOSED", "POS"))
        if finding.kind in ("nodule", "consolidation"):
            questions.append((f"Which lobe is the {name} in?", finding.lobe, "OPEN", "POS"))
        if finding.kind == "effusion":
            size = SEVERITIES["effusion"][finding.severity]
            questions.append(("How large is the pleural effusion?", size, "OPEN", "SIZE"))
        if finding.kind == "devices" and len(finding.devices) == 1:
            questions.append(("What device is seen?", finding.devices[0], "OPEN", "OTHER"))
    if len(pathology) == 1 and not hedged:
        questions.append(("What is the abnormality?", KIND_NAMES[pathology[0].kind], "OPEN", "ABN"))
    questions.append(("Which view is this?", view.lower(), "OPEN", "PLANE"))
    return questions


def vqa_entries(
    image_name: str,
    study: StudyFindings,
    view: str,
    test: bool,
    first_qid: int,
    rng: np.random.Generator,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Release-format entries for one image, numbered from ``first_qid``; with ``limit`` > 0 a
    seeded subset of at most ``limit`` questions (in their original order) is kept, to size
    VQA fine-tuning for a CPU run."""
    phrase = "test_freeform" if test else "freeform"
    questions = finding_questions(study, view, rng)
    if 0 < limit < len(questions):
        keep = np.sort(rng.choice(len(questions), size=limit, replace=False))
        questions = [questions[int(i)] for i in keep]
    return [
        {
            "qid": first_qid + offset,
            "image_name": image_name,
            "image_organ": "CHEST",
            "question": question,
            "answer": answer,
            "answer_type": answer_type,
            "question_type": question_type,
            "phrase_type": phrase,
        }
        for offset, (question, answer, answer_type, question_type) in enumerate(questions)
    ]
