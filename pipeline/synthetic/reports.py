"""Radiology-style reports written from a study's findings, with their ground-truth labels.

Every sentence the writer can emit carries the CheXpert labels it asserts (1 positive,
0 negated, −1 hedged), so the ground truth is the union of what was *written*, not a guess from
the findings: a hedged effusion is −1, "No pneumothorax." is 0 and an unmentioned observation
stays blank. "No Finding" follows CheXpert's rule: 1 when no observation other than Support
Devices is positive or uncertain, else blank.

Wording avoids phrases the CheXpert vocabulary reads as something else ("plate-like" and
"pleural line" are devices to it), so the labeler's score on this corpus measures the labeler,
not an ambiguous template. Synonyms, sentence order and optional clauses vary per study so a
report is not a lookup of its label set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.records import CHEXPERT_LABELS
from pipeline.synthetic.findings import SEVERITIES, Finding, StudyFindings

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
#: CheXpert label each finding kind is described under.
KIND_LABEL: dict[str, str] = {
    "cardiomegaly": "Cardiomegaly",
    "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "nodule": "Lung Lesion",
    "consolidation": "Consolidation",
    "atelectasis": "Atelectasis",
    "devices": SUPPORT_DEVICES,
}
INDICATIONS: tuple[str, ...] = (
    "Shortness of breath.",
    "Cough.",
    "Chest pain.",
    "Fever.",
    "Pre-operative evaluation.",
    "Follow-up.",
    "Dyspnea on exertion.",
    "Hypoxia.",
)
EXAMINATIONS: dict[str, str] = {
    "PA": "CHEST (PA AND LAT)",
    "PA_ONLY": "CHEST (PA)",
    "AP": "CHEST (PORTABLE AP)",
}


@dataclass
class Sentence:
    """One sentence and the labels it asserts."""

    text: str
    labels: dict[str, float] = field(default_factory=dict)


def _pick(options: tuple[str, ...] | list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(0, len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _size_text(size_mm: int, rng: np.random.Generator) -> str:
    if size_mm < 10 or (size_mm < 20 and rng.random() < 0.5):
        return f"{size_mm} mm"
    return f"{size_mm / 10:.1f} cm"


def _side_words(side: str) -> str:
    return "bilateral" if side == "bilateral" else side


def describe_cardiomegaly(f: Finding, rng: np.random.Generator) -> Sentence:
    adverb = ("mildly", "moderately", _pick(("severely", "markedly"), rng))[f.severity]
    adjective = ("mild", "moderate", _pick(("severe", "marked"), rng))[f.severity]
    text = _pick(
        (
            f"{_cap(adjective)} cardiomegaly.",
            f"The heart is {adverb} enlarged.",
            f"{_cap(adjective)} enlargement of the cardiac silhouette.",
            f"The cardiac silhouette is {adverb} enlarged.",
            f"{_cap(adverb)} enlarged cardiac silhouette.",
        ),
        rng,
    )
    return Sentence(text, {"Cardiomegaly": 1.0})


def describe_effusion(f: Finding, rng: np.random.Generator) -> Sentence:
    size = SEVERITIES["effusion"][f.severity]
    if f.hedged:
        side = "left" if f.side == "left" else "right" if f.side == "right" else "bilateral"
        text = _pick(
            (
                f"Possible small {side} pleural effusion.",
                f"Blunting of the {side} costophrenic angle may reflect a small effusion."
                if side != "bilateral"
                else "Possible small bilateral pleural effusions.",
            ),
            rng,
        )
        return Sentence(text, {"Pleural Effusion": -1.0})
    if f.side == "bilateral":
        text = _pick(
            (
                f"{_cap(size)} bilateral pleural effusions.",
                f"There are {size} bilateral pleural effusions.",
                f"{_cap(size)} bilateral pleural effusions with blunting of both costophrenic "
                "angles.",
            ),
            rng,
        )
    else:
        text = _pick(
            (
                f"{_cap(size)} {f.side} pleural effusion.",
                f"There is a {size} {f.side}-sided pleural effusion.",
                f"{_cap(size)} {f.side} pleural effusion with blunting of the {f.side} "
                "costophrenic angle.",
                f"{_cap(size)} {f.side} pleural effusion with a meniscus.",
            ),
            rng,
        )
    return Sentence(text, {"Pleural Effusion": 1.0})


def describe_pneumothorax(f: Finding, rng: np.random.Generator) -> Sentence:
    size = SEVERITIES["pneumothorax"][f.severity]
    text = _pick(
        (
            f"{_cap(size)} {f.side} apical pneumothorax.",
            f"There is a {size} {f.side} pneumothorax.",
            f"{_cap(size)} {f.side} pneumothorax with absent lung markings laterally.",
            f"{_cap(size)} {f.side}-sided pneumothorax.",
        ),
        rng,
    )
    return Sentence(text, {"Pneumothorax": 1.0})


def describe_nodule(f: Finding, rng: np.random.Generator) -> Sentence:
    size = _size_text(f.size_mm, rng)
    noun = "mass" if f.size_mm >= 30 else "nodule"
    where = _pick((f"in the {f.lobe}", f"projecting over the {f.side} {f.zone} lung zone"), rng)
    shape = _pick(("", "rounded ", "well-circumscribed "), rng)
    article = "An" if size.startswith(("8", "11", "18")) else "A"
    text = _pick(
        (
            f"{article} {size} {shape}{noun} {where}.",
            f"There is a {size} {shape}{noun} {where}.",
        ),
        rng,
    )
    return Sentence(text, {"Lung Lesion": 1.0})


def describe_consolidation(f: Finding, rng: np.random.Generator) -> Sentence:
    quality = "Patchy" if f.severity == 0 else _pick(("Dense", "Focal", "Lobar"), rng)
    labels = {"Consolidation": 1.0}
    head = _pick(
        (
            f"{quality} consolidation in the {f.lobe}",
            f"{_cap(f.lobe)} {quality.lower()} consolidation",
            f"{quality} airspace consolidation in the {f.lobe}",
        ),
        rng,
    )
    if f.pneumonia == "positive":
        tail = _pick((", consistent with pneumonia.", ", compatible with pneumonia."), rng)
        labels["Pneumonia"] = 1.0
    elif f.pneumonia == "uncertain":
        tail = _pick(
            (", concerning for pneumonia.", ". Pneumonia cannot be excluded."),
            rng,
        )
        labels["Pneumonia"] = -1.0
    else:
        tail = "."
    return Sentence(head + tail, labels)


def describe_atelectasis(f: Finding, rng: np.random.Generator) -> Sentence:
    if f.hedged:
        return Sentence(f"Minimal {f.side} basilar atelectasis is possible.", {"Atelectasis": -1.0})
    kind = _pick(("Linear", "Band-like", "Discoid", "Subsegmental"), rng)
    where = _pick((f"at the {f.side} base", f"in the {f.side} lower lung"), rng)
    return Sentence(f"{kind} atelectasis {where}.", {"Atelectasis": 1.0})


DEVICE_SENTENCES: dict[str, tuple[str, ...]] = {
    "endotracheal tube": (
        "Endotracheal tube terminates {n} cm above the carina.",
        "ET tube tip is {n} cm above the carina.",
    ),
    "central venous catheter": (
        "Right internal jugular central venous catheter terminates in the mid SVC.",
        "Left internal jugular central venous catheter terminates at the cavoatrial junction.",
        "Right subclavian catheter tip in the SVC.",
    ),
    "enteric tube": (
        "Enteric tube courses below the diaphragm with tip in the stomach.",
        "Nasogastric tube tip is in the stomach.",
    ),
    "pacemaker": (
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "Dual-lead pacemaker device overlies the left chest.",
    ),
}


def describe_devices(f: Finding, rng: np.random.Generator) -> list[Sentence]:
    return [
        Sentence(
            _pick(DEVICE_SENTENCES[d], rng).format(n=int(rng.integers(3, 7))),
            {SUPPORT_DEVICES: 1.0},
        )
        for d in f.devices
    ]


DESCRIBERS = {
    "cardiomegaly": describe_cardiomegaly,
    "effusion": describe_effusion,
    "pneumothorax": describe_pneumothorax,
    "nodule": describe_nodule,
    "consolidation": describe_consolidation,
    "atelectasis": describe_atelectasis,
}

#: Negations of absent findings (text, labels); combined forms name several at once.
NEGATIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is normal in size.",
        "Normal heart size.",
        "No cardiomegaly.",
    ),
    "effusion": ("No pleural effusion.", "No effusion."),
    "pneumothorax": ("No pneumothorax.", "No evidence of pneumothorax."),
    "consolidation": ("No focal consolidation.",),
    "nodule": ("No pulmonary nodules.", "No nodule or mass."),
}
COMBINED_NEGATION = "No focal consolidation, pleural effusion, or pneumothorax."
COMBINED_KINDS = ("consolidation", "effusion", "pneumothorax")
NEUTRAL: tuple[str, ...] = (
    "The visualized upper abdomen is unremarkable.",
    "No acute osseous abnormality.",
    "The osseous structures are intact.",
)
MEDIASTINUM_NORMAL = (
    "Mediastinal and hilar contours are normal.",
    "The cardiomediastinal silhouette is unremarkable.",
)
NORMAL_IMPRESSIONS: tuple[str, ...] = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
)


def positive_sentences(study: StudyFindings, rng: np.random.Generator) -> list[Sentence]:
    sentences: list[Sentence] = []
    for finding in study.findings:
        if finding.kind == "devices":
            sentences.extend(describe_devices(finding, rng))
        else:
            sentences.append(DESCRIBERS[finding.kind](finding, rng))
    return sentences


def negation_sentences(study: StudyFindings, rng: np.random.Generator) -> list[Sentence]:
    absent = [k for k in NEGATIONS if k not in study.kinds()]
    sentences: list[Sentence] = []
    if all(k in absent for k in COMBINED_KINDS) and rng.random() < 0.5:
        labels = {KIND_LABEL[k]: 0.0 for k in COMBINED_KINDS}
        sentences.append(Sentence(COMBINED_NEGATION, labels))
        absent = [k for k in absent if k not in COMBINED_KINDS]
    for kind in absent:
        if kind == "nodule" and rng.random() < 0.6:
            continue  # nodules are only sometimes negated, as in real reports
        sentences.append(Sentence(_pick(NEGATIONS[kind], rng), {KIND_LABEL[kind]: 0.0}))
    return sentences


def impression(study: StudyFindings, positives: list[Sentence], rng: np.random.Generator) -> str:
    """The positives restated with the same certainty, or a normal statement."""
    abnormal = [s for s in positives if SUPPORT_DEVICES not in s.labels]
    devices = [s for s in positives if SUPPORT_DEVICES in s.labels]
    lines = [s.text for s in abnormal]
    if devices:
        lines.append(
            _pick(("Lines and tubes in standard position.", "Support devices as above."), rng)
        )
    if not abnormal:
        lines.append(_pick(NORMAL_IMPRESSIONS, rng))
    return " ".join(lines)


def ground_truth(sentences: list[Sentence]) -> dict[str, float]:
    """The 14 labels the written sentences assert (positive beats uncertain beats negative)."""
    labels: dict[str, float] = {name: math.nan for name in CHEXPERT_LABELS}
    rank = {1.0: 3, -1.0: 2, 0.0: 1}
    for sentence in sentences:
        for name, value in sentence.labels.items():
            current = labels[name]
            if math.isnan(current) or rank[value] > rank[current]:
                labels[name] = value
    pathology = [n for n in CHEXPERT_LABELS if n not in (NO_FINDING, SUPPORT_DEVICES)]
    if not any(labels[n] in (1.0, -1.0) for n in pathology):
        labels[NO_FINDING] = 1.0
    return labels


def write_report(
    study: StudyFindings, examination: str, comparison: str, rng: np.random.Generator
) -> tuple[str, dict[str, float]]:
    """The report text of one study and its 14 ground-truth labels."""
    positives = positive_sentences(study, rng)
    negations = negation_sentences(study, rng)
    extra: list[Sentence] = []
    if "cardiomegaly" not in study.kinds() and rng.random() < 0.5:
        extra.append(Sentence(_pick(MEDIASTINUM_NORMAL, rng), {"Enlarged Cardiomediastinum": 0.0}))
    if rng.random() < 0.4:
        extra.append(Sentence(_pick(NEUTRAL, rng)))
    devices = [s for s in positives if SUPPORT_DEVICES in s.labels]
    others = [s for s in positives if SUPPORT_DEVICES not in s.labels]
    body = devices + others
    tail = negations + extra
    order = rng.permutation(len(tail))
    findings = body + [tail[i] for i in order]
    if not others and rng.random() < 0.5:
        findings.append(
            Sentence("The lungs are otherwise clear." if devices else "The lungs are clear.")
        )
    text = (
        "FINAL REPORT\n"
        f"EXAMINATION: {examination}\n"
        f"INDICATION: {_pick(INDICATIONS, rng)}\n"
        f"COMPARISON: {comparison}\n\n"
        "FINDINGS:\n"
        + " ".join(s.text for s in findings)
        + "\n\nIMPRESSION:\n"
        + impression(study, positives, rng)
        + "\n"
    )
    return text, ground_truth(findings)
