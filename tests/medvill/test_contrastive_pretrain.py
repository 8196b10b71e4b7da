"""The contrastive families through the shared trainer: exact resume, their metrics columns,
their checkpoints, and the params.yaml profiles."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medvill.checkpoint import latest_checkpoint, load_trainer_state
from medvill.config import profile_section
from medvill.contrastive.config import ContrastiveConfig
from medvill.families import get_family
from medvill.pretrain import Paths, TrainSettings, pretrain

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


class Crash(RuntimeError):
    pass


def tiny_profile(**train) -> dict:
    settings = {
        "seed": 5, "epochs": 2, "global_batch_size": 4, "max_micro_batch_size": 2, "lr": 1e-3,
        "num_workers": 0, "shuffle_buffer": 8, "save_every_steps": 2, "log_every_steps": 1,
        "text_weights": "", "imagenet": False, "tensorboard": False, "schedule": "cosine",
        "warmup_ratio": 0.2,
    }  # fmt: skip
    settings.update(train)
    model = {
        "backbone": "resnet18", "image_size": 64, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 40,
        "max_text_tokens": 24, "max_sentences": 4, "projection_dim": 16,
        "projection_hidden": 32, "pooling_heads": 2,
    }  # fmt: skip
    return {"model": model, "train": settings}


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def paths_for(tiny_data: dict, out: Path) -> Paths:
    return Paths(tiny_data["index"], None, tiny_data["tokenizer_dir"], out)


@pytest.mark.slow
def test_lovt_resumes_after_a_crash_with_identical_losses(tiny_data, tmp_path) -> None:
    """Accumulation 2 over micro-batches of 2 (the contrastive batch), dropout on: crash
    after step 2 (checkpoint at 2, mid-epoch), resume, and losses and weights equal the
    uninterrupted run's."""
    profile = tiny_profile(epochs=1, save_every_steps=2)
    straight = tmp_path / "straight"
    summary = pretrain(profile, paths_for(tiny_data, straight), show_progress=False, model="lovt")
    assert summary["steps"] == 3
    header = list(rows(straight)[0])
    assert header == ["step", "epoch", "loss", "image_to_report_loss", "report_to_image_loss",
                      "local_image_loss", "local_report_loss", "lr", "samples_per_s",
                      "elapsed_s"]  # fmt: skip
    for row in rows(straight):  # the logged loss is the papers' weighting of the parts
        parts = {k: float(v) for k, v in row.items()}
        weighted = (0.75 * parts["image_to_report_loss"] + 0.25 * parts["report_to_image_loss"]
                    + 0.375 * (parts["local_image_loss"] + parts["local_report_loss"]))  # fmt: skip
        assert parts["loss"] == pytest.approx(weighted, rel=1e-5)
    assert {"final_local_image_loss", "final_image_to_report_loss"} <= set(summary)
    card = (straight / "final" / "README.md").read_text()
    assert "pretrained contrastively" in card

    crashed = tmp_path / "crashed"

    def crash(step: int, row: dict) -> None:
        if step == 2:  # after the step's checkpoint, as a crash before the next step
            raise Crash

    with pytest.raises(Crash):
        pretrain(profile, paths_for(tiny_data, crashed), on_step=crash, show_progress=False,
                 model="lovt")  # fmt: skip
    checkpoint = latest_checkpoint(crashed / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step-00000002"
    state = load_trainer_state(checkpoint)
    assert (state["epoch"], state["consumed"], state["batch_plan"]["accumulation"]) == (0, 4, 2)
    pretrain(profile, paths_for(tiny_data, crashed), resume=True, show_progress=False,
             model="lovt")  # fmt: skip
    assert [float(r["loss"]) for r in rows(crashed)] == pytest.approx(
        [float(r["loss"]) for r in rows(straight)], rel=1e-6, abs=1e-7
    )
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(crashed / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_clip_trains_its_temperature(tiny_data, tmp_path) -> None:
    """CLIP's logit scale is a parameter the optimizer moves (ConVIRT and LoVT have none:
    test_contrastive_model); its metrics name the two directions."""
    out = tmp_path / "clip"
    profile = tiny_profile(epochs=1, max_steps=2, save_every_steps=1000)
    pretrain(profile, paths_for(tiny_data, out), show_progress=False, model="clip")
    scale = load_file(out / "final" / "model.safetensors")["log_logit_scale"].item()
    assert scale != pytest.approx(torch.log(torch.tensor(1 / 0.07)).item(), abs=1e-6)
    assert list(rows(out)[0])[2:5] == ["loss", "image_to_report_loss", "report_to_image_loss"]


def test_mask_option_is_refused_for_contrastive_families(tiny_data, tmp_path) -> None:
    with pytest.raises(ValueError, match="--mask applies to medvill only, not to clip"):
        pretrain(tiny_profile(), paths_for(tiny_data, tmp_path / "x"), mask_type="bi",
                 show_progress=False, model="clip")  # fmt: skip


def test_every_family_profile_in_params_builds_its_config(tiny_data) -> None:
    params = yaml.safe_load(PARAMS.read_text())
    for name in ("convirt", "clip", "lovt"):
        for profile in ("paper", "demo", "learn"):
            section = profile_section(params, profile, name)
            TrainSettings.from_dict(section["train"])
            config = get_family(name).build_config(section, tiny_data["tokenizer"], {})
            assert isinstance(config, ContrastiveConfig) and config.objective == name
        paper = profile_section(params, "paper", name)["train"]
        assert paper["require_pretrained"] is True and paper["max_micro_batch_size"] == 32
    known = r"\['demo', 'learn', 'paper'\]"
    with pytest.raises(KeyError, match=rf"pretrain.families.lovt.profiles defines {known}"):
        profile_section(params, "huge", "lovt")


def test_paper_style_profile_refuses_missing_weights_unless_allowed(tiny_data, tmp_path) -> None:
    """require_pretrained with a text encoder folder that does not exist: the run stops before
    its first step and names what is missing, as MedViLL's does."""
    missing = str(tmp_path / "no-such-bert")
    profile = tiny_profile(text_weights=missing, require_pretrained=True, max_steps=1)
    out = tmp_path / "refused"
    with pytest.raises(FileNotFoundError, match=r"no-such-bert.*--allow-random-init"):
        pretrain(profile, paths_for(tiny_data, out), show_progress=False, model="convirt")
    assert not (out / "metrics.csv").exists()
