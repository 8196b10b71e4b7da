"""The contrast warm-up (``contrast_warmup_epochs``, docs/xvl.md §6): during it the loss is
the contrast alone — matching and masked words are computed and logged but give no gradient —
and afterwards all three objectives are optimised."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvill.pretrain import pretrain
from medvill.xvl.config import config_from_profile

from .test_xvl_model import IDS, TINY, tiny_batch, tiny_model
from .test_xvl_train import paths, profile, rows


def _grad_norm(module: torch.nn.Module) -> float:
    return float(sum(p.grad.norm() ** 2 for p in module.parameters() if p.grad is not None))


@pytest.mark.parametrize("fusion_weight", [0.0, 1.0])
def test_fusion_weight_zero_leaves_the_loss_and_the_gradient_to_the_contrast(
    fusion_weight: float,
) -> None:
    model = tiny_model().train()
    out = model(**tiny_batch(), alpha=0.0, generator=torch.Generator().manual_seed(0),
                fusion_weight=fusion_weight)  # fmt: skip
    out.loss.backward()
    assert (
        float(out.itm_loss.detach()) > 0 and float(out.mlm_loss.detach()) > 0
    )  # still computed, for the log
    expected = out.itc_loss + fusion_weight * (out.itm_loss + out.mlm_loss)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert _grad_norm(model.xvl.vision_proj) > 0  # the contrast always trains the encoders
    heads = _grad_norm(model.xvl.itm_head) + _grad_norm(model.mlm_head)
    if fusion_weight == 0.0:
        assert heads == 0.0
    else:
        assert heads > 0


def test_profile_accepts_the_warmup_and_refuses_a_negative_one() -> None:
    assert (
        config_from_profile({**TINY, "contrast_warmup_epochs": 3}, IDS).contrast_warmup_epochs == 3
    )
    with pytest.raises(ValueError, match="contrast_warmup_epochs must be ≥ 0, got -1"):
        config_from_profile({**TINY, "contrast_warmup_epochs": -1}, IDS)


@pytest.mark.slow
def test_a_run_optimises_the_contrast_alone_in_its_warmup_epochs(
    tiny_data: dict, tmp_path: Path
) -> None:
    settings = profile(epochs=2)
    settings["model"]["contrast_warmup_epochs"] = 1
    pretrain(settings, paths(tiny_data, tmp_path / "run"), model="xvl", show_progress=False)
    logged = rows(tmp_path / "run")
    assert [int(r["epoch"]) for r in logged] == [0, 0, 0, 1, 1, 1]  # 3 steps per epoch
    for row in logged:
        itc, itm, mlm = (float(row[k]) for k in ("itc_loss", "itm_loss", "mlm_loss"))
        assert itm > 0 and mlm > 0
        optimised = itc if int(row["epoch"]) == 0 else itc + itm + mlm
        assert float(row["loss"]) == pytest.approx(optimised, rel=1e-5)
