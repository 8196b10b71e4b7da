"""Fine-tuned retrieval of a contrastive family: it continues the pretrained model (not a new
one), reads whole reports, and is scored on the zero-shot path's blocks; its row joins the
summary's one table."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvill.contrastive.evaluate import evaluate
from medvill.contrastive.finetune import config_changes, finetune, finetune_profile
from medvill.contrastive.model import ContrastiveModel
from medvill.report import families_markdown
from medvill.tasks.common import EvalSettings
from tests.medvill.test_contrastive_evaluate import _project
from tests.medvill.test_contrastive_model import tiny_config

TRAIN = {
    "seed": 5, "epochs": 3, "global_batch_size": 4, "max_micro_batch_size": 4, "lr": 1e-3,
    "num_workers": 0, "shuffle_buffer": 8, "save_every_steps": 100, "log_every_steps": 1,
    "tensorboard": False, "text_weights": "bert-base-uncased", "imagenet": True,
    "require_pretrained": True,
}  # fmt: skip


def _pretrained(tiny_data: dict, root: Path, objective: str) -> Path:
    """A saved dual encoder with frozen BatchNorm statistics where `medvill pretrain` puts it."""
    tokenizer = tiny_data["tokenizer"]
    config = tiny_config(objective, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         cls_token_id=tokenizer.cls_token_id,
                         sep_token_id=tokenizer.sep_token_id, freeze_batchnorm=True)  # fmt: skip
    torch.manual_seed(3)
    folder = root / "models" / "tiny" / f"pretrain-{objective}" / "final"
    ContrastiveModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_finetuning_continues_the_pretrained_model_and_scores_the_zero_shot_blocks(
    tiny_data, tmp_path
) -> None:
    paths = _project(tiny_data, tmp_path / "project")
    pretrained = _pretrained(tiny_data, paths.root, "convirt")
    tuned = paths.root / "models" / "tiny" / "retrieval-convirt"
    settings = EvalSettings(bootstrap=5, bootstrap_ci_resamples=20, batch_size=4)

    # lr 0: every step runs, nothing moves — the result is the pretrained model itself
    frozen = {"train": TRAIN, "finetune": {"train": {"epochs": 1, "lr": 0.0}}}
    summary = finetune("convirt", frozen, paths.root, "tiny", show_progress=False)
    with open(tuned / "metrics.csv", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == summary["steps"] == 3  # 12 samples / 4
    before = load_file(pretrained / "model.safetensors")
    after = load_file(tuned / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((tuned / "final" / "config.json").read_text())
    assert config["text_input"] == "report"  # ConVIRT pretrains on one random sentence
    card = (tuned / "final" / "README.md").read_text()
    assert "# Contrastive dual encoder retrieval — tiny" in card  # not "pretraining"
    doc = evaluate("convirt", paths, settings, finetuned=tuned / "final")
    predictions = json.loads(
        (paths.root / "reports" / "tiny" / "zoo-convirt" / "predictions.json").read_text()
    )
    for direction in ("i2r", "r2i"):
        np.testing.assert_allclose(
            predictions["finetuned"][direction]["scores"],
            predictions[direction]["scores"],
            atol=1e-6,
        )
        for name in ("mrr", "hit@1", "hit@10", "recall@1", "recall@5", "recall@10"):
            assert doc["metrics"][f"finetuned/{direction}/{name}"] == pytest.approx(
                doc["metrics"][f"zeroshot/{direction}/{name}"]
            )
    # 2 candidates per block: everything relevant is within the top 10
    assert doc["metrics"]["zeroshot/i2r/recall@10"] == 1.0
    assert doc["finetuned_checkpoint"] == str(tuned / "final")

    # lr 1e-3: the encoders move, and the fine-tuned scores are the moved model's
    shutil.rmtree(tuned)
    moving = {"train": TRAIN, "finetune": {"train": {"epochs": 1}}}
    finetune("convirt", moving, paths.root, "tiny", show_progress=False)
    after = load_file(tuned / "final" / "model.safetensors")
    assert not torch.equal(before["text_projection.net.0.weight"],
                           after["text_projection.net.0.weight"])  # fmt: skip
    doc = evaluate("convirt", paths, settings, finetuned=tuned / "final")
    predictions = json.loads(
        (paths.root / "reports" / "tiny" / "zoo-convirt" / "predictions.json").read_text()
    )
    assert predictions["finetuned"]["i2r"]["scores"] != predictions["i2r"]["scores"]

    table = "\n".join(families_markdown(paths.root))
    assert "| tiny | convirt (probe, zero-shot) |" in table
    tuned_row = next(
        line for line in table.splitlines() if "convirt (fine-tuned retrieval)" in line
    )
    assert tuned_row.startswith("| tiny | convirt (fine-tuned retrieval) | – | – | ")
    assert f"{doc['metrics']['finetuned/i2r/mrr']:.3f} [" in tuned_row


def test_finetuning_refuses_another_family_s_checkpoint_and_a_profile_without_budget(
    tiny_data, tmp_path
) -> None:
    root = tmp_path / "project"
    pretrained = _pretrained(tiny_data, root, "clip")
    profile = {"train": TRAIN, "finetune": {"train": {"epochs": 1}}}
    with pytest.raises(ValueError, match="holds a clip model, not lovt"):
        finetune("lovt", profile, root, "tiny", pretrained=pretrained)
    with pytest.raises(ValueError, match="no finetune.train block"):
        finetune_profile({"train": TRAIN})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['model'\]"):
        finetune_profile({"train": TRAIN, "finetune": {"train": {}, "model": {}}})
    with pytest.raises(FileNotFoundError, match="medvill pretrain --model lovt"):
        finetune("lovt", profile, root, "tiny")
    # the text view is the report's; gathered negatives follow the profile, nothing else does
    assert config_changes({"model": {"gather_negatives": True, "hidden_size": 8}}) == {
        "text_input": "report", "gather_negatives": True,
    }  # fmt: skip
    # the budget goes over the pretraining's train block; public weights are not looked for
    merged = finetune_profile({"train": TRAIN, "finetune": {"train": {"lr": 2e-5}}})["train"]
    assert merged["lr"] == 2e-5 and merged["global_batch_size"] == 4
    assert (merged["text_weights"], merged["imagenet"], merged["require_pretrained"]) == (
        "", False, False,
    )  # fmt: skip
