"""Every check that needs a GPU, in one prepared run of under 10 minutes.

    OUT=/some/folder python benchmarks/gpu_check.py [--budget-s 560] [--only bench_gpu,...]
    python benchmarks/gpu_check.py --dry-run        # the plan: sections and command lines

CI has no GPU; a session that gets one runs this once and reads ``$OUT``. Sections, in order
(each with its own time limit, all within ``--budget-s``):

1. ``env``: torch, CUDA, the GPU's name, ``nvidia-smi``;
2. ``bench_gpu``: ``benchmarks/bench_gpu.py`` at the paper's shapes, eager then compiled, with
   every attention backend (eager runs first, so a compile that overruns keeps them; compiled
   runs in the order default ``sdpa_bool``, ``flex``, then the others, as time allows);
3. ``prep``: a small synthetic corpus (``--n-images``) through the whole data pipeline and the
   tokenizer, in a work folder under ``$OUT``;
4. ``pretrain``: a short real ``medvill pretrain --profile paper`` on it (paper model shapes,
   global batch 64 = 32 × 2 accumulation on one GPU, a few steps, random init allowed);
5. ``<task>`` for classification, retrieval, VQA and generation: ``medvill finetune`` (a few
   steps) then ``medvill evaluate``, both on the GPU;
6. ``bench_loader``: the pretraining loader with 16 workers at 512².

A section runs its commands in order and stops at the first failure (like ``set -e``); the
next section still runs (those that need an earlier one's output are skipped with a reason).
Outputs under ``$OUT`` (default ``gpu_check_out/``): ``summary.json`` (per section: status,
exit code, seconds, and the JSON results gathered — bench numbers, metrics.json files, the
device each metrics file names), ``gpu_check.log`` (everything), ``<section>.log``.

Without CUDA it says so, writes ``summary.json`` with ``"cuda": false`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("classification", "retrieval", "vqa", "generation")
DATASET = "synthetic"
#: Seconds each section may take at most (the overall budget may cut later ones shorter).
LIMITS = {"env": 30, "bench_gpu": 200, "prep": 100, "pretrain": 120, "bench_loader": 100}
TASK_LIMIT = 60
MIN_SECTION_S = 3  # less time than this left: the section is skipped, not started
SECTIONS = ("env", "bench_gpu", "prep", "pretrain", *TASKS, "bench_loader")
#: What each section needs from an earlier one.
NEEDS = {"pretrain": "prep", **{task: "pretrain" for task in TASKS}}


@dataclass
class Section:
    """One part of the check: commands run in order, the first failure ends it."""

    name: str
    limit_s: float
    commands: list[list[str]]
    results: list[Path] = field(default_factory=list)  # JSON files gathered into the summary


def write_params(source: Path, target: Path, n_images: int) -> None:
    """The project's params.yaml with short runs: the ``paper`` profiles' model shapes and
    precision, but a few steps, a small global batch and 8 loader workers."""
    params = yaml.safe_load(source.read_text(encoding="utf-8"))
    params["synthetic"]["n_images"] = n_images
    # task and VQA files name images relative to this; the model commands run with --root there
    params["pairs"]["image_root"] = params["vqa"]["image_root"] = str(target.parent.resolve())
    train = params["pretrain"]["profiles"]["paper"]["train"]
    train.update(epochs=2, max_steps=4, global_batch_size=64, max_micro_batch_size=32,
                 num_workers=8, shuffle_buffer=256, save_every_steps=1000,
                 log_every_steps=1)  # fmt: skip
    for task, block in params["finetune"]["profiles"]["paper"].items():
        block.update(epochs=1, max_steps=3, num_workers=8, log_every_steps=1)
        if task == "generation":
            block["max_length"] = 64  # generated tokens per report at evaluation
    params["evaluate"]["bootstrap_ci_resamples"] = 200
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def plan(out: Path, python: str, n_images: int, loader_samples: int) -> list[Section]:
    """The sections and their command lines (``--dry-run`` prints them; tests check them)."""
    work = out / "work"
    params = str(work / "params.yaml")
    prep = [python, "-m", "pipeline.cli", "--quiet"]
    model = [python, "-m", "medvill.cli", "--quiet"]
    common = ["--dataset", DATASET, "--params", params, "--root", str(work)]
    env_probe = (
        "import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': "
        "torch.__version__, 'cuda': torch.version.cuda, 'available': c, 'device': "
        "torch.cuda.get_device_name(0) if c else None, 'bf16': c and "
        "torch.cuda.is_bf16_supported(), 'cpu_count': __import__('os').cpu_count()}))"
    )
    sections = [
        Section("env", LIMITS["env"], [[python, "-c", env_probe], ["nvidia-smi"]]),
        Section(
            "bench_gpu",
            LIMITS["bench_gpu"],
            [
                [
                    python,
                    "benchmarks/bench_gpu.py",
                    "--steps",
                    "5",
                    "--warmup",
                    "2",
                    "--attention",
                    "sdpa_bool,flex,sdpa_compute_dtype,reference",
                    "--json",
                    str(out / "bench_gpu.json"),
                ]
            ],
            [out / "bench_gpu.json"],
        ),
        Section(
            "prep",
            LIMITS["prep"],
            [
                [
                    *prep,
                    "synthesize",
                    "--out",
                    str(work / "raw"),
                    "--n-images",
                    str(n_images),
                    "--params",
                    params,
                ],
                [
                    *prep,
                    "all",
                    "--dataset",
                    DATASET,
                    "--adapter",
                    "synthetic",
                    "--raw",
                    str(work / "raw"),
                    "--out",
                    str(work / "data"),
                    "--params",
                    params,
                ],
                [*model, "tokenizer", *common],
            ],
        ),
        Section(
            "pretrain",
            LIMITS["pretrain"],
            [[*model, "pretrain", *common, "--profile", "paper", "--allow-random-init"]],
            [work / "models" / DATASET / "pretrain" / "metrics.json"],
        ),
    ]
    for task in TASKS:
        sections.append(
            Section(
                task,
                TASK_LIMIT,
                [
                    [*model, "finetune", task, *common, "--profile", "paper"],
                    [*model, "evaluate", task, *common],
                ],
                [work / "reports" / DATASET / task / "metrics.json"],
            )
        )
    sections.append(
        Section(
            "bench_loader",
            LIMITS["bench_loader"],
            [
                [
                    python,
                    "benchmarks/bench_loader.py",
                    "--samples",
                    str(loader_samples),
                    "--workers",
                    "16",
                    "--rounds",
                    "2",
                    "--no-cpu-time",
                    "--json",
                    str(out / "bench_loader.json"),
                ]
            ],
            [out / "bench_loader.json"],
        )
    )
    return sections


def run_command(command: list[str], log: Any, timeout: float, env: dict[str, str]) -> int | str:
    """Exit code of ``command``, or "timeout" (its whole process group is then killed: loader
    workers and compile workers included)."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    try:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    except OSError as error:  # e.g. nvidia-smi missing
        log.write(f"cannot start: {error}\n")
        return 127
    try:
        return process.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.write(f"timed out after {timeout:.0f} s\n")
        return "timeout"
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): take the command's group along
        os.killpg(process.pid, signal.SIGKILL)
        raise


