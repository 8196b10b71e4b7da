"""Pretraining from WebDataset shards (``medvill pretrain``, the ``pretrain`` stage): the one
training loop of every model family (:mod:`medvill.families`; MedViLL's MLM + IRM by default).

One code path for a laptop CPU and ``torchrun`` across GPUs and nodes: the process group comes
from torchrun's environment (NCCL on CUDA, gloo on CPU), each rank reads a disjoint part of the
shard stream, and the loss of every micro-batch is normalised by the labelled-item count of the
whole global batch, so DDP × gradient accumulation gives the gradient of one large batch.

Exact resume: a checkpoint stores model (safetensors), optimizer, scheduler, RNG states and the
data position (epoch, micro-batches consumed); every data-side random choice is a function of
(seed, epoch, sample key or step), so the resumed run replays the same batches and losses.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medvill.batchplan import BatchPlan, plan_batches
from medvill.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from medvill.config import MedViLLConfig, config_from_profile
from medvill.data import make_loader, read_index
from medvill.device import PrecisionPolicy, default_device, policy_for
from medvill.families import get_family
from medvill.families.base import RESNET_WEIGHTS_HINT, DataContext, PretrainFamily
from medvill.model.encoder import ATTENTION_BACKENDS
from medvill.modelcard import CardFacts, bert_hub_id, checkpoint_facts, write_model_card
from medvill.tokenizer import load_tokenizer, tokenizer_ids

log = logging.getLogger(__name__)

#: MedViLL's metrics.csv columns (each family's are ``PretrainFamily.metric_columns``).
METRIC_COLUMNS = (
    "step", "epoch", "loss", "mlm_loss", "irm_loss", "irm_accuracy", "lr", "samples_per_s",
    "elapsed_s",
)  # fmt: skip


@dataclass
class TrainSettings:
    """The ``train`` block of a profile in params.yaml (defaults: the paper's settings)."""

    seed: int = 123
    epochs: int = 50
    global_batch_size: int = 128
    # Largest micro-batch one device holds; the plan (micro × ranks × accumulation = global)
    # is derived per launch (medvill/batchplan.py), so any GPU count trains the same batch.
    max_micro_batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    # linear (warmup + linear decay) | constant (MedViLL's released code) | cosine (LoVT)
    schedule: str = "linear"
    max_grad_norm: float = 1.0
    precision: str = (
        "auto"  # auto (bf16 on CUDA if supported, else fp16; fp32 on CPU) | fp32 | bf16 | fp16
    )
    num_workers: int = 4
    shuffle_buffer: int = 2000
    augment: bool = True
    mlm_probability: float = 0.15
    negative_probability: float = 0.5
    save_every_steps: int = 1000
    keep_checkpoints: int = 2
    log_every_steps: int = 10
    max_steps: int = 0  # 0 = run all epochs
    text_weights: str = "bert-base-uncased"  # local dir or hub id; "" = random init
    imagenet: bool = True  # torchvision ImageNet weights for the backbone when obtainable
    # MedViLL: a local checkpoint the image CNN starts from instead (one of our checkpoint
    # folders or a torchvision ResNet state dict; medvill/model/cnn_weights.py); "" = none.
    cnn_weights: str = ""
    # X-VL (--model xvl): a local ViT-S/16 self-supervised ImageNet checkpoint file (iBOT /
    # DINO, .pth or .safetensors) and the key its weights sit under ("" tries the usual ones).
    vit_weights: str = ""
    vit_checkpoint_key: str = ""
    tensorboard: bool = True
    # Refuse to start from random weights when text_weights / imagenet cannot be loaded (the
    # paper profile: a random-init "paper" run wastes GPU days); --allow-random-init overrides.
    require_pretrained: bool = False
    ddp_timeout_s: int = 1800  # a rank waiting this long in a collective fails with a message
    compile: bool = False  # torch.compile the model (CUDA; first steps are slow while it compiles)
    # How the attention mask reaches SDPA (medvill/model/encoder.py): auto (the boolean mask
    # under SDPA) | reference (additive float mask) | sdpa_bool | sdpa_compute_dtype.
    attention_backend: str = "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        known = {f.name for f in fields(cls)}
        if "micro_batch_size" in data:
            raise ValueError(
                "train.micro_batch_size is now max_micro_batch_size: the micro-batch is derived "
                "per launch from global_batch_size and the number of GPUs (medvill/batchplan.py)"
            )
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train settings: {unknown}")
        values = dict(data)
        backend = values.get("attention_backend", "auto")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"train.attention_backend {backend!r} is not one of {ATTENTION_BACKENDS}"
            )
        if "adam_betas" in values:
            values["adam_betas"] = tuple(values["adam_betas"])
        return cls(**values)


