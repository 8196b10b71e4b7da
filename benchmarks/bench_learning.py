"""Does every path *learn*? The synthetic corpus through the pipeline, a small MedViLL
pretraining, and the four downstream tasks fine-tuned twice: from the pretrained checkpoint
and from random initialisation with the same fine-tuning budget.

    python benchmarks/bench_learning.py [--work /tmp/medvill-learn] [--n-images 2000]
                                        [--profile learn] [--bootstrap 5]

Steps (each a real command, run in ``--work`` as its own project root):
1. ``medvill-prep synthesize`` (pipeline.synthetic) and the labeler's F1 against its labels;
2. ``medvill-prep all`` for the corpus;
3. ``medvill tokenizer`` and ``medvill pretrain --profile <profile>``;
4. a randomly initialised checkpoint of the same architecture (seeded), then for each task and
   each start: ``medvill finetune <task> --pretrained <start> --profile <profile>`` and
   ``medvill evaluate``.

Prints a table (with each metric's no-image floor on the same test files, medvill/chance.py:
label-set retrieval blocks hold about a dozen positives, so a random ranking already has an MRR
near 0.27, and most questions can be answered from the question alone), a ``chance:`` line
with those floors and, as the last line,
``learnability: cls_auroc=… r2i_mrr=… i2r_mrr=… vqa_closed=… vqa_open=… ce_f1=… bleu4=…
labeler_f1=… pretrain_gain_tasks=K/4`` (metrics of the pretrained start). Targets (issue 13):
micro-AUROC ≥ 0.90, MRR ≥ 0.40 both ways, VQA closed ≥ 0.85, CE-F1 ≥ 0.60, labeler F1 ≥ 0.95,
pretrained beating random init on ≥ 3 of 4 tasks.
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
#: Metric keys of each task's metrics.json (headline values) used in the table.
HEADLINE: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (("cls_auroc", "micro_auroc"),),
    "retrieval": (("r2i_mrr", "r2i/mrr"), ("i2r_mrr", "i2r/mrr")),
    "vqa": (("vqa_closed", "closed"), ("vqa_open", "open")),
    "generation": (("ce_f1", "ce_f1"), ("bleu4", "bleu4")),
}


def run(command: list[str], cwd: Path) -> None:
    """Run one command with this checkout's code; stop the benchmark with its output on error."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    print(f"  [{took:6.1f}s] {' '.join(command[2:])}", flush=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-8000:])
        raise SystemExit(f"failed: {' '.join(command)}")


def project(
    work: Path, n_images: int, bootstrap: int, profile: str, epochs: int | None, questions: int
) -> Path:
    """``work`` as a project root: params.yaml with the corpus listed; ``epochs`` (a smoke run)
    overrides the profile's pretraining and fine-tuning epochs."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    if epochs is not None:
        params["pretrain"]["profiles"][profile]["train"]["epochs"] = epochs
        for task in TASKS:
            params["finetune"]["profiles"][profile][task]["epochs"] = epochs
    params["datasets"] = {DATASET: {"adapter": "synthetic", "raw": "data/raw/synthetic"}}
    params["synthetic"] = {
        **params.get("synthetic", {}),
        "n_images": n_images,
        "questions_per_image": questions,
    }
    params["evaluate"] = {**params.get("evaluate", {}), "bootstrap": bootstrap}
    params["tokenizer"] = {**params.get("tokenizer", {}), "pretrained": ""}  # offline WordPiece
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return work / "params.yaml"


def random_start(work: Path, seed: int) -> Path:
    """The pretrained checkpoint's architecture and tokenizer with freshly initialised weights."""
    import torch

    from medvill.model.medvill import MedViLLForPretraining
    from medvill.tokenizer import load_tokenizer

    final = work / "models" / DATASET / "pretrain" / "final"
    out = work / "models" / DATASET / "random_init"
    torch.manual_seed(seed)
    config = MedViLLForPretraining.config_class.from_pretrained(str(final))
    model = MedViLLForPretraining(config)
    model.save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(final).save_pretrained(str(out))
    return out


