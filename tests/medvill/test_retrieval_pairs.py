"""Retrieval training pairs: the indexed partner search equals the plain scan it replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvill.tasks.retrieval import RetrievalSettings, training_pairs


def scan_pairs(rows, images, settings, epoch):
    """The former implementation (a scan of every record per record), kept as the oracle."""
    rng = np.random.default_rng([settings.seed, epoch, 7])
    out_images, out_texts, out_labels = [], [], []
    for i, row in enumerate(rows):
        out_images.append(images[i])
        out_texts.append(row["text"])
        out_labels.append(1)
        others = [j for j, other in enumerate(rows) if other["label"] != row["label"]]
        if others:
            j = others[int(rng.integers(0, len(others)))]
            if rng.random() < settings.swap_image_probability:
                out_images.append(images[j])
                out_texts.append(row["text"])
            else:
                out_images.append(images[i])
                out_texts.append(rows[j]["text"])
            out_labels.append(0)
    return out_images, out_texts, out_labels


LABELS = ["No Finding", "Pleural Effusion", "Cardiomegaly, Edema", "Pneumonia", ""]


@pytest.mark.parametrize("epoch", [0, 3])
@pytest.mark.parametrize("list_labels", [False, True])
def test_same_pairs_as_the_scan(epoch: int, list_labels: bool) -> None:
    rng = np.random.default_rng(11)
    rows = []
    for i in range(300):
        label = LABELS[int(rng.choice(5, p=[0.5, 0.2, 0.15, 0.1, 0.05]))]
        rows.append({"text": f"report {i}", "label": label.split(", ") if list_labels else label})
    images = [Path(f"img/{i}.jpg") for i in range(len(rows))]
    settings = RetrievalSettings(seed=123)
    assert training_pairs(rows, images, settings, epoch) == scan_pairs(
        rows, images, settings, epoch
    )


def test_one_label_set_gives_no_negatives_and_a_lone_other_is_always_chosen() -> None:
    settings = RetrievalSettings(seed=1, swap_image_probability=0.0)
    rows = [{"text": f"t{i}", "label": "No Finding"} for i in range(4)]
    images = [Path(f"{i}.jpg") for i in range(4)]
    assert training_pairs(rows, images, settings, 0)[2] == [1, 1, 1, 1]
    rows[2]["label"] = "Pneumonia"
    _, texts, labels = training_pairs(rows, images, settings, 0)
    assert labels == [1, 0, 1, 0, 1, 0, 1, 0]
    negatives = texts[1::2]
    assert [negatives[i] for i in (0, 1, 3)] == ["t2"] * 3  # the only other label set
    assert negatives[2] in {"t0", "t1", "t3"}
    assert training_pairs(rows, images, settings, 0) == scan_pairs(rows, images, settings, 0)