@dataclass(frozen=True)
class Paths:
    """Inputs and outputs of one pretraining run."""

    index: Path  # data/shards/<dataset>/index.json
    negatives: Path | None  # data/interim/<dataset>/pairs/irm_negatives.parquet
    tokenizer: Path  # models/<dataset>/tokenizer
    out: Path  # models/<dataset>/pretrain (MedViLL) or models/<dataset>/pretrain-<family>

    @classmethod
    def for_dataset(cls, dataset: str, root: Path = Path("."), family: str = "medvill") -> Paths:
        return cls(
            index=root / "data" / "shards" / dataset / "index.json",
            negatives=root / "data" / "interim" / dataset / "pairs" / "irm_negatives.parquet",
            tokenizer=root / "models" / dataset / "tokenizer",
            out=root / "models" / dataset / pretrain_folder(family),
        )


@dataclass(frozen=True)
class Start:
    """Training that continues a saved model (a fine-tuning): the checkpoint folder
    (``save_pretrained``) and the config fields it changes (e.g. the text view)."""

    checkpoint: Path
    #: the model card's kind of the result (``medvill.modelcard``): the caller knows what
    #: the fine-tuning makes of the model
    card_kind: str
    config_changes: dict[str, Any] = field(default_factory=dict)


def pretrain_folder(family: str) -> str:
    """Where a family's pretraining goes under ``models/<dataset>/``: MedViLL keeps its
    historical ``pretrain``, every other family ``pretrain-<family>``."""
    return "pretrain" if family == "medvill" else f"pretrain-{family}"


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: int = 1800) -> Dist:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (or reuse an existing one).

    ``Dist.device`` is both where this rank computes and the device of every tensor handed
    to a collective: NCCL (CUDA) refuses CPU tensors, gloo (CPU) runs on the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = default_device(local_rank)
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, False)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        except Exception as error:
            raise RuntimeError(
                f"could not join the {backend} process group (rank {os.environ.get('RANK')} "
                f"of {world}, MASTER_ADDR={os.environ.get('MASTER_ADDR')}, "
                f"MASTER_PORT={os.environ.get('MASTER_PORT')}, timeout {timeout_s} s): {error}. "
                "Check that every node runs the same torchrun command with the same "
                "--rdzv-endpoint and that the port is reachable between nodes."
            ) from error
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, True)
    return Dist(device=device)


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then linear decay to 0, constant, or cosine annealing to 0 (LoVT)."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, (total - step) / max(1, total - warmup))

    if schedule not in ("linear", "constant", "cosine"):
        raise ValueError("schedule must be 'linear', 'constant' or 'cosine'")
    return factor


def _all_reduce(values: torch.Tensor, ddp: Dist, op: Any = None) -> torch.Tensor:
    """Sum (or ``op``) over ranks in place. The tensor must live on the group's device: a CPU
    tensor in an NCCL group fails deep inside NCCL ('No backend type associated with device
    type cpu'), so it fails here first, naming both devices."""
    if values.device != ddp.device:
        raise RuntimeError(
            f"collective on a {values.device} tensor in a process group on {ddp.device}"
        )
    if ddp.world > 1 and dist.is_available() and dist.is_initialized():
        try:
            dist.all_reduce(values, op=op or dist.ReduceOp.SUM)
        except Exception as error:  # NCCL errors and timeouts: say which rank and what
            raise RuntimeError(
                f"rank {ddp.rank}/{ddp.world}: all_reduce failed ({error}). A timeout usually "
                "means another rank crashed or is stuck: look at the first error in the other "
                "ranks' logs; set NCCL_DEBUG=INFO for NCCL's own diagnosis."
            ) from error
    return values


