"""Fine-tuned image–report retrieval for the contrastive families (``medvill finetune-zoo``).

MedViLL fine-tunes a matching head for retrieval; a dual encoder has no head to add: its
retrieval score is already the cosine of its two embeddings. Fine-tuning therefore continues
the family's own contrastive objective from the pretrained checkpoint on the dataset's train
split, for the budget of the profile's ``finetune`` block, and the evaluation scores the same
100-candidate blocks as the zero-shot path (:mod:`medvill.contrastive.evaluate`).

Why it is more than "more pretraining": the pretraining checkpoint may come from another
dataset (MIMIC-CXR → Open-I), and the text view changes — every family reads the whole
report here (a retrieval candidate is a report), where ConVIRT pretrains on one random
sentence. Training runs in the shared trainer (:mod:`medvill.pretrain`), so batch plan, DDP,
precision, exact resume and safetensors checkpoints are the pretraining's; the profile's
``model.gather_negatives`` holds for the fine-tuning too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvill.pretrain import Paths, Start, pretrain, pretrain_folder
from medvill.tasks.common import require_checkpoint

#: The profile's ``model`` fields a fine-tuning takes over the pretrained model's config:
#: training choices that leave the architecture alone.
TRAINING_FIELDS: tuple[str, ...] = ("gather_negatives",)


def config_changes(profile: dict[str, Any]) -> dict[str, Any]:
    """What fine-tuning changes in the pretrained model's config: the whole report as text
    view, and the profile's :data:`TRAINING_FIELDS` (e.g. negatives from every rank)."""
    model = profile.get("model", {})
    return {"text_input": "report", **{k: model[k] for k in TRAINING_FIELDS if k in model}}


def finetune_folder(family: str) -> str:
    """``models/<dataset>/retrieval-<family>/`` (MedViLL's own is ``retrieval/``)."""
    return f"retrieval-{family}"


def finetune_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The trainer's profile of the fine-tuning: the family profile's ``train`` block with its
    ``finetune.train`` entries over it (budget, learning rate, …; batch plan, workers and
    precision are inherited unless given). A profile without ``finetune`` cannot fine-tune."""
    block = profile.get("finetune")
    if not isinstance(block, dict) or not isinstance(block.get("train"), dict):
        raise ValueError(
            "the profile has no finetune.train block (the fine-tuning budget: epochs, lr, …)"
        )
    unknown = sorted(set(block) - {"train"})
    if unknown:
        raise ValueError(f"finetune: unknown key(s) {unknown}; only train is read")
    train = {**profile.get("train", {}), **block["train"]}
    # the weights come from the checkpoint: no public weights to look for or to require
    train.update(text_weights="", imagenet=False, require_pretrained=False)
    return {"train": train}


def finetune(
    family: str,
    profile: dict[str, Any],
    root: Path,
    dataset: str,
    pretrained: Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``family``'s pretrained dual encoder on ``dataset``'s train shards; writes
    ``models/<dataset>/retrieval-<family>/`` (``final/``, checkpoints, ``metrics.csv``,
    ``metrics.json``, ``loss.png``) and returns the trainer's summary."""
    default = root / "models" / dataset / pretrain_folder(family) / "final"
    checkpoint = require_checkpoint(
        pretrained or default,
        f"run `medvill pretrain --model {family} --dataset {dataset}` first",
    )
    objective = _objective_of(checkpoint)
    if objective != family:
        raise ValueError(f"{checkpoint} holds a {objective} model, not {family}")
    base = Paths.for_dataset(dataset, root, family)
    paths = Paths(
        index=base.index,
        negatives=None,
        tokenizer=checkpoint,  # the pretraining saved its tokenizer beside the weights
        out=root / "models" / dataset / finetune_folder(family),
    )
    return pretrain(
        finetune_profile(profile), paths, resume=resume, show_progress=show_progress,
        model=family, start=Start(checkpoint, "contrastive_retrieval", config_changes(profile)),
    )  # fmt: skip


def _objective_of(checkpoint: Path) -> str:
    """The objective a checkpoint's config names, without loading its weights."""
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    return str(config.get("objective", config.get("model_type", "?")))
