"""X-VL attention maps: overlay geometry, word spans, the maps' values on a tiny model, and
`medvill visualize` for one pair and in batch mode (every file the HTML page links exists and
is a PNG of the image's size)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medvill.xvl.attention import WordSpan, compute_maps, peak_cell, phrase_span, word_spans
from medvill.xvl.config import config_from_profile
from medvill.xvl.model import XVLForPretraining, XVLModel
from medvill.xvl.overlay import heat_rgb, overlay, upsample

TINY = {
    "vision_width": 32, "vision_depth": 2, "vision_heads": 2, "patch_size": 16, "image_size": 64,
    "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 40, "max_text_tokens": 32,
    "embed_dim": 16, "queue_size": 8,
}  # fmt: skip


@pytest.mark.parametrize(("row", "column"), [(0, 0), (1, 2), (3, 3)])
def test_a_hot_patch_lands_on_its_rectangle_of_a_non_square_image(row: int, column: int) -> None:
    grid_map = np.zeros((4, 4), dtype=np.float32)
    grid_map[row, column] = 1.0
    width, height = 120, 80  # patch rectangles of 30 × 20 pixels
    heat = upsample(grid_map, (width, height))
    assert heat.shape == (height, width)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert column * 30 <= x < (column + 1) * 30 and row * 20 <= y < (row + 1) * 20
    hot = np.argwhere(heat >= 0.5)  # the half-maximum blob is centred on the rectangle
    centre_y, centre_x = hot.mean(0)
    assert abs(centre_x - (column + 0.5) * 30) <= 3 and abs(centre_y - (row + 0.5) * 20) <= 3
    assert hot[:, 1].min() >= column * 30 - 15 and hot[:, 1].max() < (column + 1) * 30 + 15
    # the overlay keeps the image's size; away from the patch it is image ⊕ jet(0) (dark blue)
    image = Image.fromarray(np.full((height, width), 200, dtype=np.uint8), "L")
    drawn = overlay(image, grid_map)
    assert drawn.size == (width, height) and drawn.mode == "RGB"
    far_y, far_x = (0 if row == 3 else height - 1), (0 if column >= 2 else width - 1)
    cold = heat_rgb(np.zeros((4, 4)), (1, 1))[0, 0].astype(float)
    expected = np.round(0.5 * 200 + 0.5 * cold)
    assert np.asarray(drawn)[far_y, far_x].tolist() == expected.tolist()


def test_word_spans_join_wordpieces_and_phrases_are_found(tiny_data: dict) -> None:
    tokenizer = tiny_data["tokenizer"]
    text = "small left pleural effusion ."
    ids, words = word_spans(tokenizer, text, 32)
    pieces = tokenizer.tokenize(text)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert len(ids) == len(pieces) + 2
    assert [w.text for w in words] == ["small", "left", "pleural", "effusion", "."]
    assert sorted(p for w in words for p in w.positions) == list(range(1, len(pieces) + 1))
    span = phrase_span(words, "Pleural  Effusion")
    assert span.text == "pleural effusion"
    assert span.positions == words[2].positions + words[3].positions
    with pytest.raises(ValueError, match="'pneumothorax' is not in the report"):
        phrase_span(words, "pneumothorax")
    fake = [WordSpan("cardio", [1]), WordSpan("megaly", [2])]
    assert phrase_span(fake, "megaly").positions == [2]


def _tiny_encoder(tiny_data: dict) -> XVLModel:
    tokenizer = tiny_data["tokenizer"]
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "mask_token_id": tokenizer.mask_token_id}  # fmt: skip
    torch.manual_seed(0)
    return XVLModel(config_from_profile(TINY, ids))


def test_maps_are_attention_distributions_and_the_cls_map_is_the_vit_softmax(
    tiny_data: dict,
) -> None:
    model = _tiny_encoder(tiny_data)
    ids, words = word_spans(tiny_data["tokenizer"], "mild cardiomegaly with edema .", 32)
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    captured = {}
    block = model.visual_encoder.blocks[-1]
    handle = block.norm1.register_forward_hook(lambda m, i, o: captured.update(x=o.detach()))
    maps = compute_maps(model, image, ids, words)
    handle.remove()
    assert maps.grid == 4 and len(maps.cross) == len(words) == len(maps.gradcam)
    assert maps.layer == 0 and len(maps.cls_heads) == 2  # the middle of 2 fusion layers
    # words look at different places, and the gradient-weighted maps are not empty (the last
    # layer's word rows would get no gradient: only its [CLS] feeds the matching head)
    assert np.abs(maps.cross[0] - maps.cross[1]).max() > 0
    assert all(m.max() > 0 for m in maps.gradcam)
    last = compute_maps(model, image, ids, words, layer=-1)
    assert last.layer == 1 and all(m.max() == 0 for m in last.gradcam)
    with pytest.raises(ValueError, match="fusion layer 2 does not exist"):
        compute_maps(model, image, ids, words, layer=2)
    for grid_map in maps.cross:
        # probabilities over 1 + 16 image tokens, the image [CLS] column dropped
        assert grid_map.shape == (4, 4) and (grid_map > 0).all() and grid_map.sum() < 1.0
    assert all((m >= 0).all() for m in maps.gradcam)
    assert 0.0 < maps.match_probability < 1.0
    # the [CLS] maps are the softmax of the last block's queries and keys
    attn = block.attn
    x = captured["x"]
    qkv = attn.qkv(x).reshape(1, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    probs = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)[0, :, 0, 1:]
    for head in range(2):
        assert np.allclose(maps.cls_heads[head], probs[head].reshape(4, 4).detach().numpy(),
                           atol=1e-5)  # fmt: skip
    # recording is switched off again: training keeps the fused kernels
    assert not any(a.record for a in model.text.cross_attentions())
    assert peak_cell(maps.cls_heads[0]) == np.unravel_index(
        int(np.argmax(maps.cls_heads[0])), (4, 4)
    )


def _checkpoint(tiny_data: dict, folder: Path) -> Path:
    tokenizer = tiny_data["tokenizer"]
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "mask_token_id": tokenizer.mask_token_id}  # fmt: skip
    torch.manual_seed(0)
    XVLForPretraining(config_from_profile(TINY, ids)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _linked_files(page: Path) -> list[Path]:
    sources = re.findall(r"<img src='([^']+)'", page.read_text(encoding="utf-8"))
    return [page.parent / s for s in sources]


def test_visualize_one_pair_from_the_cli(tiny_data: dict, tmp_path: Path) -> None:
    from medvill.cli import app

    checkpoint = _checkpoint(tiny_data, tmp_path / "ckpt")
    image_path = tmp_path / "cxr.png"
    Image.fromarray(np.tile(np.arange(150, dtype=np.uint8), (100, 1)), "L").save(image_path)
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, [
        "visualize", "--model", "xvl", "--checkpoint", str(checkpoint), "--image",
        str(image_path), "--text", "small left pleural effusion .", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "attention.json").read_text())
    assert [w["word"] for w in doc["words"]] == ["small", "left", "pleural", "effusion", "."]
    assert doc["size"] == [150, 100] and doc["grid"] == 4 and len(doc["cls_heads"]) == 2
    files = _linked_files(out / "index.html")
    assert len(files) == 1 + 2 * 5 + 2
    for file in files:
        with Image.open(file) as png:
            assert png.format == "PNG" and png.size == (150, 100)
    # one phrase only
    phrase_out = tmp_path / "phrase"
    result = CliRunner().invoke(app, [
        "visualize", "--checkpoint", str(checkpoint), "--image", str(image_path), "--text",
        "small left pleural effusion .", "--phrase", "pleural effusion", "--out",
        str(phrase_out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    words = json.loads((phrase_out / "attention.json").read_text())["words"]
    assert [w["word"] for w in words] == ["pleural effusion"]
    # a phrase that is not there, or a missing image: an error line, exit 2
    bad = CliRunner().invoke(app, [
        "visualize", "--checkpoint", str(checkpoint), "--image", str(image_path), "--text",
        "no effusion", "--phrase", "pneumothorax", "--out", str(tmp_path / "bad"),
    ])  # fmt: skip
    assert bad.exit_code == 2 and "pneumothorax" in bad.output
    missing = CliRunner().invoke(app, [
        "visualize", "--checkpoint", str(checkpoint), "--image", str(tmp_path / "nope.png"),
        "--text", "x", "--out", str(tmp_path / "bad2"),
    ])  # fmt: skip
    assert missing.exit_code == 2 and "nope.png" in missing.output


def test_batch_mode_writes_a_page_whose_links_are_pngs_of_the_image_size(
    tiny_data: dict, tmp_path: Path
) -> None:
    from medvill.xvl.visualize import visualize_split

    checkpoint = _checkpoint(tiny_data, tmp_path / "ckpt")
    (tmp_path / "batch" / "stale-pair").mkdir(parents=True)  # from an earlier run
    page = visualize_split(checkpoint, tiny_data["index"], tmp_path / "batch", n=2, split="test")
    assert page == tmp_path / "batch" / "index.html"
    assert not (tmp_path / "batch" / "stale-pair").exists()
    html = page.read_text(encoding="utf-8")
    assert html.count("<section>") == 2
    files = _linked_files(page)
    assert files and all(f.is_file() for f in files)
    for file in files:
        with Image.open(file) as png:
            png.verify()
        with Image.open(file) as png:
            assert png.format == "PNG" and png.size == (96, 96)  # the fixture's shard images
    with Image.open(tmp_path / "batch" / "overlays.png") as montage:  # 2 rows of 6 tiles
        assert montage.size == (6 * 192, 2 * (192 + 16))
    folders = sorted(p.name for p in (tmp_path / "batch").iterdir() if p.is_dir())
    assert len(folders) == 2
    doc = json.loads((tmp_path / "batch" / folders[0] / "attention.json").read_text())
    assert all(w["word"] not in ("the", ".", ",") for w in doc["words"])  # content words
