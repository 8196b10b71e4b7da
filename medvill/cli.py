"""``medvill``: the model commands (typer). Each is also a DVC stage and a Python function.

Logging, errors, ``--verbose/--quiet`` and ``--version`` look and work as in ``medvill-prep``
(:mod:`pipeline.console`). Choices are ``str`` Enums, so ``--help`` lists them and a typo is
rejected with the list before any model code is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medvill import __version__
from medvill.config import MASK_TYPES, load_params, profile_section
from medvill.families import FAMILY_NAMES
from pipeline.console import add_app_options, info, str_enum, user_errors

#: The downstream tasks (medvill.tasks.TASKS, which imports torch; a test keeps them equal).
TASK_NAMES: tuple[str, ...] = ("classification", "retrieval", "vqa", "generation")
#: The profiles params.yaml defines under pretrain.profiles and finetune.profiles (tested).
PROFILE_NAMES: tuple[str, ...] = ("demo", "learn", "paper")
Task = str_enum("Task", TASK_NAMES)
Mask = str_enum("Mask", MASK_TYPES)
Profile = str_enum("Profile", PROFILE_NAMES)
Family = str_enum("Family", FAMILY_NAMES)
#: What a command reports as ``error: …`` (exit 2) instead of a traceback: missing inputs,
#: bad values, unknown names. ``--verbose`` logs the traceback too.
USER_ERRORS = (FileNotFoundError, ValueError, KeyError)

app = typer.Typer(
    name="medvill",
    help="MedViLL model: tokenizer, pretraining, downstream fine-tuning and evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
add_app_options(app, "medvill", __version__)

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset name: reads data/shards/<dataset>/.")
]
ParamsOpt = Annotated[
    Path, typer.Option("--params", help="params.yaml with the tokenizer/pretrain blocks.")
]
RootOpt = Annotated[
    Path, typer.Option("--root", help="Project root that data/ and models/ are in.")
]
TaskArg = Annotated[Task, typer.Argument(help="Downstream task.", show_default=False)]  # type: ignore[valid-type]
#: The arms of the attention-mask ablation (medvill.ablation.ABLATION_MASKS; tested equal).
ABLATION_MASKS: tuple[str, ...] = ("bar", "bi_s2s", "bi", "s2s", "noncross")
AblationMask = str_enum("AblationMask", ABLATION_MASKS)
AblationOpt = Annotated[
    AblationMask | None,  # type: ignore[valid-type]
    typer.Option(
        "--ablation",
        help="Run this arm of the attention-mask ablation: pretraining with this mask, under "
        "models/<dataset>/ablation/<mask>/ and reports/<dataset>/ablation/<mask>/; the "
        "profile defaults to ablation.pretrain_profile / ablation.finetune_profile.",
    ),
]


#: Families with fine-tuned downstream tasks (`medvill finetune/evaluate --model`).
TASK_MODELS: tuple[str, ...] = ("medvill", "xvl")
TaskModel = str_enum("TaskModel", TASK_MODELS)
TaskModelOpt = Annotated[
    TaskModel,  # type: ignore[valid-type]
    typer.Option(
        "--model",
        "-m",
        help="Model family: medvill (finetune.profiles, models/<dataset>/<task>/) or xvl "
        "(finetune.families.xvl.profiles, from models/<dataset>/pretrain-xvl/final into "
        "models/<dataset>/xvl/<task>/ and reports/<dataset>/xvl/<task>/; classification, "
        "retrieval and vqa).",
    ),
]


def _xvl_task(task: str, ablation: Any) -> Any:
    """The X-VL module of ``task`` (an error for generation or with --ablation)."""
    from medvill.xvl.tasks import task_module

    if ablation is not None:
        raise ValueError("--ablation compares MedViLL's attention masks; X-VL has none")
    return task_module(task)


def _profile(
    params: dict[str, Any],
    block: str,
    chosen: Profile | None,  # type: ignore[valid-type]
    ablation: bool = False,
) -> str:
    """--profile, else (for an ablation arm) ``ablation.<block>_profile``, else
    ``<block>.profile`` in params.yaml (what DVC runs), else demo."""
    if chosen is not None:
        return str(chosen.value)
    if ablation and params.get("ablation", {}).get(f"{block}_profile"):
        return str(params["ablation"][f"{block}_profile"])
    return str(params.get(block, {}).get("profile") or "demo")


def _task_paths(root: Path, dataset: str, ablation: Any) -> Any:
    """The dataset's task folders, or one ablation arm's."""
    from medvill.tasks.common import TaskPaths

    if ablation is None:
        return TaskPaths(root, dataset)
    from medvill.ablation import task_paths

    return task_paths(dataset, str(ablation.value), root)


@app.command()
def tokenizer(
    dataset: DatasetOpt,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Save the configured pretrained tokenizer (tokenizer.pretrained), or train a WordPiece
    vocabulary on the training-split reports when it is unavailable offline.
    Writes models/<dataset>/tokenizer/."""
    from medvill.tokenizer import build_tokenizer

    with user_errors(*USER_ERRORS):
        settings = load_params(root / params).get("tokenizer", {})
        index = root / "data" / "shards" / dataset / "index.json"
        _, origin = build_tokenizer(index, root / "models" / dataset / "tokenizer", settings)
    info(f"tokenizer: {origin}")


