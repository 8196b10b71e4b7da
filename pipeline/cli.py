"""``medvill-prep``: run one pipeline stage (or all of them) for one dataset, without DVC.

Each stage command is a thin wrapper around the stage module's ``run_stage`` function, so the
CLI, DVC and Python callers run exactly the same code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import __version__
from pipeline.console import add_app_options, fail, info, str_enum, user_errors
from pipeline.datasets import ADAPTERS, LOCALIZED_ADAPTERS
from pipeline.datasets.common import LayoutError
from pipeline.outputs import check_writable, run_owned
from pipeline.parallel import default_workers
from pipeline.params import DEFAULT_PARAMS, dataset_entries, dataset_paths, load_params
from pipeline.params_schema import validate_params

#: Stage name → module with ``run_stage(paths, params, workers) -> stats``, in pipeline order.
STAGES: dict[str, str] = {
    "ingest": "pipeline.datasets",
    "images": "pipeline.images",
    "localized": "pipeline.localized.stage",
    "sections": "pipeline.sections",
    "label": "pipeline.label",
    "split": "pipeline.splits",
    "pairs": "pipeline.pairs",
    "vqa": "pipeline.datasets.vqa_rad",
    "shards": "pipeline.shards",
}
#: A VQA-RAD release has questions, not reports: only the vqa stage applies (it runs the images
#: stage on the release's images itself).
VQA_ONLY_ADAPTER = "vqa_rad"
#: Detection / segmentation datasets have no reports: only these stages apply to them.
LOCALIZED_STAGES = ("ingest", "images", "localized", "split")
#: ``--adapter`` choices: the report and localized adapters plus the VQA-RAD release.
Adapter = str_enum("Adapter", (*ADAPTERS, VQA_ONLY_ADAPTER))

app = typer.Typer(
    name="medvill-prep",
    help=(
        "Prepare chest X-ray + report datasets for MedViLL-style pretraining.\n\n"
        "Stages, in order: " + " → ".join(STAGES) + ". Each reads the previous stage's "
        "records.parquet under data/interim/<dataset>/ and writes its own records, rejects, "
        "stats.json and timing.json. `all` runs every stage. All knobs are in params.yaml."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
add_app_options(app, "medvill-prep", __version__)

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset name from the `datasets` list in params.yaml (e.g. sample).",
    ),
]
RawOpt = Annotated[
    Path | None,
    typer.Option(help="Raw dataset root, overriding `raw` in params.yaml (e.g. data/raw/mimic)."),
]
AdapterOpt = Annotated[
    Adapter | None,  # type: ignore[valid-type]
    typer.Option(help="Adapter for a dataset not listed in params.yaml."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        help="Output root; stage outputs go to OUT/interim/<dataset>/, shards to "
        "OUT/shards/<dataset>/. Default: data/."
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        help="Worker processes for CPU-bound stages (images, sections, label, shards). "
        "Default: all cores."
    ),
]
ParamsOpt = Annotated[Path, typer.Option(help="Parameter file.")]


def run_stages(
    stages: list[str],
    dataset: str,
    raw: Path | None = None,
    adapter: str | Adapter | None = None,  # type: ignore[valid-type]
    out: Path | None = None,
    workers: int = 0,
    params_path: Path = DEFAULT_PARAMS,
) -> list[dict[str, Any]]:
    """Run ``stages`` in order for ``dataset``; returns each stage's stats."""
    params = load_params(params_path)
    if adapter is not None:
        adapter = getattr(adapter, "value", adapter)  # the Enum member from the CLI → its name
        entries = dataset_entries(params)
        entries[dataset] = {**entries.get(dataset, {}), "adapter": adapter, "raw": str(raw or "")}
        params = {**params, "datasets": entries}
    validate_params(params, params_path)
    paths = dataset_paths(params, dataset, raw=raw, out=out)
    check_writable(paths.interim)
    if paths.adapter == VQA_ONLY_ADAPTER:
        stages = [s for s in stages if s == "vqa"]
        if not stages:
            raise ValueError(
                f"dataset '{dataset}' is a VQA-RAD release: only `medvill-prep vqa` applies to it"
            )
    if paths.adapter in LOCALIZED_ADAPTERS:
        stages = [s for s in stages if s in LOCALIZED_STAGES]
        if not stages:
            raise ValueError(
                f"dataset '{dataset}' ({paths.adapter}) has boxes or masks, no reports: only "
                f"the {', '.join(LOCALIZED_STAGES)} stages apply to it"
            )
    n_workers = workers if workers > 0 else default_workers()
    results = []
    for stage in stages:
        module = importlib.import_module(STAGES[stage])
        stats = run_owned(stage, module.run_stage, paths, params, n_workers)
        results.append(stats)
        info(
            f"[bold green]{stage}[/] {dataset}: {stats['in']} in → {stats['out']} out, "
            f"{stats['rejected']} rejected  ({paths.stage_dir(stage)})"
        )
    return results


def _invoke(stages: list[str], **kwargs: Any) -> None:
    with user_errors(LayoutError, FileNotFoundError, ValueError):
        run_stages(stages, **kwargs)


