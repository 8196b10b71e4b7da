"""Pretrained starting points for X-VL, from local files only (nothing is downloaded).

* The image encoder: a ViT-S/16 checkpoint of a self-supervised ImageNet run (the Medical X-VL
  authors start from iBOT's; DINO's has the same layout). ``.safetensors`` is read directly,
  ``.pth``/``.pt`` with ``torch.load(weights_only=True)`` — tensors only, never unpickled code.
  Those files wrap the weights under a key (``student``/``teacher``/``state_dict``/``model``)
  with ``module.``/``backbone.`` prefixes; the position table is resampled when the grid
  differs (224² weights, another input size).
* The text and fusion layers: a local BERT checkpoint (``transformers`` folder, or a Hub id
  found in the local cache at its pinned commit); its layers 0…N−1 fill the text layers then the
  fusion layers (the cross-attention is new), as ALBEF splits BERT-base 6 + 6.

When a file is missing the part stays randomly initialised and the log says so; a profile with
``require_pretrained`` refuses to start then (:func:`medvill.pretrain.check_initialisation`,
with the X-VL family's hint naming the ViT file).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed

from medvill.checkpoint import read_state_file
from medvill.config import hub_source
from medvill.xvl.model import XVLForPretraining

log = logging.getLogger(__name__)

#: Keys self-supervised ViT checkpoints keep their weights under, tried in this order.
CHECKPOINT_KEYS: tuple[str, ...] = ("teacher", "student", "state_dict", "model")
_PREFIXES = ("module.", "backbone.", "encoder.", "visual_encoder.")


def read_vit_state(path: Path, checkpoint_key: str = "") -> dict[str, torch.Tensor]:
    """The ViT tensors of a checkpoint file, prefixes stripped, classifier heads dropped."""
    keys = (checkpoint_key,) if checkpoint_key else CHECKPOINT_KEYS
    raw = read_state_file(path, keys, require_wrapper=bool(checkpoint_key))
    state: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if name.startswith(("head.", "head_dist.", "fc_norm.")):
            continue
        state[name] = value
    return state


def load_vit(model: XVLForPretraining, path: str, checkpoint_key: str = "") -> str:
    """Load ViT weights from ``path`` into the image encoder; returns what it started from
    ("random" when the file is missing or does not fit, with a log line saying why)."""
    if not path:
        log.info("image encoder: random initialisation (no vit_weights configured)")
        return "random"
    file = Path(path)
    if not file.is_file():
        log.warning(
            "image encoder: no ViT weights at %s — random initialisation. Put a ViT-S/16 "
            "self-supervised ImageNet checkpoint (iBOT or DINO, .pth or .safetensors) there.",
            file,
        )
        return "random"
    vit = model.xvl.visual_encoder
    state = read_vit_state(file, checkpoint_key)
    if "pos_embed" in state and state["pos_embed"].shape != vit.pos_embed.shape:
        old = round((state["pos_embed"].shape[1] - 1) ** 0.5)
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=list(vit.patch_embed.grid_size), old_size=[old, old]
        )
    own = vit.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    blocks = [k for k in own if k.startswith("blocks.")]
    if len([k for k in fitting if k.startswith("blocks.")]) < len(blocks):
        log.warning(
            "image encoder: %s fits %d of %d block tensors (another ViT size?) — random "
            "initialisation", file, len([k for k in fitting if k.startswith("blocks.")]),
            len(blocks),
        )  # fmt: skip
        return "random"
    vit.load_state_dict(fitting, strict=False)
    log.info("image encoder initialised from %s (%d tensors)", file, len(fitting))
    return f"{file.name} ({len(fitting)} tensors)"


_LAYER = re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)\.(.*)$")


def load_bert(model: XVLForPretraining, text_weights: str) -> str:
    """Copy a local BERT's embeddings and layers into the text and fusion layers; returns what
    the text side started from ("random" when unavailable)."""
    if not text_weights:
        log.info("text encoder: random initialisation (no text_weights configured)")
        return "random"
    from transformers import BertModel

    where, revision = hub_source(text_weights)
    try:
        source = BertModel.from_pretrained(where, revision=revision, local_files_only=True)
    except (OSError, ValueError) as error:
        log.warning("text weights %r not available locally (%s): random init", text_weights,
                    error)  # fmt: skip
        return "random"
    own = model.xvl.text.state_dict()
    vocab_matches = source.config.vocab_size == model.config.vocab_size
    copy: dict[str, torch.Tensor] = {}
    for key, value in source.state_dict().items():
        match = _LAYER.match(key)
        target = f"layer.{match.group(1)}.{match.group(2)}" if match else key
        if "word_embeddings" in target and not vocab_matches:
            continue
        if target in own and own[target].shape == value.shape:
            copy[target] = value
    model.xvl.text.load_state_dict(copy, strict=False)
    label = f"{where}@{revision}" if revision else where
    log.info("text encoder initialised from %s (%d tensors)", label, len(copy))
    return f"{label} ({len(copy)} tensors)"