def run_section(section: Section, out: Path, deadline: float, env: dict[str, str]) -> dict:
    """Run one section's commands until the first failure, within its limit and the budget."""
    limit = min(section.limit_s, deadline - time.monotonic())
    record: dict[str, Any] = {"limit_s": round(limit), "commands": []}
    if limit < MIN_SECTION_S:
        return {**record, "status": "skipped", "reason": "overall time budget spent"}
    start = time.monotonic()
    status = "ok"
    with open(out / f"{section.name}.log", "w", encoding="utf-8") as log:
        for command in section.commands:
            left = limit - (time.monotonic() - start)
            code = run_command(command, log, left, env)
            record["commands"].append({"command": command, "exit": code})
            if code != 0:
                status = "timeout" if code == "timeout" else "failed"
                break
    record.update(status=status, wall_s=round(time.monotonic() - start, 1))
    record["results"] = {str(p.relative_to(out)): _read_json(p) for p in section.results}
    return record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return {"missing": f"{path.name}: {error}"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--budget-s", type=float, default=560, help="all sections together")
    parser.add_argument("--only", help=f"comma list of sections to run, from {SECTIONS}")
    parser.add_argument("--n-images", type=int, default=400, help="synthetic corpus size")
    parser.add_argument("--loader-samples", type=int, default=2048)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan as JSON, run nothing"
    )
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run even without CUDA (to debug this script; slow)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out.resolve()
    sections = plan(out, args.python, args.n_images, args.loader_samples)
    chosen = set(SECTIONS if not args.only else args.only.split(","))
    unknown = chosen - set(SECTIONS)
    if unknown:
        print(f"gpu_check: unknown sections {sorted(unknown)}; known: {SECTIONS}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps([{"name": s.name, "limit_s": s.limit_s, "commands": s.commands}
                          for s in sections if s.name in chosen], indent=2))  # fmt: skip
        return 0
    import torch

    # SIGTERM (e.g. an outer timeout) unwinds like Ctrl-C, so the running command is killed too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"cuda": torch.cuda.is_available(), "sections": {}}
    if not summary["cuda"] and not args.allow_cpu:
        print("gpu_check: no CUDA device on this machine; nothing was run. Run it where "
              "torch.cuda.is_available() is true (see README, 'Checks on a GPU').")  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return 0
    write_params(ROOT / "params.yaml", out / "work" / "params.yaml", args.n_images)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    deadline = time.monotonic() + args.budget_s
    for section in sections:
        if section.name not in chosen:
            continue
        needed = NEEDS.get(section.name)
        before = summary["sections"].get(needed, {}) if needed else {"status": "ok"}
        if needed in chosen and before.get("status") != "ok":
            record = {
                "status": "skipped",
                "reason": f"needs section {needed!r}, which did not pass",
            }
        else:
            record = run_section(section, out, deadline, env)
        summary["sections"][section.name] = record
        print(f"gpu_check: {section.name:>14}: {record['status']}"
              f" ({record.get('wall_s', 0)} s)", flush=True)  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    with open(out / "gpu_check.log", "w", encoding="utf-8") as combined:
        for section in sections:
            path = out / f"{section.name}.log"
            if path.exists():
                combined.write(f"===== {section.name}\n{path.read_text(encoding='utf-8')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
