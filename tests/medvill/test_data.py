"""Loader: contract decoding, IRM join, MLM rules, determinism, rank split, resume skipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvill.data import (
    IrmNegatives,
    LoaderSettings,
    PretrainShards,
    TextSpec,
    make_loader,
    mask_tokens,
    rank_schedule,
    read_index,
    text_block,
    text_spec_for,
)
from medvill.imagebatch import model_images


def make_dataset(tiny_data, rank=0, world=1, **overrides) -> PretrainShards:
    fields = dict(batch_size=2, num_workers=0, shuffle_buffer=6, seed=5, image_size=64,
                  grid_cells=4, num_sampled_visual=3, mask_type="bi_s2s")  # fmt: skip
    fields.update(overrides)
    tokenizer = tiny_data["tokenizer"]
    return PretrainShards(
        read_index(tiny_data["index"], "train"),
        tokenizer,
        text_spec_for(tokenizer, 16, False),
        LoaderSettings(**fields),
        IrmNegatives.read(tiny_data["negatives"]),
        rank=rank,
        world=world,
    )


def collect(dataset: PretrainShards, epoch: int = 0, start: int = 0) -> list[dict]:
    dataset.set_epoch(epoch, start)
    return list(make_loader(dataset, 5))


def same_images(a: dict, b: dict) -> bool:
    """Two batches hold the same images: the same pixels and the same crop boxes."""
    return torch.equal(a["image_sources"], b["image_sources"]) and torch.equal(
        a["crop_boxes"], b["crop_boxes"]
    )


def original_text(batch: dict, row: int, tokenizer) -> str:
    ids = batch["text_ids"][row].clone()
    labels = batch["mlm_labels"][row]
    ids[labels != -100] = labels[labels != -100]
    return tokenizer.decode(ids[batch["text_valid"][row]].tolist(), skip_special_tokens=True)


def test_batches_follow_the_layout_and_never_unpickle(tiny_data) -> None:
    batches = collect(make_dataset(tiny_data))
    assert len(batches) == 6  # 12 train samples / 2
    batch = batches[0]
    # 8-bit grey pixels as stored (96², not drafted: 64 > 96 / 2) and one crop box per image
    assert batch["image_sources"].dtype == torch.uint8
    assert batch["image_sources"].shape == (2, 1, 96, 96)
    assert batch["crop_boxes"].shape == (2, 4) and batch["image_size"] == 64
    images = model_images(batch["image_sources"], batch["crop_boxes"], batch["image_size"])
    assert images.shape == (2, 3, 64, 64)
    assert batch["text_ids"].shape == batch["mlm_labels"].shape == (2, 17)
    assert batch["visual_cells"].tolist() == sorted(batch["visual_cells"].tolist())
    assert len(batch["visual_cells"]) == 3
    assert batch["mask_type"] in ("bi", "s2s")
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == sorted(r[0] for r in tiny_data["records"])  # jpg and png members
    assert not tiny_data["marker"].exists()  # the .pyd member was never unpickled
    # ImageNet normalisation of grey replicated to 3 channels
    assert torch.allclose(images[:, 0] * 0.229 + 0.485, images[:, 1] * 0.224 + 0.456, atol=1e-5)


def test_irm_negatives_come_from_a_different_label_set(tiny_data) -> None:
    tokenizer = tiny_data["tokenizer"]
    label_of_key = {k: lab for k, _, lab in tiny_data["records"]}
    label_of_text = {t.replace(" ", ""): lab for _, t, lab in tiny_data["records"]}
    no_negatives = tiny_data["records"][-1][0]
    matched = unmatched = 0
    dataset = make_dataset(tiny_data)
    for epoch in range(4):
        for batch in collect(dataset, epoch):
            for row, key in enumerate(batch["keys"]):
                text = original_text(batch, row, tokenizer)
                label = label_of_text[text.replace(" ", "")]
                if batch["irm_labels"][row] == 1:
                    matched += 1
                    assert label == label_of_key[key]
                else:
                    unmatched += 1
                    assert label != label_of_key[key]
                    assert key != no_negatives
    assert matched > 10 and unmatched > 10  # roughly 1:1 (p = 0.5 per sample)


def test_same_seed_same_batches_other_epoch_other_batches(tiny_data) -> None:
    first = collect(make_dataset(tiny_data), epoch=1)
    again = collect(make_dataset(tiny_data), epoch=1)
    other = collect(make_dataset(tiny_data), epoch=2)
    for a, b in zip(first, again, strict=True):
        assert a["keys"] == b["keys"] and a["mask_type"] == b["mask_type"]
        for name in ("image_sources", "crop_boxes", "text_ids", "mlm_labels", "irm_labels",
                     "visual_cells"):  # fmt: skip
            assert torch.equal(a[name], b[name])
    assert [b["keys"] for b in first] != [b["keys"] for b in other]


def test_ranks_split_the_global_stream(tiny_data) -> None:
    """Two ranks of batch 1 see exactly the samples of one rank of batch 2, step by step."""
    single = collect(make_dataset(tiny_data, batch_size=2))
    ranks = [collect(make_dataset(tiny_data, rank=r, world=2, batch_size=1)) for r in (0, 1)]
    for step, batch in enumerate(single):
        assert batch["keys"] == ranks[0][step]["keys"] + ranks[1][step]["keys"]
        assert torch.equal(batch["visual_cells"], ranks[1][step]["visual_cells"])
        for name in ("image_sources", "crop_boxes"):
            assert torch.equal(batch[name][1], ranks[1][step][name][0])


def test_resume_skips_consumed_batches_with_workers(tiny_data) -> None:
    """With 2 workers, starting at micro-batch m yields exactly the tail of the full epoch."""
    dataset = make_dataset(tiny_data, num_workers=2, batch_size=2)
    full = collect(dataset, epoch=3)
    assert len(full) == 6
    for start in (1, 4):
        tail = collect(dataset, epoch=3, start=start)
        assert [b["keys"] for b in tail] == [b["keys"] for b in full[start:]]
        assert all(same_images(a, b) for a, b in zip(tail, full[start:], strict=True))


def test_rank_schedule_round_robin() -> None:
    # 11 samples, 1 rank, 2 workers, batch 2: streams of 6 and 5 → 3 and 2 batches
    assert rank_schedule(11, 1, 0, 2, 2) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]


SPEC = TextSpec(max_tokens=5, pad_id=0, cls_id=2, sep_id=3, mask_id=4, vocab_size=50,
                special_ids=(0, 1, 2, 3, 4))  # fmt: skip


def test_text_block_truncates_and_pads() -> None:
    ids, valid = text_block([10, 11, 12, 13, 14, 15, 16], SPEC)
    assert ids.tolist() == [10, 11, 12, 13, 14, 3]
    ids, valid = text_block([10, 11], SPEC)
    assert ids.tolist() == [10, 11, 3, 0, 0, 0]
    assert valid.tolist() == [True, True, True, False, False, False]


def test_mlm_masking_rules() -> None:
    rng = np.random.default_rng(0)
    ids = np.array([7] * 400 + [3, 0, 0], dtype=np.int64)
    valid = np.array([True] * 401 + [False, False])
    chosen = replaced_mask = replaced_random = kept = 0
    for _ in range(50):
        inputs, labels = mask_tokens(ids, valid, SPEC, rng)
        picked = labels != -100
        assert not picked[400:].any()  # never [SEP]/[PAD]
        assert np.all(inputs[~picked] == ids[~picked])
        chosen += picked.sum()
        replaced_mask += (inputs[picked] == 4).sum()
        kept += (inputs[picked] == 7).sum()
        replaced_random += ((inputs[picked] != 4) & (inputs[picked] != 7)).sum()
        assert np.all(inputs[picked & (inputs != 4) & (inputs != 7)] >= 5)  # random: non-special
    assert chosen / (50 * 400) == pytest.approx(0.15, abs=0.01)
    assert replaced_mask / chosen == pytest.approx(0.8, abs=0.02)
    assert replaced_random / chosen == pytest.approx(0.1, abs=0.02)
    assert kept / chosen == pytest.approx(0.1, abs=0.025)
    # no token chosen by chance → the first token is
    short = np.array([9, 3, 0], dtype=np.int64)
    for seed in range(30):
        _, labels = mask_tokens(short, np.array([True, True, False]), SPEC,
                                np.random.default_rng(seed))  # fmt: skip
        assert labels.tolist() == [9, -100, -100]


def test_member_index_gives_the_same_batches_as_header_scans(tiny_data, tmp_path) -> None:
    """An index.json that lists the shards stage's members.parquet: identical batches, and
    the tar headers are never read."""
    import json
    import tarfile

    from pipeline.members import write_member_index

    shards_dir = tiny_data["index"].parent
    index = json.loads(tiny_data["index"].read_text())
    files = [s["file"] for split in index["splits"].values() for s in split["shards"]]
    write_member_index(shards_dir, files)
    index["members"] = "members.parquet"
    indexed_path = shards_dir / "index-with-members.json"
    indexed_path.write_text(json.dumps(index))
    shards = read_index(indexed_path, "train")
    assert shards.members == str(shards_dir / "members.parquet")
    assert set(shards.contents()) == set(shards.files)

    reference = collect(make_dataset(tiny_data), epoch=1)
    dataset = make_dataset(tiny_data)
    dataset.shards = shards
    original_open = tarfile.open
    tarfile.open = lambda *a, **k: (_ for _ in ()).throw(AssertionError("header scan"))
    try:
        indexed = collect(dataset, epoch=1)
    finally:
        tarfile.open = original_open
    assert [b["keys"] for b in indexed] == [b["keys"] for b in reference]
    assert all(same_images(a, b) for a, b in zip(indexed, reference, strict=True))


def test_persistent_workers_follow_set_epoch_and_resume_position(tiny_data) -> None:
    """One loader, two persistent workers, iterated for epoch 0, epoch 1 and epoch 1 from
    micro-batch 2: the same batches as fresh loaders (workers read the shared position)."""
    dataset = make_dataset(tiny_data, num_workers=2)
    loader = make_loader(dataset, 5)
    runs = []
    for epoch, start in ((0, 0), (1, 0), (1, 2)):
        dataset.set_epoch(epoch, start)
        runs.append([b["keys"] for b in loader])
    fresh = [[b["keys"] for b in collect(make_dataset(tiny_data, num_workers=2), e, s)]
             for e, s in ((0, 0), (1, 0), (1, 2))]  # fmt: skip
    assert runs == fresh
    assert runs[0] != runs[1] and runs[2] == runs[1][2:]
