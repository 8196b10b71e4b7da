"""Small deterministic matplotlib figures for DVC plots (PNG bytes identical on rerun)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.records import atomic_write_bytes

#: PNG metadata is pinned so that the file does not change with the matplotlib version string.
_PNG_METADATA = {"Software": None}


def save_figure(figure: plt.Figure, path: Path) -> None:
    """Render ``figure`` to PNG and write it atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata=_PNG_METADATA)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def label_prevalence_figure(
    counts: Mapping[str, Mapping[str, int]], labels: Sequence[str], title: str
) -> plt.Figure:
    """Stacked horizontal bars: positive / uncertain / negative / blank count per observation.

    A radiologist reads at a glance which findings the dataset can teach and how much of each
    label is hedged (uncertain) rather than stated.
    """
    kinds = (
        ("positive", "#c0392b"),
        ("uncertain", "#f39c12"),
        ("negative", "#2980b9"),
        ("blank", "#d5d8dc"),
    )
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.4))
    left = [0] * len(labels)
    positions = list(range(len(labels)))[::-1]
    for kind, colour in kinds:
        values = [counts[label][kind] for label in labels]
        axes.barh(positions, values, left=left, color=colour, label=kind)
        left = [a + b for a, b in zip(left, values, strict=True)]
    axes.set_yticks(positions, labels)
    axes.set_xlabel("records")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small", ncols=4)
    figure.tight_layout()
    return figure
