"""What every downstream task shares: paths, settings, checkpoints, inputs, the training loop
and the output files.

Layout per dataset (static paths, so DVC's ``foreach`` can declare them):

* fine-tuned model: ``models/<dataset>/<task>/final/`` (``save_pretrained`` safetensors +
  tokenizer + ``task.json`` with what the head needs, e.g. the threshold or answer vocabulary);
* evaluation: ``reports/<dataset>/<task>/metrics.json`` (DVC metric), ``predictions.json``
  (per-item outputs that ``medvill compare`` pairs up) and ``plots/``: curves as JSON/CSV (DVC
  plots, declared with their templates in dvc.yaml, so ``dvc plots diff`` compares runs) with
  PNG renderings beside them.

Only safetensors and JSON are read; nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medvill.data import TextSpec, decode_image, text_block
from medvill.device import (
    PrecisionPolicy,
    default_device,
    device_label,
    loader_options,
    on_device,
    policy_for,
    synchronize,
)
from medvill.modelcard import CardFacts, checkpoint_facts, write_model_card
from medvill.pretrain import lr_lambda
from pipeline.records import atomic_write_bytes

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("classification", "retrieval", "vqa", "generation")


@dataclass(frozen=True)
class TaskPaths:
    """Inputs and outputs of the downstream tasks of one dataset under a project root."""

    root: Path
    dataset: str
    #: A named run inside the dataset's model and report folders (e.g. ``ablation/bi``, one
    #: arm of the mask ablation), so that runs of the same data never overwrite each other.
    run: str = ""

    @property
    def models(self) -> Path:
        """``models/<dataset>[/<run>]``: the run's pretraining and fine-tuned checkpoints."""
        base = self.root / "models" / self.dataset
        return base / self.run if self.run else base

    @property
    def index(self) -> Path:
        return self.root / "data" / "shards" / self.dataset / "index.json"

    @property
    def pairs(self) -> Path:
        return self.root / "data" / "interim" / self.dataset / "pairs"

    @property
    def vqa(self) -> Path:
        return self.root / "data" / "interim" / self.dataset / "vqa"

    @property
    def pretrained(self) -> Path:
        return self.models / "pretrain" / "final"

    def model_dir(self, task: str) -> Path:
        return self.models / task

    def finetuned(self, task: str) -> Path:
        return self.model_dir(task) / "final"

    def reports(self, task: str) -> Path:
        base = self.root / "reports" / self.dataset
        return (base / self.run if self.run else base) / task


def require_checkpoint(path: Path, hint: str = "") -> Path:
    """``path`` if it holds a saved model (config + safetensors), else a clear error."""
    path = Path(path)
    has_weights = (path / "model.safetensors").is_file() or (
        path / "model.safetensors.index.json"
    ).is_file()
    if not path.is_dir() or not (path / "config.json").is_file() or not has_weights:
        raise FileNotFoundError(
            f"no model checkpoint at {path} (needs config.json and model.safetensors)"
            + (f": {hint}" if hint else "")
        )
    return path


# --------------------------------------------------------------------------- settings


@dataclass
class FinetuneSettings:
    """Settings every task has (``finetune.profiles.<profile>.<task>`` in params.yaml)."""

    seed: int = 123
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    num_workers: int = 0
    max_steps: int = 0  # 0 = all epochs
    mask: str = "bi"  # attention mask used in fine-tuning and evaluation
    # False freezes the whole CNN (features still flow): a CPU-friendly option for demos and
    # tests, since the ResNet's backward pass dominates a step. The paper trains layer2–4.
    train_backbone: bool = True
    log_every_steps: int = 10
    # Same policy as pretraining (medvill/device.py): auto = bf16 autocast on CUDA with bf16,
    # fp16 + GradScaler on older GPUs, fp32 on the CPU.
    precision: str = "auto"

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any]) -> S:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {unknown} (known: {sorted(known)})")
        return cls(**data)


S = TypeVar("S", bound=FinetuneSettings)


def finetune_section(params: dict[str, Any], profile: str, task: str) -> dict[str, Any]:
    """``finetune.profiles.<profile>.<task>`` with errors naming what exists."""
    profiles = params.get("finetune", {}).get("profiles", {})
    if profile not in profiles:
        raise KeyError(f"unknown finetune profile {profile!r}; params.yaml has {sorted(profiles)}")
    if task not in profiles[profile]:
        raise KeyError(f"finetune profile {profile!r} has no {task!r} block")
    return dict(profiles[profile][task] or {})


