"""Pretraining throughput on the GPU at the paper's shapes, and how close it is to the chip.

    python benchmarks/bench_gpu.py [--batch-size 128] [--steps 10] [--warmup 3] [--no-compile]
                                   [--attention auto,reference,sdpa_bool,sdpa_compute_dtype,flex]
                                   [--attention-dropout P] [--json PATH]

Synthetic batches of the paper profile (512² images, 180 of 256 visual features, 253 report
tokens + [SEP], 15 % MLM, half the pairs unmatched), bf16 autocast (fp16 + GradScaler where
bf16 is missing: the trainer's policy), fused AdamW, one optimizer step per batch; each timed
step starts, as the trainer's, from the loader's 8-bit images and crop boxes
(``medvill.imagebatch.model_images`` on the GPU). Prints, for
eager and ``torch.compile``: samples/s, TFLOP per sample (forward + backward, counted by
PyTorch's FLOP counter on the real model, not estimated), model FLOP utilisation against the
bf16 matmul peak this script measures first on the same GPU (8192³), and peak memory.
``--attention`` runs each named attention backend (medvill/model/encoder.py) in turn, so one
run compares how the mask reaches SDPA; it first prints each backend's mask size at the batch's
shape (this part runs without CUDA too).

Without CUDA it says so and exits 0 (CI runs it that way).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask
from transformers.models.bert.modeling_bert import BertSelfAttention

from medvill.config import MedViLLConfig, config_from_profile, load_params, profile_section
from medvill.data import random_resized_crop_params
from medvill.device import policy_for
from medvill.imagebatch import model_images
from medvill.model.encoder import ATTENTION_BACKENDS, attention_mask_for
from medvill.model.medvill import MedViLLForPretraining

PEAK_SIDE = 8192
VOCAB = {
    "vocab_size": 30522,
    "pad_token_id": 0,
    "unk_token_id": 100,
    "cls_token_id": 101,
    "sep_token_id": 102,
    "mask_token_id": 103,
}  # fmt: skip  (bert-base-uncased's ids)


def synthetic_batch(
    config: MedViLLConfig, batch_size: int, device: torch.device, seed: int = 0
) -> dict[str, Any]:
    """A pretraining micro-batch of the config's shapes: full-length reports, 15 % of the
    tokens labelled for MLM, every other pair unmatched, one sorted visual subset."""
    g = torch.Generator().manual_seed(seed)
    slots = config.text_slots("bar")
    first_word = min(1000, config.vocab_size // 2)  # past the special tokens
    ids = torch.randint(first_word, config.vocab_size, (batch_size, slots), generator=g)
    ids[:, -1] = config.sep_token_id
    valid = torch.ones(batch_size, slots, dtype=torch.bool)
    chosen = torch.rand(batch_size, slots, generator=g) < 0.15
    chosen[:, -1] = False
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = torch.where(chosen, torch.full_like(ids, config.mask_token_id), ids)
    cells = torch.randperm(config.num_visual_features, generator=g)[: config.num_sampled_visual]
    size = config.image_size
    boxes = [random_resized_crop_params(size, size, rng, (0.8, 1.1), (3 / 4, 4 / 3))
             for rng in [np.random.default_rng([seed, i]) for i in range(batch_size)]]  # fmt: skip
    batch = {
        "images": torch.randn(batch_size, 3, size, size, generator=g),
        # what the loader ships: 8-bit grey pixels and crop boxes, finished in the step
        "image_sources": torch.randint(
            0, 256, (batch_size, 1, size, size), generator=g, dtype=torch.uint8
        ),
        "crop_boxes": torch.tensor(boxes),
        "text_ids": inputs,
        "text_valid": valid,
        "visual_cells": torch.sort(cells).values,
        "mask_type": config.attention_mask_type,
        "mlm_labels": labels,
        "irm_labels": torch.arange(batch_size) % 2,
    }
    on_host = ("crop_boxes",)  # read by the host, as in the trainer
    return {
        k: v.to(device) if isinstance(v, torch.Tensor) and k not in on_host else v
        for k, v in batch.items()
    }


def parse_backends(text: str) -> list[str]:
    """``--attention a,b`` → the backends to time, in order; unknown names are an error."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ATTENTION_BACKENDS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"--attention takes a comma list of {ATTENTION_BACKENDS}, got {text!r}"
        )
    return names


