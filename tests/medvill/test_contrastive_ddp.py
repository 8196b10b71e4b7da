"""The contrastive families under DDP: 2 gloo ranks on the CPU give the loss and gradients of
one process, with the rank-local negatives (default) and with negatives all-gathered from every
rank (``gather_negatives``).

What each mode must equal:

* rank-local negatives — rank r's micro-batch is its own contrastive batch, so 2 ranks × B
  equal one process running the same two micro-batches of B one after the other
  (accumulation), and differ from one batch of 2B;
* all-gathered negatives — the candidates are both ranks' samples, so 2 ranks × B equal one
  process with one batch of 2B: this needs the gradient of rank 0's anchors to reach rank 1's
  encoders through the gather.

The step is the family's own (``ContrastiveFamily.step`` on the DDP-wrapped model, with the
trainer's normalisers ``global count / world``); models in eval mode so that BatchNorm uses
its running statistics and a batch of 2B normalises as two of B (the comparison is about the
loss and the gather, not about per-rank BatchNorm statistics).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from medvill.contrastive.config import ContrastiveConfig
from medvill.contrastive.losses import gather_across_ranks
from medvill.contrastive.model import ContrastiveModel
from medvill.families import get_family

PER_RANK = 3
WORLD = 2
CASES = (("lovt", False), ("clip", True))


def tiny_model(objective: str, gather: bool) -> ContrastiveModel:
    torch.manual_seed(0)
    config = ContrastiveConfig(
        objective=objective, backbone="resnet18", image_size=64, vocab_size=40, hidden_size=16,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=24, max_text_tokens=12, max_sentences=3, projection_dim=8,
        projection_hidden=16, pooling_heads=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, gather_negatives=gather,
    )  # fmt: skip
    return ContrastiveModel(config).eval()


def full_batch() -> dict[str, torch.Tensor]:
    """WORLD × PER_RANK samples: images, reports of 2–3 sentences, the sentence index."""
    generator = torch.Generator().manual_seed(1)
    n, slots = WORLD * PER_RANK, 14
    ids = torch.randint(5, 40, (n, slots), generator=generator)
    valid = torch.zeros(n, slots, dtype=torch.bool)
    index = torch.full((n, slots), -1, dtype=torch.long)
    for i in range(n):
        length = 8 + i % 4  # [CLS] + tokens + [SEP]
        valid[i, :length] = True
        ids[i, 0], ids[i, length - 1] = 2, 3
        ids[i, length:] = 0
        inner = torch.arange(length - 2)
        index[i, 1 : length - 1] = (inner * (2 + i % 2)) // (length - 2)
    images = torch.randn(n, 3, 64, 64, generator=generator)
    return {"images": images, "text_ids": ids, "text_valid": valid, "sentence_index": index}


def part(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in batch.items()}


def step_gradients(
    model: torch.nn.Module, objective: str, micro: list[dict[str, torch.Tensor]],
    normaliser: float, module: ContrastiveModel,
) -> tuple[float, dict[str, torch.Tensor]]:  # fmt: skip
    """Summed logged loss and the parameter gradients of one optimizer step's micro-batches."""
    family = get_family(objective)
    normalizers = torch.tensor([normaliser])
    loss = 0.0
    for batch in micro:
        out = family.step(model, batch, normalizers, torch.device("cpu"))
        out.loss.backward()
        loss += float(out.stats[0])
    grads = {
        name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None
    }
    return loss, grads


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        batch = part(full_batch(), rank * PER_RANK, (rank + 1) * PER_RANK)
        for objective, gather in CASES:
            model = tiny_model(objective, gather)
            wrapped = DistributedDataParallel(model)
            # the trainer's normalisers: the global batch's sample count / world
            loss, grads = step_gradients(wrapped, objective, [batch],
                                         WORLD * PER_RANK / WORLD, model)  # fmt: skip
            total = torch.tensor([loss])
            dist.all_reduce(total)
            if rank == 0:
                grads["__loss__"] = total / WORLD  # the trainer's row(): Σ ranks / world
                save_file(grads, str(Path(out) / f"{objective}-{gather}.safetensors"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same(ddp: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert ddp.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(ddp[name], value, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_and_without_gathered_negatives(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    batch = full_batch()
    halves = [part(batch, r * PER_RANK, (r + 1) * PER_RANK) for r in range(WORLD)]
    n = WORLD * PER_RANK
    for objective, gather in CASES:
        ddp = load_file(tmp_path / f"{objective}-{gather}.safetensors")
        ddp_loss = float(ddp.pop("__loss__"))

        model = tiny_model(objective, gather)
        one_batch_loss, one_batch = step_gradients(model, objective, [batch], n, model)
        model = tiny_model(objective, gather)
        accumulated_loss, accumulated = step_gradients(model, objective, halves, n, model)
        if gather:
            assert ddp_loss == pytest.approx(one_batch_loss, rel=1e-5)
            assert_same(ddp, one_batch)
        else:
            assert ddp_loss == pytest.approx(accumulated_loss, rel=1e-5)
            assert_same(ddp, accumulated)
        # the two references differ (the candidates differ), so each match above is informative
        assert abs(one_batch_loss - accumulated_loss) > 1e-3
        name = "text_projection.net.0.weight"
        assert not torch.allclose(one_batch[name], accumulated[name], atol=1e-6)
        if objective == "clip":
            assert "log_logit_scale" in ddp  # the learnable temperature sees every rank
        else:
            assert "region_projection.net.0.weight" in ddp  # LoVT's local heads train too


def test_gather_is_the_identity_outside_a_process_group():
    embeddings = torch.randn(4, 3)
    gathered, offset = gather_across_ranks(embeddings)
    assert gathered is embeddings and offset == 0