@dataclass(frozen=True)
class EvalSettings:
    """``evaluate`` block: resamples for the mean ± std (the paper: 30), resamples for the
    percentile interval (≥ 1,000: 30 cannot resolve 2.5 % tails), their seed, the level."""

    bootstrap: int = 30
    bootstrap_ci_resamples: int = 1000
    seed: int = 123
    confidence: float = 0.95
    split: str = "test"
    batch_size: int = 32

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> EvalSettings:
        block = dict(params.get("evaluate", {}) or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"unknown evaluate keys: {unknown}")
        return cls(**block)


# --------------------------------------------------------------------------- inputs


def load_image_file(path: Path, size: int) -> torch.Tensor:
    """A processed image on disk → (3, size, size) normalised tensor (no augmentation
    downstream, docs/model.md §2)."""
    return decode_image(Path(path).read_bytes(), size, None)


def resolve_image_paths(
    rows: Sequence[dict[str, Any]], image_root: Path, source: Path, key: str = "img"
) -> list[Path]:
    """Absolute image paths of task-file rows, checked up front: a task file that names an
    image the images stage never wrote fails here with the line, id and path, not in the
    middle of an epoch."""
    paths: list[Path] = []
    missing: list[str] = []
    for line_no, row in enumerate(rows, start=1):
        if key not in row:
            raise ValueError(f"{source}:{line_no}: no {key!r} field")
        path = Path(row[key])
        path = path if path.is_absolute() else image_root / path
        if not path.is_file() and len(missing) < 5:
            missing.append(f"{source}:{line_no} id {row.get('id', '?')!r} → {path}")
        paths.append(path)
    if missing:
        raise FileNotFoundError(
            "task file names images that do not exist (unknown image id or wrong "
            "finetune.image_root):\n  " + "\n  ".join(missing)
        )
    return paths


def encode_text(tokenizer: Any, text: str, spec: TextSpec) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise a report/question into the text block (truncate, [SEP], pad)."""
    tokens = tokenizer(text, add_special_tokens=False, truncation=True, max_length=spec.max_tokens)[
        "input_ids"
    ]
    return text_block(tokens, spec)


def stack(items: Sequence[dict[str, Any]], name: str) -> torch.Tensor:
    """Collate one field of a list of examples (tensors or numpy arrays)."""
    first = items[0][name]
    if isinstance(first, torch.Tensor):
        return torch.stack([x[name] for x in items])
    return torch.from_numpy(np.stack([np.asarray(x[name]) for x in items]))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    collate: Callable[[list[Any]], Any],
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> DataLoader:
    """A map-style loader whose shuffle order depends only on ``seed``; batches for a CUDA
    ``device`` come in pinned memory (the copy to the GPU is then asynchronous).

    Workers are not persistent: every task builds each epoch's dataset anew (pairs, masks
    and answers are drawn per epoch), and persistent workers would keep serving the old one.
    """
    options = loader_options(device or torch.device("cpu"), num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=options["pin_memory"],
    )


# --------------------------------------------------------------------------- device


def task_device() -> torch.device:
    """The device fine-tuning and evaluation run on: the GPU when there is one."""
    return default_device(int(os.environ.get("LOCAL_RANK", "0")))


def model_device(model: torch.nn.Module) -> torch.device:
    """Where ``model``'s weights are (batches and new tensors must go there)."""
    return next(model.parameters()).device


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``; on CUDA with the ResNet in channels_last and cuDNN autotuning
    (the fixed image size makes the benchmark pay off after the first batch)."""
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        backbone = getattr(getattr(model, "medvill", None), "visual_backbone", None)
        if backbone is not None:
            backbone.to(memory_format=torch.channels_last)
    return model


def inference_precision(model: torch.nn.Module) -> PrecisionPolicy:
    """Evaluation runs in the precision training used on this device (``auto``)."""
    return policy_for("auto", model_device(model))


# --------------------------------------------------------------------------- training


def image_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """What ``train_backbone: false`` freezes: MedViLL's CNN, or X-VL's ViT."""
    if hasattr(model, "medvill"):
        return model.medvill.visual_backbone
    return model.xvl.visual_encoder


def train_loop(
    model: torch.nn.Module,
    batches_for_epoch: Callable[[int], Iterable[Any]],
    steps_per_epoch: int,
    loss_of: Callable[[torch.nn.Module, Any], torch.Tensor],
    settings: FinetuneSettings,
    name: str,
) -> list[dict[str, float]]:
    """AdamW with linear warmup/decay (the pretraining schedule), gradient clipping; one row
    per optimizer step. ``batches_for_epoch(epoch)`` yields that epoch's batches."""
    if steps_per_epoch < 1:
        raise ValueError(f"{name}: the training set gives no batch of {settings.batch_size}")
    torch.manual_seed(settings.seed)
    if not settings.train_backbone:
        image_encoder(model).requires_grad_(False)
    device = model_device(model)
    precision = policy_for(settings.precision, device)
    scaler = precision.scaler()
    total = steps_per_epoch * settings.epochs
    if settings.max_steps > 0:
        total = min(total, settings.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=settings.lr,
        fused=device.type == "cuda",
    )
    warmup = round(settings.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda("linear", warmup, total))
    model.train()
    log.info("%s: %d steps on %s, precision %s", name, total, device, precision.name)
    rows: list[dict[str, float]] = []
    step = 0
    start = time.perf_counter()
    for epoch in range(settings.epochs):
        for batch in on_device(batches_for_epoch(epoch), device):
            with precision.autocast():
                loss = loss_of(model, batch)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if scaler is not None:
                scaler.unscale_(optimizer)
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "elapsed_s": time.perf_counter() - start,
                }
            )
            if step % settings.log_every_steps == 0 or step == 1:
                log.info(
                    "%s step %d/%d epoch %d loss %.4f", name, step, total, epoch, rows[-1]["loss"]
                )
            if step >= total:
                model.eval()
                return rows
    model.eval()
    return rows


