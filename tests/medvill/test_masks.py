"""Each mask type against hand-written matrices (K = 2 visual features).

Layout: 0 [CLS], 1 v1, 2 v2, 3 [SEP_V] | 4 w1, 5 w2, 6 [SEP], 7 [PAD]. Rows are queries.
"""

from __future__ import annotations

import pytest
import torch

from medvill.model.masks import (
    bar_mask,
    bi_mask,
    bi_s2s_mask,
    build_mask,
    noncross_mask,
    resolve_mask_type,
    s2s_mask,
    to_additive,
)

VALID = torch.tensor([True, True, True, False])


def matrix(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


BI = matrix(["11111110"] * 8)
S2S = matrix(
    ["11110000", "11110000", "11110000", "11110000",
     "11111000", "11111100", "11111110", "11111110"]
)  # fmt: skip
BAR = matrix(
    ["11111110", "11111110", "11111110", "11111110",
     "11111000", "11111100", "11111110", "11111110"]
)  # fmt: skip
# Non-cross: the text block starts with the extra text [CLS]: 4 [CLS_L] 5 w1 6 w2 7 [SEP] 8 [PAD]
NONCROSS = matrix(
    ["111100000"] * 4 + ["000011110"] * 5
)  # fmt: skip


@pytest.mark.parametrize(
    ("fn", "expected", "valid"),
    [
        (bi_mask, BI, VALID),
        (s2s_mask, S2S, VALID),
        (bar_mask, BAR, VALID),
        (noncross_mask, NONCROSS, torch.tensor([True, True, True, True, False])),
    ],
)
def test_single_example_matches_paper_figure(fn, expected, valid) -> None:
    assert torch.equal(fn(2, valid), expected)


def test_masks_are_per_example_in_a_batch() -> None:
    """Each row of a batch gets the mask of its own padding."""
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    batch = bar_mask(2, valid)
    assert batch.shape == (2, 8, 8)
    assert torch.equal(batch[0], BAR)
    full = bar_mask(2, valid[1])
    assert torch.equal(batch[1], full)
    assert bool(full[0, 7]) and not bool(BAR[0, 7])  # image sees the 4th text slot only if real


def test_bi_s2s_is_seeded_and_mixes_three_to_one() -> None:
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = [torch.equal(bi_s2s_mask(2, VALID, g1), S2S) for _ in range(20)]
    second = [torch.equal(bi_s2s_mask(2, VALID, g2), S2S) for _ in range(20)]
    assert first == second
    g = torch.Generator().manual_seed(0)
    kinds = [resolve_mask_type("bi_s2s", g) for _ in range(2000)]
    assert set(kinds) == {"s2s", "bi"}
    assert 0.72 < kinds.count("s2s") / len(kinds) < 0.78
    assert resolve_mask_type("bar") == "bar"
    with pytest.raises(ValueError):
        build_mask("bi_s2s", 2, VALID)


def test_additive_mask_blocks_attention() -> None:
    additive = to_additive(BAR[None], torch.float32)
    assert additive.shape == (1, 1, 8, 8)
    assert torch.all(additive[0, 0][BAR] == 0)
    assert torch.all(additive[0, 0][~BAR] == torch.finfo(torch.float32).min)
    scores = torch.zeros(1, 1, 8, 8) + additive
    probs = scores.softmax(-1)
    assert torch.all(probs[0, 0][~BAR] == 0)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 1, 8))