def _every_rank_has_full_step(full: bool, ddp: Dist) -> bool:
    """True when every rank has all micro-batches of the next step (one ran dry = epoch end)."""
    if ddp.world == 1:
        return full
    have = torch.tensor([1.0 if full else 0.0], device=ddp.device)
    return bool(_all_reduce(have, ddp, dist.ReduceOp.MIN).item() >= 1)


class MetricsLog:
    """metrics.csv (appended each step, trimmed to the resume step) and TensorBoard."""

    def __init__(
        self,
        out: Path,
        resume_step: int,
        tensorboard: bool,
        columns: tuple[str, ...] = METRIC_COLUMNS,
    ) -> None:
        self.path = out / "metrics.csv"
        self.columns = columns
        rows: list[dict[str, str]] = []
        if resume_step > 0 and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        self.handle = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.DictWriter(self.handle, fieldnames=list(columns))
        self.writer.writeheader()
        self.writer.writerows(rows)
        self.handle.flush()
        self.rows = [{k: float(v) for k, v in r.items()} for r in rows]
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                log.info("tensorboard not installed: metrics go to metrics.csv only")

    def write(self, row: dict[str, float]) -> None:
        self.writer.writerow(row)
        self.handle.flush()
        self.rows.append(row)
        if self.tb is not None:
            for name in [c for c in self.columns if c not in ("step", "epoch", "elapsed_s")]:
                self.tb.add_scalar(f"pretrain/{name}", row[name], int(row["step"]))

    def close(self) -> None:
        self.handle.close()
        if self.tb is not None:
            self.tb.close()