def save_finetuned(
    model: Any,
    tokenizer: Any,
    out: Path,
    task_info: dict[str, Any],
    history: list[dict],
    settings: FinetuneSettings | None = None,
    paths: TaskPaths | None = None,
) -> Path:
    """Write ``out/`` atomically: model (safetensors), tokenizer, ``task.json``, ``train.json``
    and the model card ``README.md`` (data of ``paths.dataset``, ``settings``, the numbers in
    ``task_info`` and the last training loss)."""
    out = Path(out)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    write_json(task_info, tmp / "task.json")
    write_json({"steps": history}, tmp / "train.json")
    write_model_card(tmp, _task_card(model, out, task_info, history, settings, paths))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _task_card(
    model: Any,
    out: Path,
    task_info: dict[str, Any],
    history: list[dict],
    settings: FinetuneSettings | None,
    paths: TaskPaths | None,
) -> CardFacts:
    """Card facts of a fine-tuned model; without ``paths`` the dataset is read off the
    ``models/<dataset>/<task>/final`` layout."""
    if paths is None:
        layout = out.resolve().parents  # <root>/models/<dataset>/<task>/final
        paths = TaskPaths(layout[3], layout[1].name)
    numbers = {k: v for k, v in task_info.items() if isinstance(v, int | float)}
    if history:
        numbers["final_train_loss"] = history[-1]["loss"]
        numbers["steps"] = len(history)
    params = asdict(settings) if settings is not None else {}
    params.update(
        {
            k: v
            for k, v in task_info.items()
            if isinstance(v, str) and k not in ("task", "card_kind")
        }
    )
    # card_kind: another family's fine-tuned model (e.g. xvl_classification) is described as
    # such, while task.json's "task" stays the task its predictions are compared under
    return checkpoint_facts(
        str(task_info.get("card_kind", task_info.get("task", out.parent.name))),
        model,
        paths.index,
        params,
        metrics=numbers,
        initialised_from={"all weights": f"pretraining checkpoint {task_info.get('pretrained')}"},
        labels=tuple(task_info.get("labels", ())),
    )


def read_task_info(checkpoint: Path, task: str) -> dict[str, Any]:
    """``task.json`` of a fine-tuned checkpoint, checked to belong to ``task``."""
    path = Path(checkpoint) / "task.json"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} has no task.json: not a fine-tuned {task} model")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("task") != task:
        raise ValueError(f"{checkpoint} is a {info.get('task')!r} model, not {task!r}")
    return info