@app.command()
def pretrain(
    dataset: DatasetOpt,
    profile: Annotated[
        Profile | None,  # type: ignore[valid-type]
        typer.Option("--profile", "-p", help="pretrain.profiles entry. Default: pretrain.profile."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from the newest checkpoint in models/<dataset>/pretrain/checkpoints.",
        ),
    ] = False,
    model: Annotated[
        Family,  # type: ignore[valid-type]
        typer.Option(
            "--model",
            "-m",
            help="Model family (medvill.families). Profiles: pretrain.profiles for medvill, "
            "pretrain.families.<model>.profiles for the others; output: "
            "models/<dataset>/pretrain (medvill) or models/<dataset>/pretrain-<model>.",
        ),
    ] = "medvill",  # type: ignore[assignment]
    mask: Annotated[
        Mask | None,  # type: ignore[valid-type]
        typer.Option("--mask", help="Override the profile's attention mask (medvill)."),
    ] = None,
    allow_random_init: Annotated[
        bool,
        typer.Option(
            "--allow-random-init",
            help="Start even when a require_pretrained profile's BERT/ImageNet weights are "
            "missing (random initialisation).",
        ),
    ] = False,
    ablation: AblationOpt = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Pretraining from the train shards (MedViLL's MLM + IRM by default; --model picks another
    family). Multi-GPU/multi-node: launch with
    `torchrun --nproc_per_node N -m medvill.cli pretrain ...` (DDP is picked up from torchrun's
    environment). Writes checkpoints, final/, metrics.csv, metrics.json and loss.png under
    models/<dataset>/pretrain/ (pretrain-<model>/ for the other families)."""
    from medvill.pretrain import Paths
    from medvill.pretrain import pretrain as run

    family = str(getattr(model, "value", model))
    with user_errors(*USER_ERRORS):
        if mask is not None and family != "medvill":
            raise ValueError(f"--mask applies to medvill only, not to {family}")
        values = load_params(root / params)
        section = profile_section(
            values, _profile(values, "pretrain", profile, ablation is not None), family
        )
        mask_type = None if mask is None else str(mask.value)
        paths = Paths.for_dataset(dataset, root, family)
        if ablation is not None:
            from medvill.ablation import pretrain_paths

            if family != "medvill":
                raise ValueError(f"--ablation compares MedViLL's attention masks, not {family}'s")
            if mask_type not in (None, str(ablation.value)):
                raise ValueError(f"--mask {mask_type} contradicts --ablation {ablation.value}")
            mask_type = str(ablation.value)
            paths = pretrain_paths(dataset, mask_type, root)
        summary = run(section, paths, resume=resume,
                      mask_type=mask_type, allow_random_init=allow_random_init,
                      model=family)  # fmt: skip
    if summary:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))


def _finetune_profile(params: dict, profile: str, task: str) -> dict:
    from medvill.tasks.common import finetune_section

    return finetune_section(params, profile, task)


@app.command()
def finetune(
    task: TaskArg,
    dataset: DatasetOpt,
    profile: Annotated[
        Profile | None,  # type: ignore[valid-type]
        typer.Option("--profile", "-p", help="finetune.profiles entry. Default: finetune.profile."),
    ] = None,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained", help="Pretraining checkpoint (default models/<dataset>/pretrain/final)."
        ),
    ] = None,
    ablation: AblationOpt = None,
    model: TaskModelOpt = "medvill",  # type: ignore[assignment]
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Fine-tune one downstream task from the pretrained checkpoint; writes
    models/<dataset>/<task>/final/ (safetensors, tokenizer, task.json, train.json);
    --model xvl: models/<dataset>/xvl/<task>/final/."""
    from medvill.tasks import settings_class, task_module

    name = str(task.value)
    with user_errors(*USER_ERRORS):
        values = load_params(root / params)
        chosen = _profile(values, "finetune", profile, ablation is not None)
        if str(getattr(model, "value", model)) == "xvl":
            from medvill.xvl.tasks import settings_class as xvl_settings
            from medvill.xvl.tasks.common import XVLTaskPaths, finetune_section

            module = _xvl_task(name, ablation)
            settings = xvl_settings(name).from_dict(finetune_section(values, chosen, name))
            result = module.finetune(XVLTaskPaths(root, dataset), settings, pretrained)
            typer.echo(json.dumps({k: v for k, v in result.items() if k != "answers"},
                                  indent=2, sort_keys=True))  # fmt: skip
            return
        settings = settings_class(name).from_dict(_finetune_profile(values, chosen, name))
        paths = _task_paths(root, dataset, ablation)
        if ablation is not None:
            from medvill.ablation import require_arm_checkpoint

            pretrained = require_arm_checkpoint(pretrained or paths.pretrained, ablation.value)
        result = task_module(name).finetune(paths, settings, pretrained)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "answers"}, indent=2,
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
    ablation: AblationOpt = None,
    model: TaskModelOpt = "medvill",  # type: ignore[assignment]
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Evaluate a fine-tuned model on evaluate.split: mean ± std over evaluate.bootstrap
    resamples, interval over evaluate.bootstrap_ci_resamples; writes metrics.json,
    predictions.json and plots/ (curves as JSON/CSV, PNGs) into reports/<dataset>/<task>/
    (--model xvl: reports/<dataset>/xvl/<task>/). `medvill summary` then rebuilds
    reports/summary.md (its own DVC stage, so evaluate never writes it)."""
    from medvill.tasks import task_module
    from medvill.tasks.common import EvalSettings

    with user_errors(*USER_ERRORS):
        settings = EvalSettings.from_params(load_params(root / params))
        if str(getattr(model, "value", model)) == "xvl":
            from medvill.xvl.tasks.common import XVLTaskPaths

            module = _xvl_task(str(task.value), ablation)
            paths = XVLTaskPaths(root, dataset)
        else:
            module, paths = task_module(str(task.value)), _task_paths(root, dataset, ablation)
        doc = module.evaluate(paths, settings, checkpoint, out)
    typer.echo(json.dumps({"metrics": doc["metrics"],
                           "inference_ms_per_sample": doc["inference_ms_per_sample"]},
                          indent=2, sort_keys=True))  # fmt: skip


@app.command("evaluate-zoo")
def evaluate_zoo(
    dataset: DatasetOpt,
    model: Annotated[
        Family,  # type: ignore[valid-type]
        typer.Option("--model", "-m", help="Contrastive family to evaluate (convirt, clip, lovt)."),
    ],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Pretraining model (default models/<dataset>/pretrain-<model>/final).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default reports/<dataset>/zoo-<model>)."),
    ] = None,
    finetuned: Annotated[
        Path | None,
        typer.Option(
            "--finetuned",
            help="Fine-tuned retrieval model (`medvill finetune-zoo`). Default "
            "models/<dataset>/retrieval-<model>/final when it exists; --zero-shot-only skips it.",
        ),
    ] = None,
    zero_shot_only: Annotated[
        bool, typer.Option("--zero-shot-only", help="Do not score a fine-tuned model.")
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Zero-shot and fine-tuned image-report retrieval (the 100-candidate blocks) and a linear
    probe of the frozen image encoder (14 CheXpert labels, AUROC) for a contrastive family, with
    the tasks' bootstrap; writes metrics.json and predictions.json. MedViLL itself is evaluated
    by `medvill evaluate <task>`; `medvill summary` puts all families in one table."""
    from medvill.contrastive.evaluate import evaluate as run
    from medvill.contrastive.finetune import finetune_folder
    from medvill.tasks.common import EvalSettings, TaskPaths

    family = _contrastive_family(model)
    with user_errors(*USER_ERRORS):
        if zero_shot_only and finetuned is not None:
            raise ValueError("--finetuned and --zero-shot-only contradict each other")
        default = root / "models" / dataset / finetune_folder(family) / "final"
        if finetuned is None and not zero_shot_only:
            if default.is_dir():
                finetuned = default
            else:
                info(f"no fine-tuned model at {default}: zero-shot retrieval only "
                     f"(`medvill finetune-zoo --model {family} --dataset {dataset}`)")  # fmt: skip
        settings = EvalSettings.from_params(load_params(root / params))
        doc = run(family, TaskPaths(root, dataset), settings, checkpoint, out,
                  finetuned=finetuned)  # fmt: skip
    typer.echo(json.dumps({"metrics": doc["metrics"],
                           "inference_ms_per_sample": doc["inference_ms_per_sample"]},
                          indent=2, sort_keys=True))  # fmt: skip