def chance_levels(
    work: Path, split: str = "test", image_root: Path | None = None
) -> dict[str, float]:
    """Each headline metric's floor on this corpus's test files, no model (medvill/chance.py).
    ``image_root``: what the vqa stage's image paths are relative to (default ``work``, the
    folder the pipeline ran in)."""
    from medvill import chance
    from medvill.metrics import vqa_accuracy
    from medvill.tasks.retrieval import DIRECTIONS, query_blocks
    from medvill.tasks.vqa import VqaFiles, clean_question
    from pipeline.taskfiles.common import FILE_SPLIT
    from pipeline.taskfiles.jsonl import read_task_file

    pairs = work / "data" / "interim" / DATASET / "pairs"
    floors: dict[str, float] = {}
    for direction, prefix in DIRECTIONS.items():
        path = pairs / f"{prefix}_Label_{FILE_SPLIT[split]}.jsonl"
        rows = read_task_file(path)
        aligned = [int(row["is_aligned"][0]) for row in rows]
        blocks = [[aligned[i] for i in block] for block in query_blocks(rows, direction)]
        floors[f"{direction}_mrr"] = chance.retrieval_chance_mrr(blocks)
    train = chance.label_matrix(r["label"] for r in read_task_file(pairs / "Train.jsonl"))
    test = chance.label_matrix(
        r["label"] for r in read_task_file(pairs / f"{FILE_SPLIT[split]}.jsonl")
    )
    floors["cls_auroc"] = chance.label_prior_micro_auroc(train, test)
    floors["ce_f1"] = chance.constant_report_ce_f1(train, test)
    vqa = work / "data" / "interim" / DATASET / "vqa"
    root = work if image_root is None else image_root
    q_train, q_test = VqaFiles.read(vqa, "train", root), VqaFiles.read(vqa, "test", root)
    answered = q_train.targets.max(axis=1) > 0  # answers outside the vocabulary count nowhere
    entries = [e for e, keep in zip(q_train.entries, answered, strict=True) if keep]
    predicted = chance.question_prior_answers(
        [clean_question(str(e["question"])) for e in entries],
        q_train.targets[answered].argmax(axis=1).tolist(),
        [str(e["answer_type"]) for e in entries],
        [clean_question(str(e["question"])) for e in q_test.entries],
        [str(e["answer_type"]) for e in q_test.entries],
    )
    kinds = [str(e["answer_type"]) for e in q_test.entries]
    accuracy = vqa_accuracy(q_test.targets, predicted, kinds)
    floors["vqa_closed"], floors["vqa_open"] = accuracy["closed"], accuracy["open"]
    return floors


def pretraining_line(work: Path, last: int = 20) -> str:
    """Did pretraining learn? MLM loss first → last and the IRM accuracy of the last ``last``
    steps (0.5 = chance: IRM still on its plateau) from the run's metrics.csv."""
    import csv

    path = work / "models" / DATASET / "pretrain" / "metrics.csv"
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{path}: no pretraining steps logged")
    tail = rows[-last:]
    accuracy = sum(float(r["irm_accuracy"]) for r in tail) / len(tail)
    irm = sum(float(r["irm_loss"]) for r in tail) / len(tail)
    return (
        f"pretraining: {rows[-1]['step']} steps, MLM loss {float(rows[0]['mlm_loss']):.2f} → "
        f"{float(rows[-1]['mlm_loss']):.2f}, IRM loss {irm:.3f} and accuracy {accuracy:.3f} "
        f"over the last {len(tail)} steps (chance: 0.693, 0.5)"
    )


