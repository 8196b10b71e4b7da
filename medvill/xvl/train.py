"""X-VL pretraining from the train shards, on MedViLL's trainer contract.

Same launch and guarantees as ``medvill pretrain``: the batch plan (global batch = micro-batch ×
ranks × accumulation), DDP from torchrun's environment, the precision policy (bf16 autocast on
GPUs that have it, fp32 on the CPU), exact resume (model — queues and momentum weights
included — optimizer, scheduler, every rank's RNG and the data position, checkpoints through
:func:`medvill.checkpoint.save_checkpoint`, safetensors), the loader's per-sample seeding.
What is X-VL's own: the losses (ITC + ITM + MLM), the distillation weight ramped up over the
first epoch (the momentum model is poor at first), and the hard-negative draws seeded per batch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medvill.batchplan import plan_batches
from medvill.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from medvill.data import LoaderSettings, make_loader, read_index
from medvill.device import policy_for, to_device
from medvill.pretrain import Dist, _all_reduce, check_resume_plan, init_distributed, lr_lambda
from medvill.tokenizer import load_tokenizer, tokenizer_ids
from medvill.xvl.config import config_from_profile
from medvill.xvl.data import XVLShards, xvl_text_spec
from medvill.xvl.model import XVLForPretraining
from medvill.xvl.weights import check_initialisation, load_bert, load_vit

log = logging.getLogger(__name__)

COLUMNS = ("step", "epoch", "loss", "itc_loss", "itm_loss", "mlm_loss", "itm_accuracy", "alpha",
           "lr", "samples_per_s", "elapsed_s")  # fmt: skip


@dataclass
class XVLTrainSettings:
    """The ``train`` block of an X-VL profile (defaults: ALBEF/Medical X-VL's pretraining)."""

    seed: int = 123
    epochs: int = 30
    global_batch_size: int = 64
    max_micro_batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.02
    warmup_ratio: float = 0.05
    schedule: str = "linear"
    max_grad_norm: float = 0.0
    precision: str = "auto"
    num_workers: int = 4
    shuffle_buffer: int = 2000
    augment: bool = True
    save_every_steps: int = 1000
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    max_steps: int = 0
    vit_weights: str = ""  # local ViT-S/16 self-supervised ImageNet checkpoint (iBOT / DINO)
    vit_checkpoint_key: str = ""  # "" tries teacher, student, state_dict, model
    text_weights: str = "bert-base-uncased"  # local folder or Hub id in the local cache
    require_pretrained: bool = False
    ddp_timeout_s: int = 1800

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XVLTrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown xvl train settings: {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class XVLPaths:
    index: Path  # data/shards/<dataset>/index.json
    tokenizer: Path  # models/<dataset>/tokenizer
    out: Path  # models/<dataset>/xvl/pretrain

    @classmethod
    def for_dataset(cls, dataset: str, root: Path = Path(".")) -> XVLPaths:
        return cls(
            index=root / "data" / "shards" / dataset / "index.json",
            tokenizer=root / "models" / dataset / "tokenizer",
            out=root / "models" / dataset / "xvl" / "pretrain",
        )


def pretrain(
    profile: dict[str, Any],
    paths: XVLPaths,
    resume: bool = False,
    allow_random_init: bool = False,
    on_step: Any = None,
) -> dict[str, Any]:
    """Run (or resume) X-VL pretraining; returns the summary written to ``metrics.json``."""
    settings = XVLTrainSettings.from_dict(profile.get("train", {}))
    ddp = init_distributed(settings.ddp_timeout_s)
    try:
        return _run(profile, settings, paths, resume, allow_random_init, on_step, ddp)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _run(
    profile: dict[str, Any],
    settings: XVLTrainSettings,
    paths: XVLPaths,
    resume: bool,
    allow_random_init: bool,
    on_step: Any,
    ddp: Dist,
) -> dict[str, Any]:
    out = Path(paths.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_batches(settings.global_batch_size, ddp.world, settings.max_micro_batch_size)
    if ddp.main:
        print(f"batch plan: {plan.describe()}", flush=True)
    tokenizer = load_tokenizer(paths.tokenizer)
    ids = {k: v for k, v in tokenizer_ids(tokenizer).items() if k != "unk_token_id"}
    config = config_from_profile(dict(profile.get("model", {})), ids)

    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    torch.manual_seed(settings.seed)
    state = None
    if checkpoint is not None:
        model = XVLForPretraining.from_pretrained(str(checkpoint))
        state = load_trainer_state(checkpoint)
        check_resume_plan(checkpoint, state, plan, settings.num_workers)
        log.info("resuming from %s (step %d)", checkpoint, state["step"])
    else:
        model = XVLForPretraining(config)
        origin = {
            "visual": load_vit(model, settings.vit_weights, settings.vit_checkpoint_key),
            "text": load_bert(model, settings.text_weights),
        }
        log.info("initialisation: visual=%s, text=%s", origin["visual"], origin["text"])
        check_initialisation(origin, settings.vit_weights, settings.text_weights,
                             settings.require_pretrained, allow_random_init)  # fmt: skip
        model.reset_momentum()  # the momentum model starts from the loaded weights
    model.to(ddp.device)
    model.train()

    shards = read_index(paths.index, "train")
    loader_settings = LoaderSettings(
        batch_size=plan.micro_batch_size, accumulation=plan.accumulation,
        num_workers=settings.num_workers, shuffle_buffer=settings.shuffle_buffer,
        seed=settings.seed, image_size=config.image_size, augment=settings.augment,
        mlm_probability=config.mlm_probability,
    )  # fmt: skip
    spec = xvl_text_spec(tokenizer, config.max_text_tokens)
    dataset = XVLShards(shards, tokenizer, spec, loader_settings, None, ddp.rank, ddp.world)
    micro_per_epoch = dataset.micro_batches_per_epoch()
    steps_per_epoch = micro_per_epoch // plan.accumulation
    if steps_per_epoch == 0:
        raise ValueError(
            f"{shards.total} training samples give no full global batch of "
            f"{settings.global_batch_size} on {ddp.world} rank(s)"
        )
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps > 0:
        total_steps = min(total_steps, settings.max_steps)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if p.dim() >= 2],
             "weight_decay": settings.weight_decay},
            {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=settings.lr,
        fused=ddp.device.type == "cuda",
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_lambda(settings.schedule, round(settings.warmup_ratio * total_steps), total_steps),
    )
    precision = policy_for(settings.precision, ddp.device)
    scaler = precision.scaler()
    step, epoch, consumed = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][ddp.rank])
        step, epoch, consumed = int(state["step"]), int(state["epoch"]), int(state["consumed"])
        if consumed >= micro_per_epoch:
            epoch, consumed = epoch + 1, 0

    wrapped: Any = model
    if ddp.world > 1:  # the queues are identical on every rank already: no buffer broadcast
        wrapped = DistributedDataParallel(
            model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None,
            broadcast_buffers=False,
        )  # fmt: skip
    rows = _read_rows(out / "metrics.csv", step) if ddp.main else []
    if ddp.main:
        _write_rows(out / "metrics.csv", rows)
    log.info("xvl pretraining: %d samples, %d steps/epoch, %d steps, %s, device %s, %s",
             shards.total, steps_per_epoch, total_steps, plan.describe(), ddp.device,
             precision.name)  # fmt: skip
    loader = make_loader(dataset, settings.seed, ddp.device.type == "cuda")
    start_time = time.perf_counter()
    while step < total_steps and epoch < settings.epochs:
        dataset.set_epoch(epoch, consumed)
        batches = iter(loader)
        while consumed < micro_per_epoch and step < total_steps:
            tick = time.perf_counter()
            micro = [b for _, b in zip(range(plan.accumulation), batches, strict=False)]
            if len(micro) < plan.accumulation:
                break
            alpha = config.distill_alpha * min(1.0, (step + 1) / steps_per_epoch)
            row = _step(wrapped, micro, optimizer, scheduler, scaler, precision, settings, ddp,
                        alpha)  # fmt: skip
            step += 1
            consumed += plan.accumulation
            row.update(step=step, epoch=epoch, alpha=alpha,
                       elapsed_s=time.perf_counter() - start_time,
                       samples_per_s=settings.global_batch_size
                       / max(time.perf_counter() - tick, 1e-9))  # fmt: skip
            if ddp.main:
                rows.append(row)
                _append_row(out / "metrics.csv", row)
                if step % settings.log_every_steps == 0 or step == 1:
                    log.info("step %d/%d loss %.4f (itc %.4f itm %.4f mlm %.4f) itm acc %.2f",
                             step, total_steps, row["loss"], row["itc_loss"], row["itm_loss"],
                             row["mlm_loss"], row["itm_accuracy"])  # fmt: skip
            if step % settings.save_every_steps == 0 or step == total_steps:
                _save(out, step, epoch, consumed, model, tokenizer, optimizer, scheduler, scaler,
                      settings, plan, ddp)  # fmt: skip
            if on_step is not None:
                on_step(step, row)
        del batches
        epoch, consumed = epoch + 1, 0
    summary: dict[str, Any] = {}
    if ddp.main:
        final = out / "final"
        model.save_pretrained(str(final), safe_serialization=True)
        tokenizer.save_pretrained(str(final))
        summary = _summarise(out, rows, settings)
    return summary


