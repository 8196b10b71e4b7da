"""``medvill``: the model commands (typer). Each is also a DVC stage and a Python function."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from medvill.config import MASK_TYPES, load_params, profile_section

app = typer.Typer(help="MedViLL model: tokenizer and pretraining.", no_args_is_help=True)

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
