"""The pretraining model zoo: one registered :class:`~medvill.families.base.PretrainFamily` per
``medvill pretrain --model`` name, all trained by the one loop in :mod:`medvill.pretrain`.

:data:`FAMILY_NAMES` is import-light (the CLI lists it without importing torch); a test keeps
it equal to the registry. Adding a family: subclass ``PretrainFamily`` in its own module, add a
line to :func:`_registry`, and its profiles under ``pretrain.families.<name>.profiles``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medvill.families.base import PretrainFamily

#: Registered names, in the order the CLI and the summary list them.
FAMILY_NAMES: tuple[str, ...] = ("medvill", "convirt", "clip", "lovt", "xvl")

#: name → "module:class" (imported on first use)
_FAMILIES: dict[str, str] = {
    "medvill": "medvill.families.medvill_family:MedViLLFamily",
    "convirt": "medvill.families.contrastive:ConVIRTFamily",
    "clip": "medvill.families.contrastive:CLIPFamily",
    "lovt": "medvill.families.contrastive:LoVTFamily",
    "xvl": "medvill.families.xvl_family:XVLFamily",
}


def register(name: str, target: str) -> None:
    """Register a family as ``"package.module:ClassName"`` (another engineer's family can
    plug in without editing the trainer)."""
    _FAMILIES[name] = target


def get_family(name: str) -> PretrainFamily:
    """The family registered as ``name``; an unknown name is a ValueError listing the known."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}")
    module_name, _, class_name = _FAMILIES[name].partition(":")
    family_class = getattr(importlib.import_module(module_name), class_name)
    return family_class()