def mask_bytes(
    config: MedViLLConfig, batch: dict[str, Any], backend: str, autocast_dtype: torch.dtype | None
) -> int:
    """Bytes of the (B, 1, S, S) mask one forward pass builds under ``backend`` (``auto`` as
    under SDPA), with autocast in ``autocast_dtype`` (None: off), on the batch's device."""
    concrete = "sdpa_bool" if backend == "auto" else backend
    device = batch["text_valid"].device
    kind = batch["mask_type"] if batch["mask_type"] != "bi_s2s" else "s2s"
    k = batch["visual_cells"].shape[0]
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        mask = attention_mask_for(kind, k, batch["text_valid"], concrete, torch.float32)
    if isinstance(mask, BlockMask):  # tile tables + the (B, S) key validity its rules read
        tables = [v for v in vars(mask).values() if isinstance(v, torch.Tensor)]
        seq = k + 2 + batch["text_valid"].shape[1]
        return (
            sum(t.numel() * t.element_size() for t in tables) + batch["text_valid"].shape[0] * seq
        )
    return mask.numel() * mask.element_size()


def set_attention_dropout(model: MedViLLForPretraining, probability: float) -> float:
    """Set the dropout on BERT's attention probabilities; returns the previous value."""
    layers = [m for m in model.medvill.bert.modules() if isinstance(m, BertSelfAttention)]
    before = layers[0].dropout.p
    for layer in layers:
        layer.dropout.p = probability
    return before


AGREEMENT_TOLERANCE = 8e-3  # bf16 tolerance, as tests/medvill/test_attention_backends.py


@torch.no_grad()
def backend_agreement(
    model: MedViLLForPretraining, batch: dict[str, Any], backends: list[str], precision: Any
) -> dict[str, float]:
    """Largest |difference| of the encoder output between each backend and ``reference`` on
    this device's own kernels, in eval mode (no dropout) under the run's autocast. The CPU
    tests prove the masks equal; this checks the GPU's SDPA kernels treat them alike."""
    was_training, chosen = model.training, model.medvill.attention_backend
    model.eval()
    outputs = {}
    try:
        for backend in ["reference", *backends]:
            model.medvill.set_attention_backend(backend)
            with precision.autocast():
                encoded = model.medvill(
                    batch["images"], batch["text_ids"], batch["text_valid"],
                    batch["visual_cells"], batch["mask_type"],
                )  # fmt: skip
            outputs[backend] = encoded.last_hidden_state.float()
    finally:
        model.medvill.set_attention_backend(chosen)
        model.train(was_training)
    return {b: (outputs[b] - outputs["reference"]).abs().max().item() for b in backends}