def _stage_command(name: str, doc: str, stages: tuple[str, ...] | None = None) -> None:
    """Register command ``name`` running ``stages`` (default: the stage of that name)."""

    def command(
        dataset: DatasetOpt,
        raw: RawOpt = None,
        adapter: AdapterOpt = None,
        out: OutOpt = None,
        workers: WorkersOpt = 0,
        params: ParamsOpt = DEFAULT_PARAMS,
    ) -> None:
        _invoke(
            list(stages or (name,)),
            dataset=dataset,
            raw=raw,
            adapter=adapter,
            out=out,
            workers=workers,
            params_path=params,
        )

    command.__doc__ = doc
    app.command(name=name)(command)


_stage_command("ingest", "Read a raw dataset tree into records.parquet (one row per image).")
_stage_command(
    "images",
    "Cut uniform margins, resize the long side to images.output_size, pad to a square, "
    "write 8-bit grey.",
)
_stage_command(
    "localized",
    "Move each annotated box and mask (RSNA, SIIM-ACR, NIH boxes, Object-CXR, the synthetic "
    "corpus) through the images stage's crop, resize and pad; one row per annotation.",
)
_stage_command(
    "sections",
    "Split each report into sections and choose the text by sections.policy (default: longest "
    "of Findings/Impression, as MedViLL).",
)
_stage_command(
    "label", "Label the chosen text with the 14 CheXpert observations (1 / 0 / -1 / blank)."
)
_stage_command(
    "split",
    "Assign train/valid/test: the official split where the dataset has one, else a patient-level "
    "hash of (seed, patient_id). Localized datasets are split from their ingest records.",
)
_stage_command(
    "pairs",
    "Build MedViLL task files: Train/Valid/Test JSONL, IRM negatives, I2T/T2I retrieval blocks "
    "of pairs.retrieval_candidates, R2Gen annotation.json.",
)
_stage_command(
    "vqa",
    "VQA files in the MEVF data_RAD layout (JSON, no pickles): the VQA-RAD release for adapter "
    "vqa_rad (images through the images stage), else a synthetic closed/open set from labels.",
)
_stage_command("shards", "Write WebDataset tar shards per split plus a shard index JSON.")


@app.command(name="label-reports")
def label_reports_command(
    reports_csv: Annotated[
        Path,
        typer.Argument(
            help="Headerless one-column CSV of reports, as for the original chexpert-labeler "
            "(label.py --reports_path)."
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output CSV: Reports + 14 CheXpert columns.")
    ] = Path("labeled_reports.csv"),
    workers: WorkersOpt = 0,
    sections_to_extract: Annotated[
        list[str] | None,
        typer.Option(
            "--sections-to-extract",
            help="Only label these sections (lower-case titles, e.g. impression); repeatable.",
        ),
    ] = None,
    extract_strict: Annotated[
        bool,
        typer.Option(
            "--extract-strict/--no-extract-strict",
            help="With --sections-to-extract: a report without those sections becomes empty "
            "(No Finding = 1) instead of falling back to the whole report.",
        ),
    ] = False,
) -> None:
    """Label a CSV of reports with the offline CheXpert labeler (drop-in for label.py).

    Output values are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) and blank (not
    mentioned), in the original labeler's column order.
    """
    from pipeline.labeler import label_reports_csv

    if not reports_csv.is_file():
        fail(f"{reports_csv} not found")
    count = label_reports_csv(
        reports_csv,
        output,
        workers=workers if workers > 0 else default_workers(),
        sections_to_extract=tuple(sections_to_extract or ()),
        extract_strict=extract_strict,
    )
    info(f"labelled {count} reports → {output}")


_stage_command("all", "Run every stage in order for one dataset.", tuple(STAGES))


@app.command(name="synthesize")
def synthesize_command(
    out: Annotated[
        Path, typer.Option(help="Corpus root to write (adapter `synthetic` reads it).")
    ] = Path("data/raw/synthetic"),
    n_images: Annotated[
        int | None, typer.Option(help="Images to generate. Default: synthetic.n_images.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed. Default: synthetic.seed.")] = None,
    score: Annotated[
        bool,
        typer.Option(help="Also label the reports and print the labeler's F1 vs ground truth."),
    ] = False,
    workers: WorkersOpt = 0,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Generate the learnable synthetic chest X-ray corpus (images, reports, labels, VQA).

    Then: medvill-prep all --dataset synthetic --adapter synthetic --raw OUT
    """
    from pipeline.synthetic.writer import CorpusConfig, write_corpus

    n_workers = workers if workers > 0 else default_workers()
    with user_errors(FileNotFoundError, ValueError):
        config = CorpusConfig.from_params(load_params(params), n_images=n_images, seed=seed)
        summary = write_corpus(out, config, workers=n_workers)
    info(
        f"synthetic corpus → {out}: {summary['images']} images, {summary['studies']} studies, "
        f"{summary['patients']} patients, {summary['questions']} VQA questions"
    )
    if score:
        from pipeline.synthetic.score import score_corpus

        result = score_corpus(out, workers=n_workers)
        info(
            f"labeler vs ground truth ({result.reports} reports): F1 {result.f1:.4f} "
            f"(precision {result.precision:.4f}, recall {result.recall:.4f}), "
            f"exact match {result.exact_match:.4f}"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
