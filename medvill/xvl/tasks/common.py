"""What the X-VL tasks share: where their checkpoints and reports go, their params block, the
checkpoints they start from, and the report layout the text encoder reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvill.data import TextSpec
from medvill.tasks.common import TaskPaths, read_task_info, require_checkpoint
from medvill.xvl.data import xvl_text_spec


@dataclass(frozen=True)
class XVLTaskPaths(TaskPaths):
    """MedViLL's task layout inside ``models/<dataset>/xvl/`` and ``reports/<dataset>/xvl/``
    (beside the attention maps and the zero-shot retrieval), starting from the X-VL
    pretraining checkpoint ``models/<dataset>/pretrain-xvl/final``."""

    run: str = "xvl"

    @property
    def pretrained(self) -> Path:
        return self.root / "models" / self.dataset / "pretrain-xvl" / "final"


def finetune_section(params: dict[str, Any], profile: str, task: str) -> dict[str, Any]:
    """``finetune.families.xvl.profiles.<profile>.<task>``, with errors naming what exists."""
    profiles = (
        params.get("finetune", {}).get("families", {}).get("xvl", {}).get("profiles", {}) or {}
    )
    if profile not in profiles:
        raise KeyError(
            f"unknown X-VL finetune profile {profile!r}; params.yaml has "
            f"{sorted(profiles)} under finetune.families.xvl.profiles"
        )
    if task not in (profiles[profile] or {}):
        raise KeyError(f"X-VL finetune profile {profile!r} has no {task!r} block")
    return dict(profiles[profile][task] or {})


def pretrained_source(paths: TaskPaths, pretrained: Path | None) -> Path:
    """The X-VL pretraining checkpoint to fine-tune, or an error naming the command that
    writes it."""
    return require_checkpoint(
        pretrained or paths.pretrained,
        f"run `medvill pretrain --model xvl --dataset {paths.dataset}` first",
    )


def open_finetuned(
    paths: TaskPaths, task: str, checkpoint: Path | None, out: Path | None
) -> tuple[Path, dict[str, Any], Path]:
    """The fine-tuned X-VL checkpoint to evaluate, its ``task.json`` (checked to be an X-VL
    model of ``task``) and the report folder."""
    ckpt = require_checkpoint(
        checkpoint or paths.finetuned(task),
        f"run `medvill finetune {task} --model xvl --dataset {paths.dataset}` first",
    )
    info = read_task_info(ckpt, task)
    if info.get("model") != "xvl":
        raise ValueError(f"{ckpt} is a {info.get('model', 'medvill')} model, not an X-VL one")
    return ckpt, info, Path(out or paths.reports(task))


def text_spec(tokenizer: Any, config: Any) -> TextSpec:
    """[CLS] w₁ … wₙ [SEP], as in X-VL pretraining."""
    return xvl_text_spec(tokenizer, config.max_text_tokens)
