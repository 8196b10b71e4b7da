"""Read ``params.yaml`` and resolve one dataset's paths.

Every knob of the pipeline lives in ``params.yaml`` so that DVC can track it; code never
hard-codes a value that a researcher might want to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """params.yaml cannot be read or holds invalid values; the message names file and key."""


def load_params(path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The parsed params file; a YAML syntax error names the file, line and column."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run medvill-prep from the project root or pass --params."
        )
    try:
        with path.open(encoding="utf-8") as handle:
            params = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else f"{path}"
        problem = getattr(error, "problem", None) or str(error)
        raise ParamsError(f"{where}: YAML syntax error: {problem}") from error
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path}: not UTF-8 text (byte {error.start})") from error
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return params


@dataclass(frozen=True)
class DatasetPaths:
    """Where one dataset's raw files are and where its stage outputs go."""

    name: str
    adapter: str
    raw: Path
    interim: Path
    shards: Path

    def stage_dir(self, stage: str) -> Path:
        return self.interim / stage


def dataset_entries(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``datasets`` mapping of params.yaml: name → {adapter, raw, [views]}.

    A mapping (not a list) so that DVC's ``foreach`` names stages ``images@<name>``.
    """
    entries = params.get("datasets") or {}
    if not isinstance(entries, dict):
        raise ValueError("params.yaml: `datasets` must map dataset names to {adapter, raw}")
    return {str(name): dict(entry or {}) for name, entry in entries.items()}


def dataset_paths(
    params: dict[str, Any],
    name: str,
    raw: Path | None = None,
    out: Path | None = None,
) -> DatasetPaths:
    """Resolve dataset ``name`` from the ``datasets`` list of params.yaml.

    ``raw`` and ``out`` override the configured raw root and the ``data/`` output root, so the
    same stages run on a dataset that is not (yet) listed in params.yaml.
    """
    entries = dataset_entries(params)
    entry = entries.get(name, {"adapter": name})
    if name not in entries and raw is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ValueError(
            f"dataset '{name}' is not listed under 'datasets' in params.yaml (listed: {known}); "
            "add it there or pass --raw and --adapter."
        )
    out_root = out if out is not None else Path(params.get("paths", {}).get("data", "data"))
    return DatasetPaths(
        name=name,
        adapter=entry.get("adapter", name),
        raw=raw if raw is not None else Path(entry["raw"]),
        interim=out_root / "interim" / name,
        shards=out_root / "shards" / name,
    )
