"""Zero-shot retrieval of a pretrained X-VL on MedViLL-format candidate blocks: scores are the
model's own ITC similarity and ITM probability, metrics follow the blocks, chance is exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medvill.data import decode_image, text_block
from medvill.xvl.config import config_from_profile
from medvill.xvl.data import xvl_text_spec
from medvill.xvl.model import XVLForPretraining, XVLModel
from medvill.xvl.retrieval import chance_mrr, pair_scores

TINY = {
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2, "patch_size": 16, "image_size": 32,
    "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 40, "max_text_tokens": 16,
    "embed_dim": 16, "queue_size": 8,
}  # fmt: skip
TEXTS = ["small left pleural effusion .", "the lungs are clear .", "mild cardiomegaly ."]


def _write_root(tiny_data: dict, root: Path) -> Path:
    """A project root with a checkpoint, three images and I2T/T2I blocks of three lines."""
    tokenizer = tiny_data["tokenizer"]
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "mask_token_id": tokenizer.mask_token_id}  # fmt: skip
    torch.manual_seed(0)
    checkpoint = root / "models" / "tiny" / "pretrain-xvl" / "final"
    XVLForPretraining(config_from_profile(TINY, ids)).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    images = []
    for i in range(3):
        path = root / "img" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (48, 48), dtype=np.uint8)
        Image.fromarray(pixels, "L").save(path)
        images.append(f"img/{i}.png")
    pairs = root / "data" / "interim" / "tiny" / "pairs"
    pairs.mkdir(parents=True)
    i2t, t2i = [], []
    for q in range(3):  # query q's true pair is (image q, text q); text 2 is also aligned to 0
        for c in range(3):
            aligned = int(c == q or {q, c} == {0, 2})
            common = {"split": "test", "label": "", "is_aligned": [aligned]}
            i2t.append({"id": f"i{q}", "T_id": f"t{c}", "text": TEXTS[c], "img": images[q],
                        **common})  # fmt: skip
            t2i.append({"id": f"i{c}", "T_id": f"t{q}", "text": TEXTS[q], "img": images[c],
                        **common})  # fmt: skip
    for name, rows in (("I2T_Label_Test.jsonl", i2t), ("T2I_Label_Test.jsonl", t2i)):
        (pairs / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return checkpoint


def test_pair_scores_are_the_models_similarity_and_matching_probability(
    tiny_data: dict, tmp_path: Path
) -> None:
    checkpoint = _write_root(tiny_data, tmp_path)
    model = XVLModel.from_pretrained(checkpoint)
    tokenizer = tiny_data["tokenizer"]
    images = [tmp_path / "img" / "0.png", tmp_path / "img" / "1.png", tmp_path / "img" / "0.png"]
    itc, itm = pair_scores(model, tokenizer, images, [TEXTS[0], TEXTS[0], TEXTS[2]], 2)
    spec = xvl_text_spec(tokenizer, 16)
    tokens = tokenizer(TEXTS[2], add_special_tokens=False)["input_ids"]
    ids, valid = text_block(tokens, spec)
    image = decode_image(images[2].read_bytes(), 32, None)
    with torch.no_grad():
        out = model(image[None], torch.from_numpy(ids)[None], torch.from_numpy(valid)[None])
    assert itc[2] == pytest.approx(float((out.image_feat * out.text_feat).sum()), abs=1e-5)
    assert itm[2] == pytest.approx(float(out.itm_logits.softmax(-1)[0, 1]), abs=1e-5)
    assert itc[0] != itc[1]


def test_zeroshot_command_scores_both_directions_with_chance(
    tiny_data: dict, tmp_path: Path
) -> None:
    from medvill.cli import app

    _write_root(tiny_data, tmp_path)
    result = CliRunner().invoke(app, ["zeroshot", "--dataset", "tiny", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "reports/tiny/xvl/zeroshot_retrieval/metrics.json").read_text())
    assert doc["i2r_queries"] == doc["r2i_queries"] == 3
    # queries 0 and 2 have two aligned candidates of three, query 1 one of three
    expected_chance = (2 * chance_mrr(3, 2) + chance_mrr(3, 1)) / 3
    assert doc["metrics"]["i2r_chance"]["mrr"] == pytest.approx(expected_chance)
    for key in ("i2r_itc", "i2r_itm", "r2i_itc", "r2i_itm"):
        metrics = doc["metrics"][key]
        assert 1 / 3 <= metrics["mrr"] <= 1.0 and metrics["hit@5"] == 1.0  # 3 candidates < 5
        assert metrics["recall@5"] == 1.0
    missing = CliRunner().invoke(app, ["zeroshot", "--dataset", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 2


def test_chance_mrr_matches_the_harmonic_mean_for_one_positive() -> None:
    assert chance_mrr(8, 1) == pytest.approx(sum(1 / r for r in range(1, 9)) / 8)
    assert chance_mrr(5, 5) == 1.0
    assert chance_mrr(3, 2) == pytest.approx(2 / 3 * 1 + 1 / 3 * 1 / 2)