def _progress(total: int, start: int, enabled: bool) -> Any:
    """A rich progress bar in a terminal; None in CI/logs (log lines are written instead)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
    )  # fmt: skip
    progress.start()
    progress.add_task("steps", total=total, completed=start, info="")
    return progress


def pretrain(
    profile: dict[str, Any],
    paths: Paths,
    resume: bool = False,
    mask_type: str | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    show_progress: bool = True,
    allow_random_init: bool = False,
    model: str = "medvill",
    start: Start | None = None,
) -> dict[str, Any]:
    """Run (or resume) pretraining; returns the summary also written to ``metrics.json``.

    ``profile`` is a profile block of the family ``model`` (:mod:`medvill.families`):
    ``model`` (its config fields) and ``train`` (:class:`TrainSettings`). ``on_step(step, row)``
    is called after each optimizer step on every rank (tests use it to stop a run as a crash
    would). ``allow_random_init`` lets a ``require_pretrained`` profile start without its
    weights. ``mask_type`` overrides MedViLL's attention mask. ``start``: continue training a
    saved model (fine-tuning) instead of building one from the profile's ``model`` block.
    """
    family = get_family(model)
    settings = TrainSettings.from_dict(profile.get("train", {}))
    ddp = init_distributed(settings.ddp_timeout_s)
    try:
        return _run(profile, settings, paths, resume, mask_type, on_step, show_progress, ddp,
                    allow_random_init, family, start)  # fmt: skip
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _run(
    profile: dict[str, Any],
    settings: TrainSettings,
    paths: Paths,
    resume: bool,
    mask_type: str | None,
    on_step: Callable[[int, dict[str, float]], None] | None,
    show_progress: bool,
    ddp: Dist,
    allow_random_init: bool = False,
    family: PretrainFamily | None = None,
    start: Start | None = None,
) -> dict[str, Any]:
    family = family or get_family("medvill")
    out = Path(paths.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_batches(settings.global_batch_size, ddp.world, settings.max_micro_batch_size)
    accumulation = plan.accumulation
    if ddp.main:
        print(f"batch plan: {plan.describe()}", flush=True)

    tokenizer = load_tokenizer(paths.tokenizer)
    config = family.build_config(profile, tokenizer, {"mask_type": mask_type})

    checkpoint = latest_checkpoint(out / "checkpoints") if resume else None
    torch.manual_seed(settings.seed)
    if checkpoint is not None:
        model = family.from_checkpoint(checkpoint)
        state = load_trainer_state(checkpoint)
        check_resume_plan(checkpoint, state, plan, settings.num_workers)
        log.info("resuming from %s (step %d)", checkpoint, state["step"])
        origin = {"all weights": f"resumed from {checkpoint.name}"}
    elif start is not None:
        model = family.from_checkpoint(start.checkpoint)
        origin = {"all weights": f"fine-tuned from {start.checkpoint}"}
        log.info("initialisation: %s", origin["all weights"])
        state = None
    else:
        model = family.new_model(config)
        origin = family.load_public_weights(model, settings.text_weights, settings.imagenet)
        log.info("initialisation: text=%s, visual=%s", origin["text"], origin["visual"])
        check_initialisation(origin, settings, allow_random_init, family.visual_weights_hint)
        state = None
    if start is not None:  # the saved model's config, with the fine-tuning's changes
        for name, value in start.config_changes.items():
            setattr(model.config, name, value)
        config = model.config
    kind = family.card_kind if start is None else start.card_kind
    card = checkpoint_facts(kind, model, paths.index, asdict(settings),
                            initialised_from=origin, base_model=bert_hub_id(origin))  # fmt: skip
    model.to(ddp.device)
    if ddp.device.type == "cuda":
        # cuDNN picks the fastest convolution for the fixed input shape
        torch.backends.cudnn.benchmark = True
    family.prepare(model, settings, ddp.device)
    model.train()

    shards = read_index(paths.index, "train")
    dataset = family.dataset(
        DataContext(
            shards=shards, tokenizer=tokenizer, config=config, settings=settings,
            micro_batch_size=plan.micro_batch_size, accumulation=accumulation,
            negatives_path=paths.negatives, rank=ddp.rank, world=ddp.world,
        )
    )  # fmt: skip
    micro_per_epoch = dataset.micro_batches_per_epoch()
    steps_per_epoch = micro_per_epoch // accumulation
    if steps_per_epoch == 0:
        raise ValueError(
            f"{shards.total} training samples give no full global batch of "
            f"{settings.global_batch_size} on {ddp.world} rank(s)"
        )
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps > 0:
        total_steps = min(total_steps, settings.max_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        betas=settings.adam_betas,
        eps=settings.adam_eps,
        fused=ddp.device.type == "cuda",  # one kernel for all parameters instead of ~10 each
    )
    warmup = round(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(settings.schedule, warmup, total_steps)
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
    if ddp.world > 1:
        wrapped = DistributedDataParallel(
            model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None,
            broadcast_buffers=family.broadcast_buffers,
        )  # fmt: skip
    if settings.compile:
        wrapped = torch.compile(wrapped)

    metrics = (
        MetricsLog(out, step, settings.tensorboard, family.metric_columns) if ddp.main else None
    )
    progress = _progress(total_steps, step, show_progress and ddp.main)
    start_time = time.perf_counter()
    log.info(
        "pretraining: %d samples, %d steps/epoch, %d steps total, %s, %s, device %s, "
        "precision %s",
        shards.total, steps_per_epoch, total_steps, plan.describe(),
        family.describe(config), ddp.device, precision.name,
    )  # fmt: skip
    loader = make_loader(dataset, settings.seed, ddp.device.type == "cuda")
    try:
        while step < total_steps and epoch < settings.epochs:
            dataset.set_epoch(epoch, consumed)
            batches = iter(loader)
            while consumed < micro_per_epoch and step < total_steps:
                tick = time.perf_counter()
                micro = [b for _, b in zip(range(accumulation), batches, strict=False)]
                if not _every_rank_has_full_step(len(micro) == accumulation, ddp):
                    log.warning("epoch %d ended early (a rank ran out of samples)", epoch)
                    break
                row = _train_step(wrapped, micro, optimizer, scheduler, scaler, precision,
                                  settings, ddp, family)  # fmt: skip
                step += 1
                consumed += accumulation
                elapsed = time.perf_counter() - tick
                row.update(
                    step=step, epoch=epoch, elapsed_s=time.perf_counter() - start_time,
                    samples_per_s=settings.global_batch_size / max(elapsed, 1e-9),
                )  # fmt: skip
                if metrics is not None:
                    metrics.write(row)
                if progress is not None:
                    progress.update(
                        progress.task_ids[0], completed=step, info=f"loss {row['loss']:.3f}"
                    )
                elif ddp.main and (step % settings.log_every_steps == 0 or step == 1):
                    parts = " ".join(f"{n} {row[n]:.4f}" for n in family.loss_names)
                    log.info(
                        "step %d/%d epoch %d loss %.4f (%s) lr %.2e %.1f samples/s",
                        step, total_steps, epoch, row["loss"], parts, row["lr"],
                        row["samples_per_s"],
                    )  # fmt: skip
                if step % settings.save_every_steps == 0 or step == total_steps:
                    _save(out, step, epoch, consumed, model, tokenizer, optimizer, scheduler,
                          scaler, settings, plan, ddp, replace(card, step=step))  # fmt: skip
                if on_step is not None:
                    on_step(step, row)
            del batches
            if consumed >= micro_per_epoch:
                epoch, consumed = epoch + 1, 0
            elif step < total_steps:
                epoch, consumed = epoch + 1, 0  # a rank ran dry: next epoch
    finally:
        if progress is not None:
            progress.stop()
        if metrics is not None:
            metrics.close()

    summary: dict[str, Any] = {}
    if ddp.main:
        final = out / "final"
        model.save_pretrained(str(final), safe_serialization=True)
        tokenizer.save_pretrained(str(final))
        summary = _summarise(out, metrics.rows if metrics else [], settings, family)
        write_model_card(final, replace(card, metrics=summary))
    return summary


def _train_step(
    model: Any,
    micro: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    precision: PrecisionPolicy,
    settings: TrainSettings,
    ddp: Dist,
    family: PretrainFamily | None = None,
) -> dict[str, float]:
    """One optimizer step over ``len(micro)`` micro-batches; returns global-batch metrics.

    Every tensor that meets the other ranks lives on ``ddp.device``; the only host sync is
    the one read of the step's metrics at the end (none per micro-batch).
    """
    family = family or get_family("medvill")
    # Item counts come from the host-side batches (no device sync), then cross the ranks.
    counts = torch.tensor(family.counts(micro), device=ddp.device)
    counts = _all_reduce(counts, ddp)
    # DDP averages gradients over ranks, hence the × world inside the normalisers.
    normalizers = counts / ddp.world
    sums = torch.zeros(len(family.stat_names), device=ddp.device)
    last = len(micro) - 1
    unwrapped = getattr(model, "_orig_mod", model)  # the DDP module under torch.compile
    for index, host_batch in enumerate(micro):
        batch = family.to_device(host_batch, ddp.device)
        # Gradients are all-reduced once per optimizer step: every micro-batch but the last
        # runs forward *and* backward inside one no_sync() context (a fresh one each time).
        sync = index == last or not isinstance(unwrapped, DistributedDataParallel)
        with contextlib.nullcontext() if sync else unwrapped.no_sync():
            with precision.autocast():
                out = family.step(model, batch, normalizers, ddp.device)
            (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
        sums += out.stats
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
    sums = _all_reduce(sums, ddp)
    row = family.row(sums.tolist(), counts.tolist(), ddp.world)
    row["lr"] = lr
    return row


def check_resume_plan(
    checkpoint: Path, state: dict[str, Any], plan: BatchPlan, num_workers: int
) -> None:
    """A resume must split the data the way the checkpoint's run did: same global batch,
    ranks and loader workers (the data position and per-rank RNG states depend on them)."""
    stored = state.get("batch_plan")
    stored_plan = BatchPlan.from_dict(stored) if stored else None
    same = (
        int(state["world"]) == plan.world
        and int(state["num_workers"]) == num_workers
        and (stored_plan is None or stored_plan == plan)
    )
    if not same:
        written = stored_plan.describe() if stored_plan else f"world={state['world']}"
        raise ValueError(
            f"{checkpoint} was written with {written}, num_workers={state['num_workers']}; "
            f"this launch has {plan.describe()}, num_workers={num_workers}. Resume with the "
            f"same number of ranks ({state['world']}), workers and batch settings."
        )


def check_initialisation(
    origin: dict[str, str],
    settings: TrainSettings,
    allow_random_init: bool,
    visual_hint: str = RESNET_WEIGHTS_HINT,
) -> None:
    """Refuse a ``require_pretrained`` run whose configured weights could not be loaded."""
    if not settings.require_pretrained or allow_random_init:
        return
    missing = []
    if settings.text_weights and origin["text"] == "random":
        missing.append(
            f"text encoder weights {settings.text_weights!r} (put a local copy in the Hugging "
            "Face cache or give train.text_weights a local directory)"
        )
    if settings.imagenet and origin["visual"] == "random":
        missing.append(visual_hint)
    if missing:  # FileNotFoundError: the CLI reports it as a user error, without a traceback
        raise FileNotFoundError(
            "this profile starts from pretrained weights, but these could not be loaded: "
            + "; ".join(missing)
            + ". Training from random initialisation would not reproduce the paper; pass "
            "--allow-random-init to do it anyway."
        )


def _save(
    out: Path,
    step: int,
    epoch: int,
    consumed: int,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    settings: TrainSettings,
    plan: BatchPlan,
    ddp: Dist,
    card: CardFacts | None = None,
) -> None:
    """Checkpoint on rank 0 with every rank's RNG state (gathered), then a barrier."""
    states: list[Any] = [rng_state()]
    if ddp.world > 1:
        gathered: list[Any] = [None] * ddp.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if ddp.main:
        trainer_state = {
            "step": step,
            "epoch": epoch,
            "consumed": consumed,
            "world": ddp.world,
            "num_workers": settings.num_workers,
            "batch_plan": plan.as_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": states,
        }
        if scaler is not None:
            trainer_state["scaler"] = scaler.state_dict()
        path = save_checkpoint(out / "checkpoints", step, model, tokenizer, trainer_state,
                               settings.keep_checkpoints, card)  # fmt: skip
        log.info("checkpoint %s", path)
    if ddp.world > 1:
        dist.barrier()


