"""Shared evaluation of a contrastive family (zero-shot retrieval, linear probe) and its row
in the summary's one table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medvill.contrastive.evaluate import Encoder, evaluate, image_features
from medvill.contrastive.model import ContrastiveModel
from medvill.metrics import score_query
from medvill.report import families_markdown
from medvill.tasks.common import EvalSettings, TaskPaths, load_image_file
from pipeline.records import CHEXPERT_LABELS
from tests.medvill.test_contrastive_model import tiny_config

TEXTS = [
    "the heart size is normal . the lungs are clear .",
    "there is a small left pleural effusion .",
]


def _project(tiny_data: dict, root: Path) -> TaskPaths:
    """A project tree: the tiny shards, two test images and their I2T/T2I blocks (each query
    with its own candidate aligned, the other not)."""
    (root / "data" / "shards").mkdir(parents=True)
    (root / "data" / "shards" / "tiny").symlink_to(tiny_data["index"].parent)
    pairs = root / "data" / "interim" / "tiny" / "pairs"
    pairs.mkdir(parents=True)
    rng = np.random.default_rng(4)
    images = []
    for i in range(2):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), "L").save(path)
        images.append(path.name)
    i2t = [{"id": f"q{q}", "split": "test", "label": "", "is_aligned": [int(q == c)],
            "T_id": f"t{c}", "text": TEXTS[c], "img": images[q]}
           for q in range(2) for c in (1, 0)]  # fmt: skip
    t2i = [{"id": f"i{c}", "split": "test", "label": "", "is_aligned": [int(q == c)],
            "T_id": f"r{q}", "text": TEXTS[q], "img": images[c]}
           for q in range(2) for c in (0, 1)]  # fmt: skip
    for name, rows in (("I2T_Label_Test.jsonl", i2t), ("T2I_Label_Test.jsonl", t2i)):
        (pairs / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TaskPaths(root, "tiny")


@pytest.fixture()
def checkpoint(tiny_data, tmp_path) -> Path:
    tokenizer = tiny_data["tokenizer"]
    config = tiny_config("lovt", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         cls_token_id=tokenizer.cls_token_id,
                         sep_token_id=tokenizer.sep_token_id)  # fmt: skip
    torch.manual_seed(2)
    folder = tmp_path / "ckpt"
    ContrastiveModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_zero_shot_scores_are_embedding_cosines_and_the_probe_fits_known_labels(
    tiny_data, tmp_path, checkpoint
) -> None:
    paths = _project(tiny_data, tmp_path / "project")
    settings = EvalSettings(bootstrap=5, bootstrap_ci_resamples=20, batch_size=4)
    doc = evaluate("lovt", paths, settings, checkpoint)
    out = paths.root / "reports" / "tiny" / "zoo-lovt"
    assert json.loads((out / "metrics.json").read_text())["model"] == "lovt"
    predictions = json.loads((out / "predictions.json").read_text())

    # I2R block of query 0: candidates (text 1, text 0); the score is the cosine of the
    # projected embeddings, as the model's own API gives it
    model = ContrastiveModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        image = model.get_image_features(load_image_file(paths.root / "img0.png", 64)[None])
    block = predictions["i2r"]["scores"][0]
    assert predictions["i2r"]["relevant"][0] == [0, 1]
    text = Encoder(model, tiny_data["tokenizer"], 4).texts([TEXTS[0]])[TEXTS[0]]
    assert block[1] == pytest.approx(float(image[0] @ text), abs=1e-5)
    # MRR is MedViLL's: the mean reciprocal rank of the aligned candidate over the 2 queries
    ranks = [1 / (score_query(np.asarray(s), np.asarray(r, dtype=bool), 5).rank + 1)
             for s, r in zip(predictions["i2r"]["scores"], predictions["i2r"]["relevant"],
                             strict=True)]  # fmt: skip
    assert doc["metrics"]["zeroshot/i2r/mrr"] == pytest.approx(sum(ranks) / 2)

    # the tiny train split has positives for six labels only: the others cannot be fitted
    probe = predictions["probe"]
    positives = ["No Finding", "Cardiomegaly", "Atelectasis", "Pneumonia", "Pleural Effusion",
                 "Support Devices"]  # fmt: skip
    assert probe["fitted_labels"] == [c for c in CHEXPERT_LABELS if c in positives]
    assert probe["train_samples"] == 12 and len(probe["keys"]) == 2
    assert 0.0 <= doc["metrics"]["probe/micro_auroc"] <= 1.0

    table = "\n".join(families_markdown(paths.root))
    assert "| tiny | lovt (probe, zero-shot) |" in table
    assert f"{doc['metrics']['zeroshot/i2r/mrr']:.3f} [" in table


def test_a_checkpoint_of_another_family_is_refused(tiny_data, tmp_path, checkpoint) -> None:
    paths = _project(tiny_data, tmp_path / "project")
    with pytest.raises(ValueError, match="holds a lovt model, not clip"):
        evaluate("clip", paths, EvalSettings(bootstrap=5, bootstrap_ci_resamples=20), checkpoint)


def test_inputs_reach_the_model_on_its_device_and_features_come_back_on_the_cpu(
    tiny_data, checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """evaluate() puts the model on the GPU when there is one; CI has none, so the model sits on
    the meta device here and its feature methods record where their inputs live (a missing
    ``.to(device)`` would hand them CPU tensors) and answer with CPU tensors of known shape."""
    model = ContrastiveModel.from_pretrained(checkpoint).eval().to("meta")
    seen: list[str] = []

    def features(*inputs: torch.Tensor) -> torch.Tensor:
        seen.extend(t.device.type for t in inputs)
        return torch.ones(len(inputs[0]), 16)

    monkeypatch.setattr(model, "get_image_features", features)
    monkeypatch.setattr(model, "get_text_features", features)
    width = model.config.visual_feature_dim
    monkeypatch.setattr(
        model, "encode_image", lambda x: {"pooled": features(x)[:, :1].expand(-1, width)}
    )
    encoder = Encoder(model, tiny_data["tokenizer"], 4)
    texts = encoder.texts(TEXTS)
    keys, pooled, _, _ = image_features(model, tiny_data["index"], "train", 5)
    assert seen and set(seen) == {"meta"}
    assert {t.device.type for t in texts.values()} == {"cpu"}
    assert pooled.shape == (len(keys), width) and len(keys) == 12