def _step(
    model: Any,
    micro: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    precision: Any,
    settings: XVLTrainSettings,
    ddp: Dist,
    alpha: float,
) -> dict[str, float]:
    """One optimizer step over the micro-batches; losses averaged over micro-batches and ranks."""
    sums = torch.zeros(5, device=ddp.device)  # itc, itm, mlm, itm accuracy, loss
    for index, host in enumerate(micro):
        batch = to_device({k: v for k, v in host.items() if k != "keys"}, ddp.device)
        generator = torch.Generator(device=ddp.device).manual_seed(host["mining_seed"])
        sync = index == len(micro) - 1 or not isinstance(model, DistributedDataParallel)
        with model.no_sync() if not sync else contextlib.nullcontext(), precision.autocast():
            out = model(
                images=batch["images"], text_ids=batch["text_ids"],
                text_valid=batch["text_valid"], mlm_ids=batch["mlm_ids"],
                mlm_labels=batch["mlm_labels"], report_ids=batch["report_ids"],
                report_overlap=batch["report_overlap"], alpha=alpha, generator=generator,
            )  # fmt: skip
            loss = out.loss / len(micro)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        sums += torch.stack(
            [
                out.itc_loss.detach(),
                out.itm_loss.detach(),
                out.mlm_loss.detach(),
                out.itm_accuracy,
                out.loss.detach(),
            ]
        ).float()
    if scaler is not None:
        scaler.unscale_(optimizer)
    if settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], settings.max_grad_norm
        )
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    lr = scheduler.get_last_lr()[0]
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    values = (_all_reduce(sums, ddp) / (len(micro) * ddp.world)).tolist()
    itc, itm, mlm, accuracy, total = values
    return {"loss": total, "itc_loss": itc, "itm_loss": itm, "mlm_loss": mlm,
            "itm_accuracy": accuracy, "lr": lr}  # fmt: skip


