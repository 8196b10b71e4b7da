"""Params mistakes and an unwritable ``--out``: exit code 2, one message naming the key or the
path, no traceback, and no stage output written (the check runs before any work)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from tests.hardening.hostile import SAMPLE, run_cli, write_params


def _all(tmp_path: Path, params: Path, out: Path | None = None) -> tuple[int, str]:
    result = run_cli(
        "all", "--dataset", "sample", "--raw", str(SAMPLE), "--adapter", "sample",
        "--out", str(out or tmp_path / "out"), "--params", str(params), "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode, " ".join(result.stderr.split())


def test_every_bad_value_of_every_block_is_named_before_any_work(tmp_path: Path) -> None:
    params = write_params(
        tmp_path / "params.yaml",
        {
            "images": {"output_size": "abc", "max_pixels": 0, "format": "tiff"},
            "ingest": {"views": "AP"},
            "sections": {"policy": "shortest"},
            "label": {"batch_size": True},
            "split": {"ratios": {"train": 0.5, "valid": 0.1, "test": 0.1}},
            "pairs": {"irm_negatives_k": 0, "seeed": 1},
            "shards": {"samples_per_shard": -5},
        },
    )
    code, message = _all(tmp_path, params)
    assert code == 2
    for expected in (
        "images.output_size: expected an integer ≥ 64 and ≤ 8192, got 'abc'",
        "images.max_pixels: expected an integer ≥ 1, got 0",
        "images.format: expected one of jpg, png, got 'tiff'",
        "ingest.views: expected a list of",
        "got 'AP'",
        "sections.policy: expected one of longest, findings, impression, both, got 'shortest'",
        "label.batch_size: expected an integer ≥ 1, got True",
        "split.ratios: ratios must sum to 1, got 0.7",
        "pairs.irm_negatives_k: expected an integer ≥ 1, got 0",
        "pairs.seeed: unknown key",
        "shards.samples_per_shard: expected an integer ≥ 1, got -5",
    ):
        assert expected in message, expected
    assert str(params) in message
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "datasets:\n  sample: {adapter: sample, raw: data/sample}\nimages:\n  output_size: [512\n"
    )
    code, message = _all(tmp_path, params)
    assert code == 2
    assert f"{params}, line 5" in message and "YAML syntax error" in message


def _in_process(*args: str) -> tuple[int, str]:
    """The same typer app in this process (a second cheaper than a subprocess)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def test_missing_datasets_block_says_so(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("images:\n  output_size: 256\n")
    code, message = _in_process("ingest", "--dataset", "sample", "--params", str(params))
    assert code == 2 and "datasets: block missing or empty" in message


def test_unwritable_out_is_one_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    params = write_params(tmp_path / "params.yaml")
    code, message = _all(tmp_path, params, out=blocker / "out")
    assert code == 2
    assert "cannot write outputs under" in message and "choose another --out" in message
    assert "Not a directory" in message
    args = ["all", "--dataset", "sample", "--raw", str(SAMPLE), "--adapter", "sample"]
    code, message = _in_process(*args, "--out", str(blocker), "--params", str(params))
    assert code == 2 and "cannot write outputs under" in message and "Not a directory" in message
