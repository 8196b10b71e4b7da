"""The schema of the pipeline's part of ``params.yaml``, checked before any stage runs.

Why: a typo found by the last stage costs an hour of decoding, and a wrong type can pass
silently (``ingest.views: AP`` iterates as the views ``A`` and ``P``). Every value of every
pipeline block is checked up front — type, range, allowed values, unknown keys — and every
problem is listed with its key path (``images.output_size: expected an integer ≥ 64, got
'abc'``). The model blocks (``tokenizer``, ``pretrain``, ``finetune``, ``evaluate``) belong to
``medvill`` and are not checked here.

The schema is declarative: a few small spec types (:class:`Int`, :class:`Float`, :class:`Bool`,
:class:`Str`, :class:`ListOf`, :class:`Nullable`, :class:`Block`, :class:`MapOf`) composed into
:data:`PIPELINE_SCHEMA`. Defaults stay where the stages define them; a missing key is fine.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.datasets import ADAPTERS
from pipeline.imaging.resize import FORMATS, INTERPOLATIONS
from pipeline.label import BACKENDS
from pipeline.params import ParamsError
from pipeline.sections import POLICIES
from pipeline.splits import SPLITS

__all__ = ["PIPELINE_SCHEMA", "ParamsError", "validate_params"]


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, dict | list) else type(value).__name__


class Spec(ABC):
    """One expected value; ``problems`` returns messages prefixed with the key path."""

    @abstractmethod
    def describe(self) -> str:
        """What a valid value looks like, as the error message says it."""

    @abstractmethod
    def problems(self, value: Any, where: str) -> list[str]:
        """Every problem of ``value`` at key path ``where``; empty when it is valid."""

    def _expected(self, value: Any, where: str) -> list[str]:
        return [f"{where}: expected {self.describe()}, got {_shown(value)}"]


def _bounds(low: float | None, high: float | None, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"≥ {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '≤'} {high:g}")
    return " and ".join(parts)


@dataclass(frozen=True)
class Int(Spec):
    """An integer (YAML ``true`` is not one) within optional bounds."""

    low: int | None = None
    high: int | None = None

    def describe(self) -> str:
        bounds = _bounds(self.low, self.high, False)
        return f"an integer {bounds}".rstrip()

    def problems(self, value: Any, where: str) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int):
            return self._expected(value, where)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return self._expected(value, where)
        return []


@dataclass(frozen=True)
class Float(Spec):
    """A finite number (integers accepted) within optional bounds."""

    low: float | None = None
    high: float | None = None
    high_open: bool = False

    def describe(self) -> str:
        return f"a number {_bounds(self.low, self.high, self.high_open)}".rstrip()

    def problems(self, value: Any, where: str) -> list[str]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self._expected(value, where)
        number = float(value)
        too_high = self.high is not None and (
            number >= self.high if self.high_open else number > self.high
        )
        if not math.isfinite(number) or (self.low is not None and number < self.low) or too_high:
            return self._expected(value, where)
        return []


@dataclass(frozen=True)
class Bool(Spec):
    def describe(self) -> str:
        return "true or false"

    def problems(self, value: Any, where: str) -> list[str]:
        return [] if isinstance(value, bool) else self._expected(value, where)


@dataclass(frozen=True)
class Str(Spec):
    """A string, optionally one of ``choices`` or matching ``pattern``."""

    choices: tuple[str, ...] = ()
    pattern: str = ""
    nonempty: bool = False

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern:
            return f"a string matching {self.pattern}"
        return "a non-empty string" if self.nonempty else "a string"

    def problems(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, str):
            return self._expected(value, where)
        if self.choices and value not in self.choices:
            return self._expected(value, where)
        if self.pattern and not re.fullmatch(self.pattern, value):
            return self._expected(value, where)
        if self.nonempty and not value.strip():
            return self._expected(value, where)
        return []


@dataclass(frozen=True)
class Nullable(Spec):
    inner: Spec

    def describe(self) -> str:
        return f"{self.inner.describe()}, or null"

    def problems(self, value: Any, where: str) -> list[str]:
        return [] if value is None else self.inner.problems(value, where)


@dataclass(frozen=True)
class ListOf(Spec):
    """A YAML list; a bare string is refused (it is not a list of its characters)."""

    item: Spec

    def describe(self) -> str:
        return f"a list of {self.item.describe()} (e.g. [AP, PA])"

    def problems(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list):
            return self._expected(value, where)
        found: list[str] = []
        for index, item in enumerate(value):
            found += self.item.problems(item, f"{where}[{index}]")
        return found


@dataclass(frozen=True)
class BoolOrNames(Spec):
    """``true``/``false`` for every dataset, or a list of the dataset names it applies to."""

    def describe(self) -> str:
        return "true, false or a list of dataset names (e.g. [sample])"

    def problems(self, value: Any, where: str) -> list[str]:
        if isinstance(value, bool):
            return []
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return []
        return self._expected(value, where)


@dataclass(frozen=True)
class Block(Spec):
    """A mapping with known keys; unknown keys are typos and are refused."""

    fields: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    extra_check: Any = None  # Callable[[dict, str], list[str]] for cross-field rules

    def describe(self) -> str:
        return "a mapping with keys " + ", ".join(self.fields)

    def problems(self, value: Any, where: str) -> list[str]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return self._expected(value, where)
        found: list[str] = []
        for key in self.required:
            if key not in value:
                found.append(f"{where}.{key}: required key missing")
        for key, item in value.items():
            spec = self.fields.get(str(key))
            if spec is None:
                known = ", ".join(self.fields)
                found.append(f"{where}.{key}: unknown key (known: {known})")
            else:
                found += spec.problems(item, f"{where}.{key}")
        if not found and self.extra_check is not None:
            found += self.extra_check(value, where)
        return found


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping from names matching ``key_pattern`` to values of one spec."""

    value: Spec
    key_pattern: str = r"[A-Za-z0-9_-]+"
    key_hint: str = ""

    def describe(self) -> str:
        return f"a mapping of names to {self.value.describe()}"

    def problems(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, dict):
            return self._expected(value, where)
        found: list[str] = []
        for key, item in value.items():
            if not isinstance(key, str) or not re.fullmatch(self.key_pattern, key):
                found.append(
                    f"{where}: name {key!r} must match {self.key_pattern} {self.key_hint}".rstrip()
                )
            found += self.value.problems(item, f"{where}.{key}")
        return found


