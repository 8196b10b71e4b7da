"""X-VL pretraining on tiny shards: a run writes safetensors checkpoints and metrics, the loss
falls on a repeated batch, and a resumed run replays the uninterrupted one exactly (queues and
momentum weights included)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from medvill.pretrain import Paths, pretrain

MODEL = {
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2, "patch_size": 16, "image_size": 32,
    "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 32, "max_text_tokens": 16,
    "embed_dim": 16, "queue_size": 8,
}  # fmt: skip


def profile(**train: Any) -> dict[str, Any]:
    settings = {
        "seed": 5, "epochs": 1, "global_batch_size": 4, "max_micro_batch_size": 2, "lr": 1e-3,
        "warmup_ratio": 0.0, "num_workers": 0, "shuffle_buffer": 8, "save_every_steps": 2,
        "log_every_steps": 1, "text_weights": "", "imagenet": False, "precision": "fp32",
        "tensorboard": False,
    }  # fmt: skip
    settings.update(train)
    return {"model": dict(MODEL), "train": settings}


def paths(data: dict, out: Path) -> Paths:
    return Paths(index=data["index"], negatives=None, tokenizer=data["tokenizer_dir"], out=out)


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_resume_replays_the_uninterrupted_run(tiny_data: dict, tmp_path: Path) -> None:
    full = tmp_path / "full"
    summary = pretrain(profile(), paths(tiny_data, full), model="xvl", show_progress=False)
    # 12 samples, global batch 4 = 2 micro-batches of 2 (accumulation) → 3 steps in the epoch
    assert summary["steps"] == 3
    assert json.loads((full / "metrics.json").read_text())["steps"] == 3
    assert (full / "final" / "model.safetensors").is_file()
    assert (full / "final" / "tokenizer_config.json").is_file()
    assert "itc_loss" in (full / "metrics.csv").read_text().splitlines()[0]
    assert (full / "loss.png").is_file() and (full / "final" / "README.md").is_file()
    checkpoints = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002", "step-00000003"]

    class Crash(Exception):
        pass

    def crash(step: int, _row: dict) -> None:
        if step == 2:
            raise Crash

    part = tmp_path / "part"
    with pytest.raises(Crash):
        pretrain(profile(), paths(tiny_data, part), on_step=crash, model="xvl")
    pretrain(profile(), paths(tiny_data, part), resume=True, model="xvl")
    a, b = rows(full), rows(part)
    assert [int(r["step"]) for r in b] == [1, 2, 3]
    # the distillation weight ramps up over the first epoch (3 steps)
    assert [round(float(r["alpha"]), 4) for r in a] == [0.1333, 0.2667, 0.4]
    for x, y in zip(a, b, strict=True):
        assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5, abs=1e-6)
    wa = load_file(str(full / "final" / "model.safetensors"))
    wb = load_file(str(part / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in ("image_queue", "report_queue", "queue_pointer", "xvl.temp",
                "text_m.layer.0.attention.self.query.weight"):  # fmt: skip
        assert torch.allclose(wa[key].float(), wb[key].float(), atol=1e-5), key
    assert int(wa["queue_filled"]) == 8  # 3 steps × 4 samples: the 8-entry queue is full
    assert int(wa["queue_pointer"]) == 12 % 8  # and wrapped


def test_the_loss_falls_when_one_batch_is_repeated(tiny_data: dict, tmp_path: Path) -> None:
    """10 steps on 4 fixed samples: the masked-word loss falls (the model fits them)."""
    from medvill.data import LoaderSettings, read_index
    from medvill.xvl.config import config_from_profile
    from medvill.xvl.data import XVLShards, xvl_text_spec
    from medvill.xvl.model import XVLForPretraining

    tokenizer = tiny_data["tokenizer"]
    ids = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
           "cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
           "mask_token_id": tokenizer.mask_token_id}  # fmt: skip
    torch.manual_seed(0)
    model = XVLForPretraining(config_from_profile({**MODEL, "vision_drop_path": 0.0}, ids))
    settings = LoaderSettings(batch_size=4, num_workers=0, shuffle_buffer=1, seed=1,
                              image_size=32, augment=False)  # fmt: skip
    data = XVLShards(read_index(tiny_data["index"], "train"), tokenizer,
                     xvl_text_spec(tokenizer, 16), settings)  # fmt: skip
    data.set_epoch(0)
    batch = next(iter(data))
    inputs = {k: batch[k] for k in ("images", "text_ids", "text_valid", "mlm_ids", "mlm_labels",
                                    "report_ids", "report_overlap")}  # fmt: skip
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for step in range(10):
        out = model(**inputs, alpha=0.0, generator=torch.Generator().manual_seed(step))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.mlm_loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def _ddp_worker(rank: int, port: int, data: dict, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    model = dict(MODEL, queue_size=32)
    train = profile(max_steps=2, epochs=2, global_batch_size=8)["train"]
    pretrain({"model": model, "train": train}, paths(data, Path(out)), model="xvl",
             show_progress=False)  # fmt: skip


@pytest.mark.slow
def test_two_ranks_fill_one_queue_with_both_ranks_features(tiny_data: dict, tmp_path: Path) -> None:
    """2 gloo ranks × micro 2 × accumulation 2: every forward enqueues the momentum features
    gathered from both ranks, so after 2 steps of global batch 8 the queue holds 16 entries
    (one rank alone would hold 8), in the same order on both ranks (DDP does not re-send it)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = {k: v for k, v in tiny_data.items() if k != "tokenizer"}
    mp.spawn(_ddp_worker, args=(port, data, str(tmp_path / "ddp")), nprocs=2, join=True)
    weights = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert int(weights["queue_filled"]) == 16 and int(weights["queue_pointer"]) == 16
    assert len(set(weights["report_queue"][:16].tolist())) > 1
    assert (weights["report_queue"][16:] == -1).all()
    assert [int(r["step"]) for r in rows(tmp_path / "ddp")] == [1, 2]
