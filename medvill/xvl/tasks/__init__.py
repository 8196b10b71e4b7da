"""Medical X-VL fine-tuned on the downstream tasks: diagnosis classification (AUROC, the seed's
``eval_finetune``), image–report retrieval on the 100-candidate blocks (contrast, then the
matching head re-ranks the top candidates, as ALBEF), and VQA (answer classes).

Each module has MedViLL's task interface (:mod:`medvill.tasks`): ``finetune(paths, settings,
pretrained)``, ``evaluate(paths, eval_settings, checkpoint, out)`` and the task's
``compute_fn``; the predictions files have MedViLL's layout, so ``medvill compare`` can pair an
X-VL evaluation with a MedViLL one on the same test items. Report generation is MedViLL's only:
X-VL's fusion encoder has no decoder.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

#: The tasks an X-VL checkpoint is fine-tuned on (a subset of medvill.tasks.TASKS).
XVL_TASKS: tuple[str, ...] = ("classification", "retrieval", "vqa")

_SETTINGS = {
    "classification": "XVLClassificationSettings",
    "retrieval": "XVLRetrievalSettings",
    "vqa": "XVLVqaSettings",
}


def task_module(task: str) -> ModuleType:
    """The X-VL module of a task, with an error that lists the tasks X-VL has."""
    if task not in XVL_TASKS:
        raise ValueError(
            f"X-VL has no {task!r} task; choose one of {', '.join(XVL_TASKS)} "
            "(report generation is MedViLL's: the X-VL fusion encoder has no decoder)"
        )
    return import_module(f"medvill.xvl.tasks.{task}")


def settings_class(task: str) -> type:
    return getattr(task_module(task), _SETTINGS[task])


__all__ = ["XVL_TASKS", "settings_class", "task_module"]
