"""Training loop: exact resume after a crash; DDP × accumulation = one process; honest starts."""

from __future__ import annotations

import csv
import json
import os
import socket
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from medvill.batchplan import plan_batches
from medvill.checkpoint import latest_checkpoint, load_trainer_state
from medvill.pretrain import (
    Dist,
    Paths,
    TrainSettings,
    _all_reduce,
    check_initialisation,
    check_resume_plan,
    pretrain,
)


class Crash(RuntimeError):
    pass


def paths_for(tiny_data, out: Path) -> Paths:
    return Paths(tiny_data["index"], tiny_data["negatives"], tiny_data["tokenizer_dir"], out)


def losses(out: Path) -> list[float]:
    with open(out / "metrics.csv", encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_resume_after_kill_continues_with_identical_losses(tiny_data, tiny_profile, tmp_path):
    """2 workers, accumulation 2, dropout on: crash at step 5 (checkpoint at 4, mid-epoch 2),
    resume, and the losses and final weights equal those of an uninterrupted run."""
    profile = tiny_profile(max_micro_batch_size=2, num_workers=2)
    straight = tmp_path / "straight"
    summary = pretrain(profile, paths_for(tiny_data, straight), show_progress=False)
    assert summary["steps"] == 6
    assert json.loads((straight / "metrics.json").read_text())["steps"] == 6
    assert (straight / "loss.png").stat().st_size > 0
    card = (straight / "final" / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: feature-extraction" in card
    assert f"| final_loss | {summary['final_loss']:.4g} |" in card
    assert '"max_micro_batch_size": 2' in card and "| train |" in card
    step_card = (latest_checkpoint(straight / "checkpoints") / "README.md").read_text()
    assert "intermediate checkpoint, step 6" in step_card

    crashed = tmp_path / "crashed"

    def crash(step: int, row: dict) -> None:
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        pretrain(profile, paths_for(tiny_data, crashed), on_step=crash, show_progress=False)
    checkpoint = latest_checkpoint(crashed / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step-00000004"
    state = load_trainer_state(checkpoint)  # weights_only=True
    assert (state["epoch"], state["consumed"]) == (1, 2)
    assert state["batch_plan"] == {"global_batch_size": 4, "micro_batch_size": 2, "world": 1,
                                   "accumulation": 2}  # fmt: skip
    pretrain(profile, paths_for(tiny_data, crashed), resume=True, show_progress=False)

    assert losses(crashed) == pytest.approx(losses(straight), rel=1e-6, abs=1e-7)
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(crashed / "final" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


class _DefaultDeviceTorch(types.ModuleType):
    """``torch`` as a GPU node sees it: tensors made without ``device=`` land somewhere other
    than the process group's device (there: the CPU vs NCCL's CUDA; here: 'meta' vs gloo's
    CPU). Installed as ``medvill.pretrain.torch``, it only affects the trainer's own code."""

    FACTORIES = ("tensor", "zeros", "ones", "full", "empty", "arange")

    def __init__(self, device: str) -> None:
        super().__init__("torch")
        self._device = device

    def __getattr__(self, name: str):
        real = getattr(torch, name)
        if name not in self.FACTORIES:
            return real

        def factory(*args, **kwargs):
            kwargs.setdefault("device", self._device)
            return real(*args, **kwargs)

        return factory


def _ddp_worker(rank: int, world: int, port: int, profile: dict, tiny_data: dict, out: str,
                seen: Any = None):  # fmt: skip
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    import medvill.pretrain as trainer

    group_device = torch.device("cpu")  # gloo's; NCCL's would be cuda:<local rank>
    real_all_reduce = dist.all_reduce

    def checked_all_reduce(tensor, *args, **kwargs):
        assert tensor.device == group_device, f"all_reduce of a {tensor.device} tensor"
        seen.append(str(tensor.device))
        return real_all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = checked_all_reduce
    trainer.torch = _DefaultDeviceTorch("meta")
    try:
        pretrain(profile, paths_for(tiny_data, Path(out)), show_progress=False)
    finally:
        trainer.torch = torch
        dist.all_reduce = real_all_reduce


def ddp_profile(tiny_profile, **train) -> dict:
    profile = tiny_profile(max_steps=3, epochs=3, global_batch_size=8, save_every_steps=100,
                           **train)  # fmt: skip
    profile["model"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return profile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_with_accumulation_match_one_rank(tiny_data, tiny_profile, tmp_path):
    """Global batch 8 three ways — 1 rank × micro 8, 1 rank × micro 2 × 4 accumulation, and
    2 gloo ranks × micro 2 × 2 accumulation (no_sync on the first micro-batch of each step):
    same losses and same weights after 3 AdamW steps. Every tensor the ranks all-reduce is on
    the group's device although the trainer's default device is elsewhere (as on a GPU)."""
    single = tmp_path / "single"
    pretrain(ddp_profile(tiny_profile, max_micro_batch_size=8), paths_for(tiny_data, single),
             show_progress=False)  # fmt: skip
    accumulated = tmp_path / "accumulated"
    pretrain(ddp_profile(tiny_profile, max_micro_batch_size=2), paths_for(tiny_data, accumulated),
             show_progress=False)  # fmt: skip
    ddp = tmp_path / "ddp"
    profile = ddp_profile(tiny_profile, max_micro_batch_size=2)
    data = {k: v for k, v in tiny_data.items() if k != "tokenizer"}
    with mp.Manager() as manager:
        seen = manager.list()
        mp.spawn(_ddp_worker, args=(2, _free_port(), profile, data, str(ddp), seen), nprocs=2,
                 join=True)  # fmt: skip
        devices = list(seen)
    # per rank and step: the "all ranks have a full step" flag, label counts, metric sums
    assert devices == ["cpu"] * (2 * 3 * 3)

    reference = losses(single)
    assert len(reference) == 3
    assert losses(ddp) == pytest.approx(reference, rel=1e-4)
    assert losses(accumulated) == pytest.approx(reference, rel=1e-4)
    a = load_file(single / "final" / "model.safetensors")
    for other in (ddp, accumulated):
        b = load_file(other / "final" / "model.safetensors")
        for key in a:
            # Adam turns a float-noise-sized gradient (summation order differs between one
            # batch of 8 and four of 2) into an lr-sized step, so an element whose gradient is
            # ~0 may differ by ~lr; unsynchronised or wrong gradients move most elements.
            # Up to 1 % may differ: 0.1 % was once exceeded by noise alone (153 of 147k).
            off = int(((a[key] - b[key]).abs() > 1e-5).sum())
            assert off <= max(1, a[key].numel() // 100), (other.name, key, off)


def test_collective_check_catches_a_tensor_off_the_group_device():
    """The stand-in default device really moves device-less tensors off the group's device
    (so the DDP test above would fail on code that forgets ``device=``)."""
    fake = _DefaultDeviceTorch("meta")
    assert fake.tensor([1.0]).device.type == "meta"
    assert fake.tensor([1.0], device="cpu").device.type == "cpu"
    ddp = Dist(world=1, device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="meta tensor in a process group on cpu"):
        _all_reduce(fake.zeros(3), ddp)


def test_checkpoint_stores_the_batch_plan_and_resume_refuses_another(tmp_path):
    plan = plan_batches(128, 8, 32)
    state = {"world": 8, "num_workers": 4, "batch_plan": plan.as_dict()}
    check_resume_plan(tmp_path, state, plan, 4)  # same launch: fine
    with pytest.raises(ValueError, match=r"micro-batch 16 × 8 rank\(s\).*same number of ranks"):
        check_resume_plan(tmp_path, state, plan_batches(128, 4, 32), 4)
    with pytest.raises(ValueError, match="num_workers=4"):
        check_resume_plan(tmp_path, state, plan, 2)


def test_paper_profile_refuses_random_init_unless_allowed(tiny_data, tiny_profile, tmp_path):
    """require_pretrained with weights that cannot be loaded: a clear error before any step;
    --allow-random-init (allow_random_init=True) starts anyway; the demo-style profile
    (require_pretrained false) falls back silently."""
    missing = str(tmp_path / "no-such-bert")
    profile = tiny_profile(max_steps=1, text_weights=missing, require_pretrained=True)
    out = tmp_path / "refused"
    with pytest.raises(FileNotFoundError, match=r"no-such-bert.*--allow-random-init"):
        pretrain(profile, paths_for(tiny_data, out), show_progress=False)
    assert not (out / "metrics.csv").exists()

    settings = TrainSettings(text_weights="bert-base-uncased", imagenet=True,
                             require_pretrained=True)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="ImageNet weights"):
        check_initialisation({"text": "bert (199 tensors)", "visual": "random"}, settings, False)
    check_initialisation({"text": "random", "visual": "random"}, settings, True)
    settings.require_pretrained = False
    check_initialisation({"text": "random", "visual": "random"}, settings, False)

    allowed = pretrain(profile, paths_for(tiny_data, tmp_path / "allowed"), show_progress=False,
                       allow_random_init=True)  # fmt: skip
    assert allowed["steps"] == 1


def test_process_group_gets_the_timeout_and_a_failed_rendezvous_says_where(monkeypatch):
    """train.ddp_timeout_s reaches init_process_group; a rendezvous failure names the rank,
    the endpoint and the timeout instead of a bare store error."""
    import datetime

    from medvill.pretrain import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "node0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    seen = {}

    def fake_init(backend, timeout):
        seen.update(backend=backend, timeout=timeout)
        raise RuntimeError("connect() timed out")

    monkeypatch.setattr(dist, "init_process_group", fake_init)
    with pytest.raises(RuntimeError, match=r"gloo process group \(rank 1 of 2, MASTER_ADDR=node0, "
                       r"MASTER_PORT=29500, timeout 90 s\): connect\(\) timed out"):  # fmt: skip
        init_distributed(timeout_s=90)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=90)}


def test_every_pretrain_profile_in_params_parses() -> None:
    """A profile with a retired key (the learn profile's old micro_batch_size) stops
    `medvill pretrain` before its first step; every shipped profile must load."""
    import yaml

    from medvill.pretrain import TrainSettings

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    profiles = params["pretrain"]["profiles"]
    assert {"paper", "demo", "learn"} <= set(profiles)
    for name, profile in profiles.items():
        settings = TrainSettings.from_dict(profile["train"])
        assert settings.global_batch_size > 0, name
