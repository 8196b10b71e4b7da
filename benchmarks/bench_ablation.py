"""The paper's attention-mask ablation in miniature, on the synthetic corpus (issue 13 §4).

    python benchmarks/bench_ablation.py [--work /tmp/medvill-ablation] [--n-images 2000]
                                        [--profile learn] [--masks bar,bi_s2s,bi,s2s,noncross]
                                        [--epochs N] [--max-steps N] [--resume]

Runs, in ``--work`` as its own project root, exactly the commands of the DVC stages
``ablation_pretrain`` / ``ablation_finetune`` / ``ablation_evaluate`` / ``ablation_summary``:

1. ``medvill-prep synthesize`` and ``medvill-prep all`` for the corpus, ``medvill tokenizer``;
2. per mask: ``medvill pretrain --ablation <mask> --profile <profile>``, then for each task
   ``medvill finetune <task> --ablation <mask>`` and ``medvill evaluate <task> --ablation <mask>``
   (same fine-tuning budget for every arm);
3. ``medvill summary --ablation synthetic``: ``reports/synthetic/ablation/summary.md``.

Prints the overview table and, as the last line, ``ablation: <mask>=cls_auroc/r2i_mrr/
i2r_mrr/vqa_closed/vqa_open/ce_f1 … wall_s=…``. ``--epochs`` / ``--max-steps`` shrink every
arm alike for a reduced run (say which in any reported number). DVC runs the same thing inside
the repository: see README, "The attention-mask ablation".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATASET = "synthetic"
TASKS: tuple[str, ...] = ("classification", "retrieval", "vqa", "generation")
MASKS: tuple[str, ...] = ("bar", "bi_s2s", "bi", "s2s", "noncross")
#: Headline metric of each column of the last line (task, metrics.json key).
LAST_LINE: tuple[tuple[str, str], ...] = (
    ("classification", "micro_auroc"),
    ("retrieval", "r2i/mrr"),
    ("retrieval", "i2r/mrr"),
    ("vqa", "closed"),
    ("vqa", "open"),
    ("generation", "ce_f1"),
)


def run(command: list[str], cwd: Path) -> None:
    """Run one command with this checkout's code; stop with its output on failure."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    print(f"  [{time.perf_counter() - started:6.1f}s] {' '.join(command[2:])}", flush=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-8000:])
        raise SystemExit(f"failed: {' '.join(command)}")


def write_params(work: Path, args: argparse.Namespace) -> None:
    """``work/params.yaml``: this repository's, with the corpus as the only dataset, the
    ablation switched on for it, and the reduced-run overrides applied to the profile."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    pretrain = params["pretrain"]["profiles"][args.profile]["train"]
    finetune = params["finetune"]["profiles"][args.profile]
    if args.epochs is not None:
        pretrain["epochs"] = args.epochs
        for task in TASKS:
            finetune[task]["epochs"] = args.epochs
    if args.max_steps is not None:
        pretrain["max_steps"] = args.max_steps
    params["datasets"] = {DATASET: {"adapter": "synthetic", "raw": "data/raw/synthetic"}}
    params["synthetic"] = {
        **params.get("synthetic", {}),
        "n_images": args.n_images,
        "questions_per_image": args.questions_per_image,
    }
    params["evaluate"] = {**params.get("evaluate", {}), "bootstrap": args.bootstrap}
    params["tokenizer"] = {**params.get("tokenizer", {}), "pretrained": ""}  # offline WordPiece
    params["ablation"] = {
        "datasets": [DATASET],
        "pretrain_profile": args.profile,
        "finetune_profile": args.profile,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medvill-ablation"))
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--profile", default="learn")
    parser.add_argument("--masks", default=",".join(MASKS), help="Comma-separated arms.")
    parser.add_argument("--bootstrap", type=int, default=30)
    parser.add_argument("--questions-per-image", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="Every epoch count (reduced).")
    parser.add_argument("--max-steps", type=int, default=None, help="Pretraining steps cap.")
    parser.add_argument("--resume", action="store_true", help="Keep finished steps in --work.")
    args = parser.parse_args()
    masks = [m for m in args.masks.split(",") if m]
    unknown = sorted(set(masks) - set(MASKS))
    if unknown:
        raise SystemExit(f"unknown masks {unknown}; expected some of {MASKS}")
    started = time.perf_counter()
    work = args.work.resolve()
    write_params(work, args)
    py = [sys.executable, "-m"]
    models = work / "models" / DATASET
    reports = work / "reports" / DATASET / "ablation"

    if not (args.resume and (models / "tokenizer").is_dir()):
        print("1. corpus, pipeline, tokenizer", flush=True)
        run([*py, "pipeline.cli", "synthesize", "--out", "data/raw/synthetic"], work)
        run([*py, "pipeline.cli", "all", "--dataset", DATASET], work)
        run([*py, "medvill.cli", "tokenizer", "--dataset", DATASET], work)
    for mask in masks:
        print(f"2. arm {mask}", flush=True)
        if not (args.resume and (models / "ablation" / mask / "pretrain" / "final").is_dir()):
            run([*py, "medvill.cli", "pretrain", "-d", DATASET, "--ablation", mask], work)
        for task in TASKS:
            if args.resume and (reports / mask / task / "metrics.json").is_file():
                continue
            run([*py, "medvill.cli", "finetune", task, "-d", DATASET, "--ablation", mask], work)
            run([*py, "medvill.cli", "evaluate", task, "-d", DATASET, "--ablation", mask], work)
    print("3. summary", flush=True)
    run([*py, "medvill.cli", "summary", "--ablation", DATASET], work)
    text = (reports / "summary.md").read_text(encoding="utf-8")
    print(text.split("## Overview")[1].split("\n## ")[0].strip())
    cells = []
    for mask in masks:
        values = []
        for task, key in LAST_LINE:
            doc = json.loads((reports / mask / task / "metrics.json").read_text(encoding="utf-8"))
            value = doc["metrics"].get(key)
            values.append("nan" if value is None else f"{value:.3f}")
        cells.append(f"{mask}={'/'.join(values)}")
    wall = time.perf_counter() - started
    print(f"full table: {reports / 'summary.md'}")
    print(
        "ablation: "
        + " ".join(cells)
        + f" (cls_auroc/r2i_mrr/i2r_mrr/vqa_closed/vqa_open/ce_f1) n_images={args.n_images}"
        + f" wall_s={wall:.0f}"
    )


if __name__ == "__main__":
    main()