def loss_of(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    return model(
        images=batch["images"],
        text_ids=batch["text_ids"],
        text_valid=batch["text_valid"],
        visual_cells=batch["visual_cells"],
        mask_type=batch["mask_type"],
        mlm_labels=batch["mlm_labels"],
        irm_labels=batch["irm_labels"],
    ).loss


def flops_per_sample(model: torch.nn.Module, batch: dict[str, Any]) -> float:
    """Forward + backward FLOPs of one training step divided by the batch size, as PyTorch's
    ``FlopCounterMode`` counts them (matmuls, convolutions, attention; frozen layers get no
    weight-gradient FLOPs because they have none)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_of(model, batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["images"].shape[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """FLOP/s of a large square matmul: the practical ceiling of this GPU in ``dtype``."""
    a = torch.randn(PEAK_SIDE, PEAK_SIDE, device=device, dtype=dtype)
    b = torch.randn(PEAK_SIDE, PEAK_SIDE, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * PEAK_SIDE**3 * repeats / (time.perf_counter() - start)


def time_training(
    model: torch.nn.Module,
    step_model: Any,
    batch: dict[str, Any],
    precision: Any,
    steps: int,
    warmup: int,
) -> float:
    """Samples/s of full optimizer steps (forward, backward, fused AdamW)."""
    device = batch["images"].device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    scaler = precision.scaler()

    def one_step() -> None:
        images = model_images(batch["image_sources"], batch["crop_boxes"],
                              batch["images"].shape[-1], torch.channels_last,
                              precision.dtype)  # fmt: skip
        with precision.autocast():
            loss = loss_of(step_model, {**batch, "images": images})
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    torch.cuda.synchronize(device)
    return steps * batch["images"].shape[0] / (time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--attention-dropout",
        type=float,
        help="dropout on the attention probabilities for every timed run (default: the "
        "profile's; 'flex' always runs at 0, as FlexAttention has none)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too (after each run)")
    parser.add_argument(
        "--attention",
        type=parse_backends,
        default=["auto"],
        help=f"comma list of attention backends to time, from {ATTENTION_BACKENDS}",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profile = profile_section(load_params(args.params), args.profile)
    config = config_from_profile(profile, VOCAB)
    cuda = torch.cuda.is_available()
    amp = policy_for("auto", torch.device("cuda", 0)).dtype if cuda else torch.bfloat16
    shapes = synthetic_batch(config, args.batch_size, torch.device("cpu"))
    for backend in args.attention:
        size = mask_bytes(config, shapes, backend, amp)
        print(f"attention {backend}: mask {size / 2**20:.1f} MiB per forward pass at batch "
              f"{args.batch_size} under {amp} autocast")  # fmt: skip
    del shapes
    results: dict[str, Any] = {"cuda": cuda, "batch_size": args.batch_size,
                               "profile": args.profile, "runs": []}  # fmt: skip
    if not cuda:
        print("bench_gpu: no CUDA device on this machine; nothing to measure (run it on a GPU).")
        write_results(args.json, results)
        return 0

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    precision = policy_for("auto", device)
    name = torch.cuda.get_device_name(device)
    peak = matmul_peak(device, precision.dtype or torch.float32)
    print(f"device: {name}, precision {precision.name}, torch {torch.__version__}")
    print(f"matmul peak ({PEAK_SIDE}³ {precision.name}): {peak / 1e12:.0f} TFLOP/s")

    model = MedViLLForPretraining(config).to(device).train()
    model.medvill.visual_backbone.to(memory_format=torch.channels_last)
    batch = synthetic_batch(config, args.batch_size, device)
    batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
    small = synthetic_batch(config, 2, device)
    with precision.autocast():
        flops = flops_per_sample(model, small)
    print(
        f"shapes: batch {args.batch_size}, {config.image_size}², {config.num_sampled_visual} "
        f"of {config.num_visual_features} visual features, {config.text_slots()} text slots; "
        f"{flops / 1e12:.3f} TFLOP per sample (forward + backward)"
    )
    modes = [("eager", model)]
    if not args.no_compile:
        modes.append(("compiled", torch.compile(model)))
    results.update(device=name, precision=precision.name, torch=torch.__version__,
                   peak_tflops=peak / 1e12, tflop_per_sample=flops / 1e12,
                   agreement={})  # fmt: skip
    for backend in args.attention:
        try:
            difference = backend_agreement(model, small, [backend], precision)[backend]
        except Exception as error:  # reported, and its timed runs will say more
            results["agreement"][backend] = repr(error)
            print(f"attention {backend} vs reference: FAILED {error!r}")
            continue
        verdict = "ok" if difference <= AGREEMENT_TOLERANCE else "MISMATCH"
        results["agreement"][backend] = difference
        print(f"attention {backend} vs reference: max |Δ| {difference:.2e} in the encoder "
              f"output ({verdict}, tolerance {AGREEMENT_TOLERANCE})")  # fmt: skip
    write_results(args.json, results)
    profile_dropout = set_attention_dropout(model, 0.0)
    # eager runs of every backend first: a later compile that overruns a time limit then
    # loses only compiled numbers
    for mode, step_model in modes:
        for backend in args.attention:
            model.medvill.set_attention_backend(backend)
            dropout = profile_dropout if args.attention_dropout is None else args.attention_dropout
            if backend == "flex" and dropout > 0:
                print(f"attention flex: attention dropout 0 (the others: {dropout}); "
                      "FlexAttention has none")  # fmt: skip
                dropout = 0.0
            set_attention_dropout(model, dropout)
            torch.cuda.reset_peak_memory_stats(device)
            try:
                rate = time_training(model, step_model, batch, precision, args.steps, args.warmup)
            except Exception as error:  # one backend's failure (compile, OOM) keeps the others
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                print(f"{backend:>18} {mode:>8}: FAILED {error!r}", flush=True)
                results["runs"].append({"backend": backend, "mode": mode, "error": repr(error)})
                write_results(args.json, results)
                continue
            mfu = rate * flops / peak
            memory = torch.cuda.max_memory_allocated(device) / 2**30
            print(
                f"{backend:>18} {mode:>8}: {rate:8.1f} samples/s  "
                f"{rate * flops / 1e12:6.1f} TFLOP/s  MFU {mfu:.2f}  peak memory {memory:.1f} GiB"
                f"  (attention dropout {dropout})", flush=True,
            )  # fmt: skip
            results["runs"].append({"backend": backend, "mode": mode, "samples_per_s": rate,
                                    "mfu": mfu, "peak_memory_gib": memory,
                                    "attention_dropout": dropout})  # fmt: skip
            write_results(args.json, results)
    return 0


def write_results(path: Path | None, results: dict[str, Any]) -> None:
    """The results so far as JSON (rewritten after each run, so a timeout keeps them)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
