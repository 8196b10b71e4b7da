"""Downstream tasks: classification, retrieval, VQA, report generation (issue 6).

Each module has ``finetune(paths, settings, pretrained)``, ``evaluate(paths, eval_settings,
checkpoint, out)`` and ``compute_fn(predictions)`` — the metrics of a subset of the saved
predictions, which both the bootstrap and ``medvill compare`` use.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from medvill.tasks.common import TASKS

_SETTINGS = {
    "classification": "ClassificationSettings",
    "retrieval": "RetrievalSettings",
    "vqa": "VqaSettings",
    "generation": "GenerationSettings",
}


def task_module(task: str) -> ModuleType:
    """The module of a task, with an error listing the tasks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return import_module(f"medvill.tasks.{task}")


def settings_class(task: str) -> type:
    return getattr(task_module(task), _SETTINGS[task])


__all__ = ["TASKS", "settings_class", "task_module"]
