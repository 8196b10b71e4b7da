"""`medvill summary`'s localized section, from results.json files."""

from __future__ import annotations

import json
from pathlib import Path

from medvill.report import localized_markdown, summary_markdown


def _run(init: str, variant: str, fraction: float, value: float) -> dict:
    interval = {"ci_low": value - 0.1, "ci_high": value + 0.05}
    return {"init": init, "variant": variant, "fraction": fraction, "value": value, **interval}


def test_localized_section(tmp_path: Path) -> None:
    assert "No evaluation yet: `medvill localized-eval" in "\n".join(localized_markdown(tmp_path))
    doc = {
        "task": "detection", "dataset": "rsna", "adapter": "rsna_pneumonia", "model": "lovt",
        "metric": "map", "split": "test", "profile": "demo", "settings": {"seeds": [1, 2]},
        "backbone": "resnet50", "train_images": 100, "test_images": 20,
        "empty_prediction_floor": 0.0,
        "skipped": {"imagenet": "ImageNet weights for resnet50 not in the local cache (x)"},
        "runs": [_run("pretrained", "frozen", 0.01, 0.25), _run("pretrained", "frozen", 1.0, 0.5),
                 _run("random", "frozen", 1.0, 0.125)],
        "comparisons": [{"baseline": "random", "variant": "frozen", "fraction": 1.0,
                         "difference": 0.375, "ci_low": 0.25, "ci_high": 0.5,
                         "p_bootstrap": 0.002, "seeds_better": 2, "seeds": 2}],
    }  # fmt: skip
    folder = tmp_path / "reports/rsna/localized-lovt-detection"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(doc))
    text = "\n".join(localized_markdown(tmp_path))
    assert "### rsna · lovt · detection (map)" in text
    assert "predicting nothing scores 0.000; LoVT paper: RSNA pneumonia detection (YOLOv3)" in text
    assert "**imagenet skipped**: ImageNet weights for resnet50 not in the local cache" in text
    assert "| init | variant | 1 % | 100 % |" in text
    assert "| pretrained | frozen | 0.250 [0.150, 0.300] | 0.500 [0.400, 0.550] |" in text
    assert "| random | frozen | – | 0.125 [0.025, 0.175] |" in text
    assert "| checkpoint − | variant | 1 % | 100 % |" in text
    assert "| random | frozen | – | +0.375 [+0.250, +0.500] p 0.002, 2/2 |" in text
    assert "## Localized tasks (LoVT's protocol)" in summary_markdown(tmp_path)
    del doc["comparisons"]  # results.json written before the paired comparison existed
    (folder / "results.json").write_text(json.dumps(doc))
    assert "checkpoint −" not in "\n".join(localized_markdown(tmp_path))