def _ratios_sum(value: dict[str, Any], where: str) -> list[str]:
    total = sum(float(value.get(name, 0.0)) for name in SPLITS)
    if abs(total - 1.0) > 1e-6:
        return [f"{where}: ratios must sum to 1, got {total:g}"]
    return []


def _dark_below_bright(value: dict[str, Any], where: str) -> list[str]:
    dark, bright = value.get("dark", 40), value.get("bright", 235)
    return [] if dark < bright else [f"{where}: dark ({dark}) must be below bright ({bright})"]


_FRACTION = Float(0.0, 1.0)
_DATASET = Block(
    {
        "adapter": Str(choices=(*ADAPTERS, "vqa_rad")),
        "raw": Str(nonempty=True),
        "views": ListOf(Str(nonempty=True)),
    },
    required=("adapter", "raw"),
)

#: Every pipeline block of params.yaml and what its values may be.
PIPELINE_SCHEMA: dict[str, Spec] = {
    "datasets": MapOf(_DATASET, key_hint="(it becomes part of file names and sample keys)"),
    "paths": Block({"data": Str(nonempty=True)}),
    "ingest": Block({"views": ListOf(Str(nonempty=True))}),
    "images": Block(
        {
            "output_size": Int(64, 8192),
            "format": Str(choices=FORMATS),
            "jpeg_quality": Int(1, 100),
            "interpolation": Str(choices=tuple(INTERPOLATIONS)),
            "reducing_gap": Nullable(Float(1.0)),
            "pad_value": Int(0, 255),
            "min_side": Int(1),
            "margin": Block(
                {
                    "max_std": Float(0.0),
                    "dark": Int(0, 255),
                    "bright": Int(0, 255),
                    "min_fill": _FRACTION,
                    "gap": _FRACTION,
                    "max_fraction": Float(0.0, 0.5, high_open=True),
                },
                extra_check=_dark_below_bright,
            ),
            "fast_decode": Bool(),
            "decode_oversample": Float(1.0),
            "montage_count": Int(0),
            "max_pixels": Int(1),
        }
    ),
    "sections": Block({"policy": Str(choices=POLICIES), "fallback_full_report": Bool()}),
    "label": Block(
        {
            "backend": Str(choices=BACKENDS),
            "text": Str(choices=("chosen", "full")),
            "csv_path": Str(),
            "csv_key": Str(nonempty=True),
            "batch_size": Int(1),
        }
    ),
    "split": Block(
        {
            "use_official": Bool(),
            "seed": Int(0),
            "ratios": Block({name: _FRACTION for name in SPLITS}, extra_check=_ratios_sum),
        }
    ),
    "pairs": Block(
        {
            "seed": Int(0),
            "unit": Str(choices=("auto", "study", "image")),
            "style": Str(choices=("auto", "mimic", "openi")),
            "image_root": Str(nonempty=True),
            "irm_negatives_k": Int(1),
            "retrieval_candidates": Int(2),
        }
    ),
    "vqa": Block(
        {
            "json": Str(),
            "image_dir": Str(),
            "image_root": Str(nonempty=True),
            "synthetic_for_reports": BoolOrNames(),
        }
    ),
    "shards": Block({"samples_per_shard": Int(1)}),
    "localized": Block({"mask_threshold": Float(0.01, 1.0)}),
}


def validate_params(params: dict[str, Any], source: Path | str) -> None:
    """Raise ParamsError listing every problem of the pipeline blocks, one per line.

    A missing or empty ``datasets`` block is a problem of its own: no stage can run without
    knowing where a dataset is (``--adapter`` and ``--raw`` add an entry before this check).
    """
    found: list[str] = []
    if not params.get("datasets"):
        found.append(
            "datasets: block missing or empty; list each dataset as "
            "`datasets: {NAME: {adapter: sample|mimic_cxr|openi|vqa_rad, raw: PATH}}` "
            "or pass --adapter and --raw"
        )
    for name, spec in PIPELINE_SCHEMA.items():
        if name in params and not (name == "datasets" and not params[name]):
            found += spec.problems(params[name], name)
    if found:
        listing = "\n  ".join(found)
        raise ParamsError(f"{source}: {len(found)} invalid value(s):\n  {listing}")