def _summarise(
    out: Path,
    rows: list[dict[str, float]],
    settings: TrainSettings,
    family: PretrainFamily | None = None,
) -> dict[str, Any]:
    """metrics.json (DVC metric) and loss.png (DVC plot) from the whole run's rows."""
    family = family or get_family("medvill")
    if not rows:
        raise RuntimeError("no training step ran")
    tail = rows[-min(len(rows), 5) :]
    speeds = [r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples_per_s"]]
    summary = {
        "steps": int(rows[-1]["step"]),
        "epochs": int(rows[-1]["epoch"]) + 1,
        "first_loss": rows[0]["loss"],
        "final_loss": rows[-1]["loss"],
        "final_loss_mean5": sum(r["loss"] for r in tail) / len(tail),
        **{f"final_{name}": rows[-1][name] for name in family.loss_names},
        "samples_per_s": sum(speeds) / len(speeds),
        "global_batch_size": settings.global_batch_size,
        "wall_time_s": rows[-1]["elapsed_s"],
    }
    if any(math.isnan(v) for v in (summary["first_loss"], summary["final_loss"])):
        log.error("loss became NaN")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _plot(out / "loss.png", rows, ("loss", *family.loss_names), family.title)
    return summary


def _plot(
    path: Path,
    rows: list[dict[str, float]],
    names: tuple[str, ...] = ("loss", "mlm_loss", "irm_loss"),
    title: str = "MedViLL",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name in names:
        ax.plot(steps, [r[name] for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{title} pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def config_for(profile: dict[str, Any], tokenizer_dir: Path) -> MedViLLConfig:
    """The config a profile yields with a saved tokenizer (used by the CLI's dry listing)."""
    return config_from_profile(profile, tokenizer_ids(load_tokenizer(tokenizer_dir)))
