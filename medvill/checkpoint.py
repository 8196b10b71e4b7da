"""Checkpoints: the model via ``save_pretrained`` (safetensors) plus ``trainer_state.pt``.

``trainer_state.pt`` holds only tensors, numbers, strings and containers of them — optimizer and
scheduler state dicts, RNG states, the data position — so it loads with
``torch.load(weights_only=True)``: no pickled code is ever executed when resuming.
A checkpoint is written to a temporary folder and renamed into place, so a run killed while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medvill.modelcard import CardFacts, write_model_card

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def rng_state() -> dict[str, Any]:
    """Every RNG the training step consumes (dropout uses torch's; Python's for completeness)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
    card: CardFacts | None = None,
) -> Path:
    """Write ``root/step-<step>/`` atomically and prune all but the newest ``keep``.

    ``card``: the facts for the folder's model card (``README.md``), so an intermediate
    checkpoint copied elsewhere still says what it is.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    torch.save(trainer_state, tmp / STATE_FILE)
    if card is not None:
        write_model_card(tmp, card)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """Load ``trainer_state.pt`` safely (tensors and plain containers only)."""
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)


def read_state_file(
    path: Path, wrappers: Sequence[str] = (), require_wrapper: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of a weights file from elsewhere (another project's checkpoint):
    ``.safetensors`` directly, anything else with ``torch.load(weights_only=True)`` — tensors
    and plain containers only, never pickled code. Such files often keep the weights under a
    key (``state_dict``, ``model``, ``teacher``…): the first of ``wrappers`` holding a dict is
    unwrapped (``require_wrapper``: one must). Non-tensor entries are dropped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling refused or not a torch file: say which
            raise ValueError(f"{path} is not a tensors-only torch file ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a state dict")
    for key in wrappers:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    else:
        if require_wrapper:
            raise ValueError(f"{path}: no key {wrappers[0]!r} (has {sorted(raw)[:10]})")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
