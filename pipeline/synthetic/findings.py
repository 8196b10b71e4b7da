"""What a synthetic study shows: findings with side, size and zone, drawn with co-occurrence.

One ``Finding`` is one visual sign the drawing module paints and the report writer describes.
Probabilities follow the rough shape of a chest X-ray population (about a third normal; heart
enlargement goes with effusions, effusions with basal atelectasis, lines and tubes with
pneumothorax on ICU films) so that the label sets co-occur as they do in MIMIC-CXR rather than
independently. Everything is drawn from the ``numpy.random.Generator`` the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Kinds of finding, in the order they are considered and described.
KINDS: tuple[str, ...] = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "nodule",
    "consolidation",
    "atelectasis",
    "devices",
)
#: Severity words per kind (index 0 = mildest); the drawing scales with the index.
SEVERITIES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("mild", "moderate", "severe"),
    "effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "nodule": ("small", "medium", "large"),
    "consolidation": ("patchy", "dense", "dense"),
    "atelectasis": ("linear", "linear", "linear"),
    "devices": ("", "", ""),
}
SIDES: tuple[str, ...] = ("right", "left")
ZONES: tuple[str, ...] = ("upper", "mid", "lower")
#: Lobe a zone of a side falls in (the left lung's middle zone is the lingula).
LOBES: dict[tuple[str, str], str] = {
    ("right", "upper"): "right upper lobe",
    ("right", "mid"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "mid"): "lingula",
    ("left", "lower"): "left lower lobe",
}
DEVICES: tuple[str, ...] = (
    "endotracheal tube",
    "central venous catheter",
    "enteric tube",
    "pacemaker",
)
#: Base probability of each kind, and the extra probability when another kind is present.
BASE_RATE: dict[str, float] = {
    "cardiomegaly": 0.2,
    "effusion": 0.14,
    "pneumothorax": 0.05,
    "nodule": 0.1,
    "consolidation": 0.14,
    "atelectasis": 0.08,
    "devices": 0.14,
}
CO_OCCURRENCE: dict[tuple[str, str], float] = {
    ("cardiomegaly", "effusion"): 0.3,
    ("effusion", "atelectasis"): 0.3,
    ("devices", "pneumothorax"): 0.15,
    ("devices", "effusion"): 0.1,
    ("consolidation", "effusion"): 0.1,
}
#: Order in which kinds are drawn: causes before the findings they make more likely.
SAMPLING_ORDER: tuple[str, ...] = (
    "devices",
    "cardiomegaly",
    "consolidation",
    "effusion",
    "pneumothorax",
    "nodule",
    "atelectasis",
)
MAX_FINDINGS = 3
#: Pneumonia wording after a consolidation: asserted, hedged, or not mentioned.
PNEUMONIA_CALLS: tuple[str, ...] = ("positive", "uncertain", "unmentioned")
#: Share of mild findings the report hedges ("cannot exclude") instead of asserting.
HEDGE_RATE = 0.12


@dataclass(frozen=True)
class Finding:
    """One visual sign. ``severity`` indexes ``SEVERITIES[kind]``; ``side`` is right, left or
    bilateral (effusion only) and "" where it does not apply; ``hedged`` findings are drawn
    faintly and written as uncertain (label −1)."""

    kind: str
    severity: int = 0
    side: str = ""
    zone: str = ""
    size_mm: int = 0
    devices: tuple[str, ...] = ()
    pneumonia: str = "unmentioned"
    hedged: bool = False

    @property
    def lobe(self) -> str:
        return LOBES.get((self.side, self.zone), "")


@dataclass(frozen=True)
class StudyFindings:
    """The findings of one study; the same findings are drawn on each of its images."""

    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def get(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)


def _side(rng: np.random.Generator) -> str:
    return SIDES[int(rng.integers(0, 2))]


def make_finding(kind: str, rng: np.random.Generator) -> Finding:
    """Severity, side, zone and size of one finding of ``kind``."""
    severity = int(rng.choice(3, p=[0.5, 0.33, 0.17]))
    if kind == "cardiomegaly":
        return Finding(kind, severity=severity)
    if kind == "effusion":
        side = "bilateral" if rng.random() < 0.25 else _side(rng)
        return Finding(kind, severity=severity, side=side, hedged=_hedge(severity, rng))
    if kind == "pneumothorax":
        return Finding(kind, severity=severity, side=_side(rng), zone="upper")
    if kind == "nodule":
        size_mm = int(rng.integers(*((8, 16), (16, 30), (32, 50))[severity]))
        zone = ZONES[int(rng.integers(0, 3))]
        return Finding(kind, severity=severity, side=_side(rng), zone=zone, size_mm=size_mm)
    if kind == "consolidation":
        zone = ZONES[int(rng.choice(3, p=[0.25, 0.2, 0.55]))]
        pneumonia = PNEUMONIA_CALLS[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        return Finding(kind, severity=severity, side=_side(rng), zone=zone, pneumonia=pneumonia)
    if kind == "atelectasis":
        return Finding(kind, side=_side(rng), zone="lower", hedged=_hedge(0, rng))
    if kind == "devices":
        count = 1 + int(rng.random() < 0.4)
        picks = rng.choice(len(DEVICES), size=count, replace=False, p=[0.35, 0.3, 0.2, 0.15])
        return Finding(kind, devices=tuple(DEVICES[i] for i in sorted(picks)))
    raise ValueError(f"unknown finding kind {kind!r}; expected one of {', '.join(KINDS)}")


def _hedge(severity: int, rng: np.random.Generator) -> bool:
    return severity == 0 and rng.random() < HEDGE_RATE


def sample_study(rng: np.random.Generator, normal_rate: float = 0.3) -> StudyFindings:
    """0–3 findings: a normal study with probability ``normal_rate``, else kinds drawn in
    ``SAMPLING_ORDER`` with each present kind raising the chance of its partners."""
    if rng.random() < normal_rate:
        return StudyFindings(())
    present: list[str] = []
    for kind in SAMPLING_ORDER:
        rate = BASE_RATE[kind] + sum(
            extra
            for (cause, effect), extra in CO_OCCURRENCE.items()
            if effect == kind and cause in present
        )
        if rng.random() < rate:
            present.append(kind)
    if not present:
        present.append(KINDS[int(rng.integers(0, len(KINDS)))])
    while len(present) > MAX_FINDINGS:
        present.pop(int(rng.integers(0, len(present))))
    ordered = sorted(present, key=KINDS.index)
    return StudyFindings(tuple(make_finding(kind, rng) for kind in ordered))