def open_finetuned(
    paths: TaskPaths, task: str, checkpoint: Path | None, out: Path | None
) -> tuple[Path, dict[str, Any], Path]:
    """The checkpoint to evaluate, its ``task.json`` and the report folder.

    Defaults are the task's own fine-tuned model and ``reports/<dataset>/<task>/``; a missing
    checkpoint names the command that makes it.
    """
    ckpt = require_checkpoint(
        checkpoint or paths.finetuned(task),
        f"run `medvill finetune {task} --dataset {paths.dataset}` first",
    )
    return ckpt, read_task_info(ckpt, task), Path(out or paths.reports(task))


# --------------------------------------------------------------------------- outputs


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity (DVC rejects them): undefined numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def write_json(value: Any, path: Path) -> None:
    """Canonical JSON (sorted keys, NaN → null) written atomically."""
    text = json.dumps(_finite(value), sort_keys=True, ensure_ascii=False, indent=2) + "\n"
    atomic_write_bytes(Path(path), text.encode("utf-8"))


class InferenceTimer:
    """Wall-clock model time per sample in milliseconds, as the paper's tables report, on the
    device ``model`` is on (which is what the metrics' ``environment.device`` then names).

    ``fn`` runs under the evaluation precision (:func:`inference_precision`); the device is
    synchronised around it, so queued GPU work is counted where it belongs.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.device = model_device(model)
        self.precision = inference_precision(model)
        self._sync = synchronize(self.device)
        self.seconds = 0.0
        self.samples = 0

    def time(self, fn: Callable[[], Any], samples: int) -> Any:
        self._sync()
        start = time.perf_counter()
        with self.precision.autocast():
            result = fn()
        self._sync()
        self.seconds += time.perf_counter() - start
        self.samples += samples
        return result

    @property
    def ms_per_sample(self) -> float:
        return 1000.0 * self.seconds / self.samples if self.samples else float("nan")


def environment(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured (inference time depends on it): the device the model
    ran on, not merely one the machine has."""
    return {
        "device": device_label(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }


def pretraining_mask(checkpoint: Path) -> str | None:
    """The attention mask the checkpoint was pretrained with (``attention_mask_type`` of its
    ``config.json``; fine-tuning keeps the pretraining config). Recorded in every metrics.json
    so that a table comparing masks can check which pretraining each number comes from."""
    path = Path(checkpoint) / "config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("attention_mask_type")


def metrics_document(
    task: str,
    dataset: str,
    checkpoint: Path,
    boot: dict[str, dict[str, float]],
    settings: EvalSettings,
    timing: dict[str, float],
    extra: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """The ``metrics.json`` layout shared by all tasks: headline values at the top level (what
    ``dvc metrics show`` lists), the bootstrap detail under ``bootstrap``; ``device`` is
    where the model ran (the timer's), the CPU when not given."""
    doc: dict[str, Any] = {
        "task": task,
        "dataset": dataset,
        "checkpoint": str(checkpoint),
        "pretraining_mask": pretraining_mask(checkpoint),
        "split": settings.split,
        "metrics": {name: stats["value"] for name, stats in boot.items()},
        "bootstrap": {
            "resamples": settings.bootstrap,
            "ci_resamples": settings.bootstrap_ci_resamples,
            "seed": settings.seed,
            "confidence": settings.confidence,
            "metrics": boot,
        },
        "inference_ms_per_sample": timing,
        "environment": environment(device or torch.device("cpu")),
    }
    if extra:
        doc.update(extra)
    return doc


PLOTS = "plots"


def write_curve(path: Path, name: str, rows: Sequence[dict[str, Any]]) -> None:
    """A curve as DVC plot JSON: ``{name: [{field: value, ...}, ...]}`` (one dict per point;
    the x/y fields and the template are chosen in dvc.yaml)."""
    write_json({name: list(rows)}, path)


def savefig(fig: Any, path: Path) -> None:
    """Save a matplotlib figure atomically (a killed run leaves no torn PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_model(cls: Any, path: Path, **config_overrides: Any) -> Any:
    """``cls.from_pretrained`` on :func:`task_device`, with transformers' loading report
    silenced: a task head that is missing from a pretraining checkpoint (and the MLM head it
    does not use) is expected."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = cls.from_pretrained(str(path), **config_overrides)
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    return place_model(model, task_device())