def _contrastive_family(model: Any) -> str:
    """The family name of ``--model``, refused unless it is a contrastive family."""
    family = str(getattr(model, "value", model))
    with user_errors(*USER_ERRORS):
        if family == "medvill":
            raise ValueError("medvill is evaluated per task: `medvill evaluate <task>` "
                             "(fine-tuned by `medvill finetune <task>`)")  # fmt: skip
        if family == "xvl":
            raise ValueError("xvl's zero-shot retrieval is `medvill zeroshot --model xvl`")
    return family


@app.command("finetune-zoo")
def finetune_zoo(
    dataset: DatasetOpt,
    model: Annotated[
        Family,  # type: ignore[valid-type]
        typer.Option(
            "--model", "-m", help="Contrastive family to fine-tune (convirt, clip, lovt)."
        ),
    ],
    profile: Annotated[
        Profile | None,  # type: ignore[valid-type]
        typer.Option(
            "--profile",
            "-p",
            help="pretrain.families.<model>.profiles entry whose finetune block sets the budget. "
            "Default: pretrain.profile.",
        ),
    ] = None,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained",
            help="Pretraining checkpoint (default models/<dataset>/pretrain-<model>/final).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--no-resume", help="Continue from the newest checkpoint of this fine-tuning."
        ),
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Fine-tune a contrastive family's encoders for image-report retrieval: its own
    contrastive loss on the train split, whole reports as text, from the pretrained checkpoint,
    for the budget of the profile's finetune block (DDP with torchrun as pretraining). Writes
    models/<dataset>/retrieval-<model>/; `medvill evaluate-zoo` then scores it on the same
    blocks as the zero-shot path."""
    from medvill.contrastive.finetune import finetune as run

    family = _contrastive_family(model)
    with user_errors(*USER_ERRORS):
        values = load_params(root / params)
        section = profile_section(values, _profile(values, "pretrain", profile), family)
        summary = run(family, section, root, dataset, pretrained, resume)
    if summary:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))


#: Families with a ResNet image encoder that `medvill localized-eval` reads, and its tasks
#: (medvill.localized.experiment.LOCALIZED_TASKS; tested equal).
LOCALIZED_MODELS: tuple[str, ...] = ("medvill", "convirt", "clip", "lovt")
LOCALIZED_TASKS: tuple[str, ...] = ("detection", "segmentation")
LocalizedModel = str_enum("LocalizedModel", LOCALIZED_MODELS)
LocalizedTask = str_enum("LocalizedTask", LOCALIZED_TASKS)


@app.command("localized-eval")
def localized_eval(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset with boxes/masks (its shard json has `regions`): a localized "
            "adapter's (rsna_pneumonia, siim_pneumothorax, nih_boxes, object_cxr) or the "
            "synthetic corpus.",
        ),
    ],
    model: Annotated[
        LocalizedModel,  # type: ignore[valid-type]
        typer.Option("--model", "-m", help="Family whose pretrained ResNet is evaluated."),
    ],
    task: Annotated[
        LocalizedTask,  # type: ignore[valid-type]
        typer.Option(
            "--task",
            "-t",
            help="detection: Faster R-CNN + FPN on the ResNet, mAP; segmentation: an FPN "
            "decoder, Dice.",
        ),
    ],
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="localized_eval.profiles entry (demo, paper). Default: localized_eval.profile.",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Pretraining checkpoint "
            "(default models/<pretrained-on>/pretrain[-<model>]/final).",
        ),
    ] = None,
    pretrained_on: Annotated[
        str | None,
        typer.Option(
            "--pretrained-on",
            help="Dataset the checkpoint was pretrained on (default: --dataset). LoVT pretrains "
            "on MIMIC-CXR and evaluates on RSNA/SIIM: --dataset rsna --pretrained-on mimic_cxr.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output folder (default reports/<dataset>/localized-<model>-<task>)."
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """LoVT's localized evaluation of a pretrained image encoder: for each initialisation
    (the checkpoint, ImageNet when its weights are on this machine — else that arm is skipped
    and logged —, random), frozen and fine-tuned trunk, and each fraction of the training images
    (1 %, 10 %, 100 %), train the task's head with every seed of the profile and score the test
    split (mAP or Dice, mean over seeds, bootstrap interval over test images), and the
    checkpoint minus each other arm with a paired bootstrap interval (printed as
    checkpoint_minus). Writes results.json, metrics.json and <task>.png; `medvill summary`
    lists them."""
    from medvill.localized.results import localized_eval as run

    with user_errors(*USER_ERRORS):
        doc = run(
            root, dataset, str(model.value), str(task.value), load_params(root / params),
            profile, checkpoint, pretrained_on, out,
        )  # fmt: skip
    for name, arm in doc["skipped"].items():
        info(f"skipped {name}: {arm}")
    typer.echo(json.dumps({"metric": doc["metric"], "runs": {
        f"{r['init']}/{r['variant']}/{r['fraction'] * 100:g}%": round(r["value"], 4)
        for r in doc["runs"]}, "checkpoint_minus": {
        f"{c['baseline']}/{c['variant']}/{c['fraction'] * 100:g}%":
            {k: round(c[k], 4) for k in ("difference", "ci_low", "ci_high", "p_bootstrap")}
        for c in doc["comparisons"]}}, indent=2))  # fmt: skip


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

    with user_errors(*USER_ERRORS):
        settings = EvalSettings.from_params(load_params(root / params))
        result = run(
            str(task.value),
            a,
            b,
            settings.bootstrap,
            settings.seed,
            settings.confidence,
            settings.bootstrap_ci_resamples,
        )
    if out is not None:
        write_json(result, out)
    typer.echo(json.dumps(result["metrics"], indent=2, sort_keys=True))


#: Families whose attention maps `medvill visualize` draws.
VISUALIZE_MODELS: tuple[str, ...] = ("xvl",)
VisualizeModel = str_enum("VisualizeModel", VISUALIZE_MODELS)


@app.command()
def visualize(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="X-VL checkpoint folder (e.g. .../final).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNGs and index.html.")],
    model: Annotated[
        VisualizeModel,  # type: ignore[valid-type]
        typer.Option("--model", "-m", help="Model family whose attention is drawn."),
    ] = "xvl",  # type: ignore[assignment]
    image: Annotated[
        Path | None, typer.Option("--image", help="One image (PNG/JPEG); needs --text.")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", help="Its report text.")] = None,
    phrase: Annotated[
        str | None,
        typer.Option("--phrase", help="Map only this phrase of --text (e.g. 'pleural effusion')."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Batch mode: the first --n pairs of its shards."),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Batch mode: how many pairs.")] = 8,
    split: Annotated[str, typer.Option("--split", help="Batch mode: which split.")] = "test",
    layer: Annotated[
        int | None,
        typer.Option("--layer", help="Fusion layer (0 = first, -1 = last). Default: the middle."),
    ] = None,
    root: RootOpt = Path("."),
) -> None:
    """Attention overlays: per word (or --phrase) the fusion layers' cross-attention over the
    image patches and its gradient-weighted variant, plus the ViT [CLS] self-attention per
    head, as PNGs over the image; an index.html shows them. One pair with --image/--text, or
    --dataset for the first --n pairs of a split."""
    from medvill.xvl.visualize import visualize_pair, visualize_split

    with user_errors(*USER_ERRORS):
        if (image is None) == (dataset is None):
            raise ValueError("give either --image with --text, or --dataset (batch mode)")
        if image is not None:
            if not text:
                raise ValueError("--image needs --text (the report to map)")
            doc = visualize_pair(checkpoint, image, text, out, phrase, layer)
            info(f"{len(doc['words'])} word map(s), {len(doc['cls_heads'])} [CLS] head(s) in {out}")
        else:
            index = root / "data" / "shards" / str(dataset) / "index.json"
            page = visualize_split(checkpoint, index, out, n, split, layer)
            info(f"overlays of {n} {split} pair(s): {page}")


@app.command()
def zeroshot(
    dataset: DatasetOpt,
    model: Annotated[
        VisualizeModel,  # type: ignore[valid-type]
        typer.Option("--model", "-m", help="Model family (its pretrained checkpoint)."),
    ] = "xvl",  # type: ignore[assignment]
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Default models/<dataset>/pretrain-xvl/final."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Default reports/<dataset>/xvl/zeroshot_retrieval."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Valid or Test blocks.")] = "Test",
    root: RootOpt = Path("."),
) -> None:
    """Zero-shot image-report retrieval of a pretrained X-VL on the pairs stage's candidate
    blocks (I2R and R2I), ranked by contrastive similarity (itc) and by the matching head
    (itm), with the random-order MRR beside them; writes metrics.json."""
    from medvill.xvl.retrieval import zero_shot_retrieval

    with user_errors(*USER_ERRORS):
        doc = zero_shot_retrieval(
            checkpoint or root / "models" / dataset / "pretrain-xvl" / "final",
            root / "data" / "interim" / dataset / "pairs",
            root,
            out or root / "reports" / dataset / "xvl" / "zeroshot_retrieval",
            split.capitalize(),
        )
    typer.echo(json.dumps(doc["metrics"], indent=2, sort_keys=True))


@app.command()
def summary(
    root: RootOpt = Path("."),
    ablation: Annotated[
        str | None,
        typer.Option(
            "--ablation",
            metavar="DATASET",
            help="Instead: the attention-mask ablation table of DATASET (paper tables II–V "
            "layout) from reports/DATASET/ablation/<mask>/<task>/, written to "
            "reports/DATASET/ablation/summary.md.",
        ),
    ] = None,
) -> None:
    """Regenerate reports/summary.md from every reports/<dataset>/<task>/metrics.json."""
    from medvill.report import write_summary

    with user_errors(*USER_ERRORS):
        if ablation is None:
            path = write_summary(root)
        else:
            from medvill.ablation import write_ablation_summary

            path = write_ablation_summary(root, ablation)
    typer.echo(str(path))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
