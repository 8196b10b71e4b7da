"""Start MedViLL's image CNN from a local checkpoint (``train.cnn_weights``), not only ImageNet.

The paper starts its ResNet from ImageNet. Researchers often have something closer to hand: a
ResNet trained on chest X-rays (a CheXpert classifier, another group's pretraining), or, offline,
no ImageNet file at all. ``cnn_weights`` names such a file and the trunk starts from it; nothing
is downloaded. Accepted, in this order:

* a checkpoint folder of ours (any family built on ``VisualBackbone``: MedViLL pretraining or a
  fine-tuned task, ConVIRT, CLIP, LoVT) or its ``model.safetensors``: the
  ``…visual_backbone.trunk.<slot>.…`` tensors are read;
* a torchvision ResNet state dict (``.pth``/``.pt`` read with ``torch.load(weights_only=True)``,
  tensors only, never pickled code; or ``.safetensors``), optionally wrapped under
  ``state_dict``/``model`` and prefixed ``module.``; the classifier ``fc.*`` is dropped.

The file must fit the configured backbone exactly (every trunk tensor, same shapes): a partial
load would silently leave random layers under a name that says "pretrained", so a mismatch is
an error naming the file and the first tensors that do not fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medvill.checkpoint import read_state_file

#: torchvision ResNet attribute → index in ``VisualBackbone.trunk`` (relu/maxpool hold no weights).
TORCHVISION_SLOTS: dict[str, str] = {
    "conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7",
}  # fmt: skip
TRUNK_MARK = "visual_backbone.trunk."
_WRAPPERS = ("state_dict", "model")
_PREFIX = "module."


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder or file (safetensors, or a tensors-only torch file)."""
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"train.cnn_weights: {file} not found (a checkpoint folder, a .safetensors file or "
            "a torchvision .pth state dict)"
        )
    try:
        return read_state_file(file, _WRAPPERS)
    except ValueError as error:
        raise ValueError(f"train.cnn_weights: {error}") from error


def trunk_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trunk's tensors under ``VisualBackbone.trunk`` names (``<slot>.<rest>``)."""
    ours = {k.split(TRUNK_MARK, 1)[1]: v for k, v in tensors.items() if TRUNK_MARK in k}
    if ours:
        return ours
    state: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        key = key.removeprefix(_PREFIX)
        head, _, rest = key.partition(".")
        if head in TORCHVISION_SLOTS and rest:
            state[f"{TORCHVISION_SLOTS[head]}.{rest}"] = value
    return state


def load_cnn_weights(trunk: nn.Module, path: str | Path) -> int:
    """Copy the file's trunk tensors into ``trunk`` (all of them, shapes equal); returns how many.

    Raises FileNotFoundError for a missing file and ValueError when it does not fit.
    """
    path = Path(path)
    state = trunk_state(read_tensors(path))
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if not state or missing or wrong:
        found = "no ResNet trunk tensors" if not state else f"{len(state)} trunk tensors"
        raise ValueError(
            f"train.cnn_weights: {path} does not fit this model's image CNN ({found}; "
            f"missing {missing[:3]}, wrong shape {wrong[:3]}): is it the configured backbone?"
        )
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)
    return len(own)
