"""benchmarks/gpu_check.py on a CPU: it refuses cleanly without CUDA, every command line it
would run parses with the real command's parser, its params file passes the project's checks,
and a section stops at its first failure or its time limit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks import bench_gpu, bench_loader
from benchmarks.gpu_check import (
    SECTIONS,
    TASKS,
    Section,
    plan,
    run_section,
    write_params,
)
from medvill.config import load_params, profile_section
from medvill.pretrain import TrainSettings
from medvill.tasks import settings_class
from medvill.tasks.common import EvalSettings, finetune_section
from pipeline.params_schema import validate_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: it would run")
def test_without_cuda_it_says_so_runs_nothing_and_exits_0(tmp_path):
    run = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "no CUDA device on this machine; nothing was run" in run.stdout
    assert json.loads((tmp_path / "summary.json").read_text()) == {"cuda": False, "sections": {}}
    assert not (tmp_path / "work").exists()


def test_every_planned_command_line_parses(tmp_path):
    """The model/prep commands through their typer apps with --help appended (an unknown
    option or a wrong subcommand fails), the benchmarks through their own argparse parsers
    (every value converted), the environment probe as code."""
    from medvill.cli import app as model_app
    from pipeline.cli import app as prep_app

    sections = plan(tmp_path, "python", 400, 2048)
    assert [s.name for s in sections] == list(SECTIONS)
    runner = CliRunner()
    checked = 0
    for section in sections:
        for command in section.commands:
            if command[:3] == ["python", "-m", "medvill.cli"]:
                result = runner.invoke(model_app, [*command[3:], "--help"])
            elif command[:3] == ["python", "-m", "pipeline.cli"]:
                result = runner.invoke(prep_app, [*command[3:], "--help"])
            elif command[:2] == ["python", "benchmarks/bench_gpu.py"]:
                args = bench_gpu.build_parser().parse_args(command[2:])
                assert "flex" in args.attention and args.json == tmp_path / "bench_gpu.json"
                continue
            elif command[:2] == ["python", "benchmarks/bench_loader.py"]:
                args = bench_loader.build_parser().parse_args(command[2:])
                assert args.workers == "16" and args.json == tmp_path / "bench_loader.json"
                continue
            elif command[:2] == ["python", "-c"]:
                compile(command[2], "env probe", "exec")
                continue
            else:
                assert command == ["nvidia-smi"]
                continue
            assert result.exit_code == 0, (command, result.output)
            assert "Usage" in result.output
            checked += 1
    assert checked == 3 + 1 + 2 * len(TASKS)  # prep ×3, pretrain, finetune + evaluate per task
    # the model commands point at the work folder and its params file
    pretrain = next(s for s in sections if s.name == "pretrain").commands[0]
    assert pretrain[pretrain.index("--root") + 1] == str(tmp_path / "work")
    assert "--allow-random-init" in pretrain and "paper" in pretrain


def test_params_for_the_short_runs_pass_every_check(tmp_path):
    target = tmp_path / "params.yaml"
    write_params(ROOT / "params.yaml", target, 400)
    params = load_params(target)
    validate_params(params, target)  # the pipeline's schema: types, ranges, unknown keys
    train = TrainSettings.from_dict(profile_section(params, "paper")["train"])
    assert (train.max_steps, train.global_batch_size, train.max_micro_batch_size) == (4, 64, 32)
    assert train.precision == "auto" and train.require_pretrained  # paper, on the GPU's policy
    for task in TASKS:
        settings = settings_class(task).from_dict(finetune_section(params, "paper", task))
        assert settings.max_steps == 3 and settings.num_workers == 8
    assert EvalSettings.from_params(params).bootstrap_ci_resamples == 200
    assert params["synthetic"]["n_images"] == 400
    assert params["pairs"]["image_root"] == str(tmp_path)  # = the model commands' --root
    assert params["vqa"]["image_root"] == str(tmp_path)
    model = profile_section(params, "paper")["model"]  # the paper's shapes are untouched
    assert (model["image_size"], model["num_sampled_visual"], model["max_text_tokens"]) == (
        512, 180, 253,
    )  # fmt: skip


def test_a_section_stops_at_its_first_failure_and_at_its_time_limit(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    py = sys.executable
    failing = Section("failing", 30, [[py, "-c", "raise SystemExit(3)"],
                                      [py, "-c", "open('ran', 'w')"]])  # fmt: skip
    record = run_section(failing, tmp_path, time.monotonic() + 60, env)
    assert record["status"] == "failed" and [c["exit"] for c in record["commands"]] == [3]
    assert not (Path(__file__).parents[2] / "ran").exists()

    # the child's own child (like a loader worker) is killed with it
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
              "'import time; time.sleep(60)']); time.sleep(60)"  # fmt: skip
    slow = Section("slow", 3, [[py, "-c", sleeper]], [tmp_path / "none.json"])
    start = time.monotonic()
    record = run_section(slow, tmp_path, time.monotonic() + 60, env)
    assert record["status"] == "timeout" and time.monotonic() - start < 20
    assert "none.json" in record["results"]["none.json"]["missing"]
    assert "timed out after 3 s" in (tmp_path / "slow.log").read_text()

    spent = run_section(failing, tmp_path, time.monotonic() + 1, env)
    assert spent["status"] == "skipped" and "budget" in spent["reason"]
