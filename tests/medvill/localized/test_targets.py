"""Shard `regions` → boxes and masks at the model's input size, and the image trunk of a
checkpoint under torchvision's names."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medvill.localized.backbone import imagenet_cache, load_resnet, trunk_state
from medvill.localized.targets import (
    NoRegionsError,
    class_names,
    label_ids,
    read_split,
    require_regions,
    resize_mask,
    sample_targets,
    scale_box,
)
from pipeline.localized.rle import decode_counts, encode_counts


def test_scale_box_and_mask_to_the_input_size() -> None:
    assert scale_box([128, 64, 256, 192], (512, 512), 64).tolist() == [16, 8, 32, 24]
    mask = np.zeros((512, 512), bool)
    mask[64:192, 128:256] = True  # the box above, as a mask
    meta = {"regions": [
        {"finding": "Pneumothorax", "box": [128, 64, 256, 192], "mask": encode_counts(mask)},
        {"finding": "Lung Lesion", "box": [0, 0, 4, 4], "mask": ""},
    ]}  # fmt: skip
    boxes, findings, union, has_mask = sample_targets(meta, (512, 512), 64)
    assert findings == ("Pneumothorax", "Lung Lesion") and has_mask
    assert boxes.tolist() == [[16, 8, 32, 24], [0, 0, 0.5, 0.5]]
    rows, cols = np.nonzero(union)
    assert union.sum() == 16 * 16 and (rows.min(), rows.max(), cols.min(), cols.max()) == (
        8,
        23,
        16,
        31,
    )
    only = sample_targets(meta, (512, 512), 64, frozenset({"Lung Lesion"}))
    assert only[1] == ("Lung Lesion",) and not only[3] and not only[2].any()
    # a mask under half a pixel at the input size disappears, one over half stays
    small = np.zeros((8, 8), bool)
    small[0:2, 0:3] = True  # at 4×4: pixel (0,0) fully on, (0,1) half on
    assert resize_mask(small, 4)[0].tolist() == [True, True, False, False]


def test_unknown_findings_keep_their_boxes() -> None:
    assert label_ids(("B", "Z", "A"), ["A", "B"]).tolist() == [2, 3, 1]


@pytest.mark.slow
def test_boxes_land_where_the_geometry_columns_say(localized_corpus) -> None:
    """Each source box of the corpus, mapped by the images stage's crop/resize/pad columns and
    scaled to the input, is where read_split puts it (within the mask-to-box rounding: the
    corpus's regions are masks, their boxes re-derived on the output grid)."""
    size = 64
    samples = {s.key: s for s in read_split(localized_corpus["index"], "train", size)}
    samples.update({s.key: s for s in read_split(localized_corpus["index"], "test", size)})
    images = pd.read_parquet(
        localized_corpus["root"] / "data/interim/synthetic/images/records.parquet"
    )
    geometry = images.set_index("image_id")
    placed = pd.read_parquet(
        localized_corpus["root"] / "data/interim/synthetic/localized/records.parquet"
    )
    checked = 0
    for line in (localized_corpus["raw"] / "regions.jsonl").read_text().splitlines():
        entry = json.loads(line)
        key = f"synthetic_{entry['image_id']}"
        if key not in samples:
            continue  # a valid-split image
        sample = samples[key]
        g = geometry.loc[entry["image_id"]]
        assert len(sample.findings) == len(entry["regions"])
        for region, box in zip(entry["regions"], sample.boxes, strict=True):
            x0, y0, x1, y1 = region["box"]
            sx = g.content_width / (g.crop_right - g.crop_left)
            sy = g.content_height / (g.crop_bottom - g.crop_top)
            expected = np.array([
                g.pad_left + (max(x0, g.crop_left) - g.crop_left) * sx,
                g.pad_top + (max(y0, g.crop_top) - g.crop_top) * sy,
                g.pad_left + (min(x1, g.crop_right) - g.crop_left) * sx,
                g.pad_top + (min(y1, g.crop_bottom) - g.crop_top) * sy,
            ]) * size / 512  # fmt: skip
            assert np.abs(box - expected).max() <= 2 * sx * size / 512 + 1e-6, (key, region)
            checked += 1
        # the union mask is the area-resized union of the placed masks
        rows = placed[placed.image_id == entry["image_id"]]
        union = np.zeros((512, 512), bool)
        for rle in rows.mask_rle:
            union |= decode_counts(rle, 512, 512)
        assert np.array_equal(sample.mask, resize_mask(union, size))
    assert checked >= 10
    assert {s.key for s in samples.values() if s.findings} and class_names(list(samples.values()))


@pytest.mark.slow
def test_dataset_without_regions_is_refused(tiny_data) -> None:
    with pytest.raises(NoRegionsError, match="has no localized annotations"):
        require_regions(tiny_data["index"], "tiny")
    with pytest.raises(NoRegionsError, match="no `regions`"):
        read_split(tiny_data["index"], "train", 64)


def test_checkpoint_trunk_is_the_family_image_encoder(lovt_checkpoint) -> None:
    from medvill.contrastive.model import ContrastiveModel

    model = ContrastiveModel.from_pretrained(str(lovt_checkpoint)).eval()
    resnet, origin = load_resnet("pretrained", "resnet18", 0, lovt_checkpoint)
    assert origin.startswith("pretrained") and len(trunk_state(lovt_checkpoint)) > 50
    resnet.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.visual_backbone.trunk(x)
        body = torch.nn.Sequential(*list(resnet.children())[:-2])  # up to layer4
        assert torch.equal(body(x), ours)
    random_a, _ = load_resnet("random", "resnet18", 3)
    random_b, _ = load_resnet("random", "resnet18", 3)
    assert torch.equal(random_a.conv1.weight, random_b.conv1.weight)


def test_imagenet_arm_reads_the_local_cache_only(tmp_path, monkeypatch) -> None:
    """No cached file: no network, the arm is refused with the reason. A cached file (here a
    seeded network saved as torchvision's file would be): loaded with weights_only."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    resnet, why = load_resnet("imagenet", "resnet18", 0)
    assert resnet is None and "not in the local cache" in why and str(tmp_path) in why
    source, _ = load_resnet("random", "resnet18", 11)
    cached = imagenet_cache("resnet18")
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    resnet, origin = load_resnet("imagenet", "resnet18", 0)
    assert origin.startswith("imagenet") and torch.equal(resnet.conv1.weight, source.conv1.weight)


def test_medvill_checkpoint_trunk_loads_too(tmp_path) -> None:
    """MedViLL's CNN (``medvill.visual_backbone.trunk.*`` in a pretraining checkpoint)."""
    from medvill.config import MedViLLConfig
    from medvill.model.medvill import MedViLLForPretraining

    torch.manual_seed(0)
    config = MedViLLConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        backbone="resnet18", image_size=64, num_sampled_visual=3, max_text_tokens=16,
        max_position_embeddings=64, vocab_size=100,
    )  # fmt: skip
    model = MedViLLForPretraining(config).eval()
    model.save_pretrained(tmp_path / "final")
    resnet, _ = load_resnet("pretrained", "resnet18", 0, tmp_path / "final")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        body = torch.nn.Sequential(*list(resnet.eval().children())[:-2])
        assert torch.equal(body(x), model.medvill.visual_backbone.trunk(x))


def test_stored_grey_gives_the_loaders_input() -> None:
    """Half-precision grey, normalised per batch, is the loader's decode_image input (to fp16
    rounding), at a smaller and at the stored size."""
    import io

    from PIL import Image

    from medvill.data import decode_image
    from medvill.localized.targets import LocalizedSample, grey_input, input_batch

    pixels = np.random.default_rng(0).integers(0, 256, (96, 96), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "PNG")
    for size in (64, 96):
        grey = grey_input(buffer.getvalue(), size)
        assert grey.dtype == torch.float16 and grey.shape == (1, size, size)
        sample = LocalizedSample(
            "k", grey, np.zeros((0, 4)), (), np.zeros((size, size), bool), False
        )
        batch = input_batch([sample], torch.device("cpu"))
        expected = decode_image(buffer.getvalue(), size, None)
        assert batch.shape == (1, 3, size, size)
        assert torch.allclose(batch[0], expected, atol=0.01)