def _save(out: Path, step: int, epoch: int, consumed: int, model: Any, tokenizer: Any,
          optimizer: Any, scheduler: Any, scaler: Any, settings: XVLTrainSettings, plan: Any,
          ddp: Dist) -> None:  # fmt: skip
    states: list[Any] = [rng_state()]
    if ddp.world > 1:
        gathered: list[Any] = [None] * ddp.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if ddp.main:
        trainer_state = {
            "step": step, "epoch": epoch, "consumed": consumed, "world": ddp.world,
            "num_workers": settings.num_workers, "batch_plan": plan.as_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": states,
        }  # fmt: skip
        if scaler is not None:
            trainer_state["scaler"] = scaler.state_dict()
        save_checkpoint(out / "checkpoints", step, model, tokenizer, trainer_state,
                        settings.keep_checkpoints)  # fmt: skip
    if ddp.world > 1:
        dist.barrier()


def _read_rows(path: Path, upto: int) -> list[dict[str, float]]:
    """Rows of an earlier run up to the resume step (a fresh run starts empty)."""
    if upto == 0 or not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [
            {k: int(float(v)) if k in ("step", "epoch") else float(v) for k, v in r.items()}
            for r in csv.DictReader(handle)
        ]
    return [r for r in rows if r["step"] <= upto]


def _write_rows(path: Path, rows: list[dict[str, float]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    tmp.replace(path)


def _append_row(path: Path, row: dict[str, float]) -> None:
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=list(COLUMNS)).writerow({k: row[k] for k in COLUMNS})


def _summarise(out: Path, rows: list[dict[str, float]], settings: XVLTrainSettings) -> dict:
    if not rows:
        raise RuntimeError("no training step ran")
    summary = {
        "steps": int(rows[-1]["step"]),
        "first_loss": rows[0]["loss"],
        "final_loss": rows[-1]["loss"],
        "final_itc_loss": rows[-1]["itc_loss"],
        "final_itm_loss": rows[-1]["itm_loss"],
        "final_mlm_loss": rows[-1]["mlm_loss"],
        "final_itm_accuracy": rows[-1]["itm_accuracy"],
        "global_batch_size": settings.global_batch_size,
        "settings": {k: v for k, v in asdict(settings).items() if k != "ddp_timeout_s"},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