def headline(metrics_path: Path, task: str) -> dict[str, float]:
    values = json.loads(metrics_path.read_text(encoding="utf-8"))["metrics"]
    found: dict[str, float] = {}
    for name, key in HEADLINE[task]:
        if key not in values:
            raise SystemExit(f"{metrics_path}: no metric {key!r}; it has {sorted(values)}")
        found[name] = float(values[key])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/medvill-learn"))
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--profile", default="learn")
    parser.add_argument("--bootstrap", type=int, default=5)
    parser.add_argument(
        "--questions-per-image",
        type=int,
        default=3,
        help="VQA questions kept per image (VQA fine-tuning dominates a CPU run); 0 = all.",
    )
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument(
        "--epochs", type=int, default=None, help="Override every epoch count (smoke runs)."
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Keep what an interrupted run in --work finished (corpus, pretraining, metrics).",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    work = args.work.resolve()
    project(
        work, args.n_images, args.bootstrap, args.profile, args.epochs, args.questions_per_image
    )
    py = [sys.executable, "-m"]
    final = work / "models" / DATASET / "pretrain" / "final"
    done = args.resume and (final / "config.json").is_file()

    print("1. corpus", flush=True)
    if not done:
        run([*py, "pipeline.cli", "synthesize", "--out", "data/raw/synthetic"], work)
    sys.path.insert(0, str(REPO))
    from pipeline.synthetic.score import score_corpus

    labeler = score_corpus(work / "data" / "raw" / "synthetic")
    print(f"  labeler vs ground truth: F1 {labeler.f1:.4f} on {labeler.reports} reports")

    if not done:
        print("2. pipeline", flush=True)
        run([*py, "pipeline.cli", "all", "--dataset", DATASET], work)
        print("3. tokenizer + pretraining", flush=True)
        run([*py, "medvill.cli", "tokenizer", "--dataset", DATASET], work)
        run([*py, "medvill.cli", "pretrain", "--dataset", DATASET, "--profile", args.profile],
            work)  # fmt: skip
    print("  " + pretraining_line(work), flush=True)
    starts = {"pretrained": final, "random": random_start(work, args.seed)}

    print("4. fine-tuning and evaluation, twice", flush=True)
    results: dict[str, dict[str, float]] = {start: {} for start in starts}
    for task in TASKS:
        for start, checkpoint in starts.items():
            reports = work / "reports" / start / task
            if args.resume and (reports / "metrics.json").is_file():
                results[start].update(headline(reports / "metrics.json", task))
                continue
            run([*py, "medvill.cli", "finetune", task, "--dataset", DATASET,
                 "--profile", args.profile, "--pretrained", str(checkpoint)], work)  # fmt: skip
            run([*py, "medvill.cli", "evaluate", task, "--dataset", DATASET,
                 "--out", str(reports)], work)  # fmt: skip
            results[start].update(headline(reports / "metrics.json", task))

    names = [name for task in TASKS for name, _ in HEADLINE[task]]
    floors = chance_levels(work)
    print(f"\n{'metric':<12}{'pretrained':>12}{'random init':>13}{'no-image floor':>16}")
    for name in names:
        floor = f"{floors[name]:>16.4f}" if name in floors else f"{'-':>16}"
        print(f"{name:<12}{results['pretrained'][name]:>12.4f}{results['random'][name]:>13.4f}"
              f"{floor}")  # fmt: skip
    task_score = {
        "classification": lambda r: r["cls_auroc"],
        "retrieval": lambda r: (r["r2i_mrr"] + r["i2r_mrr"]) / 2,
        "vqa": lambda r: (r["vqa_closed"] + r["vqa_open"]) / 2,
        "generation": lambda r: r["ce_f1"],
    }
    gains = sum(
        score(results["pretrained"]) > score(results["random"]) for score in task_score.values()
    )
    print(f"wall clock: {time.perf_counter() - started:.0f} s")
    print("chance: " + " ".join(f"{name}={floors[name]:.3f}" for name in names if name in floors))
    pretrained = results["pretrained"]
    print(
        "learnability: "
        + " ".join(f"{name}={pretrained[name]:.3f}" for name in names)
        + f" labeler_f1={labeler.f1:.3f} pretrain_gain_tasks={gains}/{len(TASKS)}"
    )


if __name__ == "__main__":
    main()
