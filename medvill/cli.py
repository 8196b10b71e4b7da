"""``medvill``: the model commands (typer). Each is also a DVC stage and a Python function."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from medvill.config import MASK_TYPES, load_params, profile_section

app = typer.Typer(
    help="MedViLL model: tokenizer, pretraining, downstream fine-tuning and evaluation.",
    no_args_is_help=True,
)

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset name: reads data/shards/<dataset>/.")
]
ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml with the tokenizer/pretrain blocks.")
]
RootOpt = Annotated[
    Path, typer.Option("--root", help="Project root that data/ and models/ are in.")
]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def tokenizer(
    dataset: DatasetOpt,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    verbose: Annotated[bool, typer.Option("--verbose", help="Debug logging.")] = False,
) -> None:
    """Save the configured pretrained tokenizer (tokenizer.pretrained), or train a WordPiece
    vocabulary on the training-split reports when it is unavailable offline.
    Writes models/<dataset>/tokenizer/."""
    from medvill.tokenizer import build_tokenizer

    _logging(verbose)
    settings = load_params(root / params).get("tokenizer", {})
    index = root / "data" / "shards" / dataset / "index.json"
    _, origin = build_tokenizer(index, root / "models" / dataset / "tokenizer", settings)
    typer.echo(f"tokenizer: {origin}")


@app.command()
def pretrain(
    dataset: DatasetOpt,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="pretrain.profiles entry: demo or paper.")
    ] = "demo",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from the newest checkpoint in models/<dataset>/pretrain/checkpoints.",
        ),
    ] = False,
    mask: Annotated[
        str | None,
        typer.Option(
            "--mask", help=f"Override the attention mask: one of {', '.join(MASK_TYPES)}."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    verbose: Annotated[bool, typer.Option("--verbose", help="Debug logging.")] = False,
) -> None:
    """MLM + IRM pretraining from the train shards. Multi-GPU/multi-node: launch with
    `torchrun --nproc_per_node N -m medvill.cli pretrain ...` (DDP is picked up from torchrun's
    environment). Writes checkpoints, final/, metrics.csv, metrics.json and loss.png under
    models/<dataset>/pretrain/."""
    from medvill.pretrain import Paths
    from medvill.pretrain import pretrain as run

    _logging(verbose)
    if mask is not None and mask not in MASK_TYPES:
        raise typer.BadParameter(f"--mask must be one of {MASK_TYPES}")
    section = profile_section(load_params(root / params), profile)
    summary = run(section, Paths.for_dataset(dataset, root), resume=resume, mask_type=mask)
    if summary:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))


TaskArg = Annotated[str, typer.Argument(help="classification | retrieval | vqa | generation")]


def _finetune_profile(params: dict, profile: str, task: str) -> dict:
    from medvill.tasks.common import finetune_section

    return finetune_section(params, profile, task)


@app.command()
def finetune(
    task: TaskArg,
    dataset: DatasetOpt,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="finetune.profiles entry: demo or paper.")
    ] = "demo",
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained", help="Pretraining checkpoint (default models/<dataset>/pretrain/final)."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    verbose: Annotated[bool, typer.Option("--verbose", help="Debug logging.")] = False,
) -> None:
    """Fine-tune one downstream task from the pretrained checkpoint; writes
    models/<dataset>/<task>/final/ (safetensors, tokenizer, task.json, train.json)."""
    from medvill.tasks import settings_class, task_module
    from medvill.tasks.common import TaskPaths

    _logging(verbose)
    module = task_module(task)
    section = _finetune_profile(load_params(root / params), profile, task)
    settings = settings_class(task).from_dict(section)
    info = module.finetune(TaskPaths(root, dataset), settings, pretrained)
    typer.echo(json.dumps({k: v for k, v in info.items() if k != "answers"}, indent=2,
                          sort_keys=True))  # fmt: skip


@app.command()
def evaluate(
    task: TaskArg,
    dataset: DatasetOpt,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="Fine-tuned model (default models/<dataset>/<task>/final)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default reports/<dataset>/<task>)."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    verbose: Annotated[bool, typer.Option("--verbose", help="Debug logging.")] = False,
) -> None:
    """Evaluate a fine-tuned model on evaluate.split with evaluate.bootstrap resamples; writes
    metrics.json, predictions.json and PNG plots (`medvill summary` then rebuilds
    reports/summary.md; it is its own DVC stage, so evaluate never writes it)."""
    from medvill.tasks import task_module
    from medvill.tasks.common import EvalSettings, TaskPaths

    _logging(verbose)
    settings = EvalSettings.from_params(load_params(root / params))
    doc = task_module(task).evaluate(TaskPaths(root, dataset), settings, checkpoint, out)
    typer.echo(json.dumps({"metrics": doc["metrics"],
                           "inference_ms_per_sample": doc["inference_ms_per_sample"]},
                          indent=2, sort_keys=True))  # fmt: skip


@app.command()
def compare(
    task: TaskArg,
    a: Annotated[Path, typer.Argument(help="Evaluation folder A (has predictions.json).")],
    b: Annotated[Path, typer.Argument(help="Evaluation folder B (same split as A).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the comparison JSON here too.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Compare two checkpoints' evaluations (`medvill evaluate --checkpoint X --out A`): same
    bootstrap resamples for both, difference B − A with its interval, bootstrap p-value, the
    paper's independent t-test over the resample values and the paired t-test."""
    from medvill.report import compare as run
    from medvill.tasks.common import EvalSettings, write_json

    settings = EvalSettings.from_params(load_params(root / params))
    result = run(task, a, b, settings.bootstrap, settings.seed, settings.confidence)
    if out is not None:
        write_json(result, out)
    typer.echo(json.dumps(result["metrics"], indent=2, sort_keys=True))


@app.command()
def summary(root: RootOpt = Path(".")) -> None:
    """Regenerate reports/summary.md from every reports/<dataset>/<task>/metrics.json."""
    from medvill.report import write_summary

    typer.echo(str(write_summary(root)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
