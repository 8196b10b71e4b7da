"""IRM negatives re-drawn from the whole training pool every epoch (pairs' ``labels`` column)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medvill.data import (
    IrmNegatives,
    LoaderSettings,
    PretrainShards,
    make_loader,
    read_index,
    text_spec_for,
)
from pipeline.taskfiles.irm import IRM_SCHEMA


def write_pool(path: Path, rows: list[tuple[str, str, list[str] | None]]) -> Path:
    """An irm_negatives.parquet as the pairs stage writes it, with no precomputed negatives,
    so every negative the loader uses must come from the pool."""
    table = pa.table(
        {
            "key": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "negative_keys": [[] for _ in rows],
            "labels": [r[2] for r in rows],
        },
        schema=IRM_SCHEMA,
    )
    pq.write_table(table, path)
    return path


@pytest.fixture
def pool(tiny_data, tmp_path) -> IrmNegatives:
    rows = [(key, text, [label]) for key, text, label in tiny_data["records"]]
    return IrmNegatives.read(write_pool(tmp_path / "irm.parquet", rows))


def test_every_training_sample_gets_fresh_negatives_each_epoch_at_1_to_1(tiny_data, pool) -> None:
    tokenizer = tiny_data["tokenizer"]
    settings = LoaderSettings(batch_size=2, shuffle_buffer=6, seed=5, image_size=64,
                              grid_cells=4, num_sampled_visual=3)  # fmt: skip
    dataset = PretrainShards(
        read_index(tiny_data["index"], "train"), tokenizer, text_spec_for(tokenizer, 16, False),
        settings, pool,
    )  # fmt: skip
    label_of_key = {k: lab for k, _, lab in tiny_data["records"]}
    label_of_text = {t.replace(" ", ""): lab for _, t, lab in tiny_data["records"]}
    matched: Counter[str] = Counter()
    negative_labels: dict[str, set[str]] = defaultdict(set)
    for epoch in range(12):
        dataset.set_epoch(epoch)
        for batch in make_loader(dataset, 5):
            for row, key in enumerate(batch["keys"]):
                ids = batch["text_ids"][row].clone()
                labels = batch["mlm_labels"][row]
                ids[labels != -100] = labels[labels != -100]
                text = tokenizer.decode(ids[batch["text_valid"][row]].tolist(),
                                        skip_special_tokens=True)  # fmt: skip
                label = label_of_text[text.replace(" ", "")]
                if batch["irm_labels"][row] == 1:
                    matched[key] += 1
                    assert label == label_of_key[key]
                else:
                    assert label != label_of_key[key]
                    negative_labels[key].add(label)
    keys = set(label_of_key)
    # every training sample (including the one the fixed K lists left without negatives) is
    # sometimes a non-matched pair, and its negatives vary: drawn from the pool, not a list
    assert set(negative_labels) == keys
    assert sum(len(v) >= 2 for v in negative_labels.values()) >= len(keys) - 2
    total = 12 * len(keys)
    assert 0.4 < sum(matched.values()) / total < 0.6  # 1:1 matched / non-matched


def test_draws_are_seeded_and_differ_between_epochs(pool, tiny_data) -> None:
    key = tiny_data["records"][0][0]
    first = [pool.draw(key, np.random.default_rng([5, epoch, 1])) for epoch in range(20)]
    again = [pool.draw(key, np.random.default_rng([5, epoch, 1])) for epoch in range(20)]
    assert first == again
    assert len(set(first)) > 3


def test_unlabelled_and_dominant_label_sets(tmp_path) -> None:
    rows = [(f"k{i:03d}", f"text {i}", ["Edema"]) for i in range(200)]
    rows.append(("rare", "rare text", ["Pneumothorax"]))
    rows.append(("blank", "unlabelled text", None))
    negatives = IrmNegatives.read(write_pool(tmp_path / "irm.parquet", rows))
    rng = np.random.default_rng(0)
    # a label set held by 200 of 202 rows: the single other labelled row is still found
    assert {negatives.draw("k000", rng) for _ in range(5)} == {"rare"}
    # an unlabelled report may take any labelled report, never itself
    draws = {negatives.draw("blank", rng) for _ in range(50)}
    assert "blank" not in draws and len(draws) > 10
    # unlabelled rows are nobody's negative
    assert all(negatives.draw("rare", rng) != "blank" for _ in range(200))


def test_one_label_set_means_no_negative(tmp_path) -> None:
    rows = [(f"k{i}", f"text {i}", ["Edema"]) for i in range(5)]
    negatives = IrmNegatives.read(write_pool(tmp_path / "irm.parquet", rows))
    assert negatives.draw("k0", np.random.default_rng(0)) is None
    assert not negatives.has_negative("k0")
