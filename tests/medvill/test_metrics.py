"""Metric functions against hand-computed values and scikit-learn / NLTK where they agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import ttest_ind, ttest_rel
from sklearn.metrics import f1_score, roc_auc_score

from medvill import metrics as M


def test_micro_auroc_matches_hand_value_and_sklearn() -> None:
    # 2 positives (0.9, 0.4) vs 2 negatives (0.5, 0.1): pairs won 3 of 4 → 0.75
    y = np.array([[1, 0], [1, 0]])
    s = np.array([[0.9, 0.5], [0.4, 0.1]])
    assert M.micro_auroc(y, s) == pytest.approx(0.75)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (40, 14))
    s = rng.random((40, 14)) + 0.3 * y
    assert M.micro_auroc(y, s) == pytest.approx(roc_auc_score(y, s, average="micro"))
    per = M.per_label_auroc(y, s, [f"l{j}" for j in range(14)])
    assert per["l3"] == pytest.approx(roc_auc_score(y[:, 3], s[:, 3]))


def test_auroc_masked_cells_and_single_class() -> None:
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.9, 0.8], [0.1, 0.2]])
    valid = np.array([[True, False], [True, False]])  # only column 0 counts: perfect
    assert M.micro_auroc(y, s, valid) == pytest.approx(1.0)
    assert math.isnan(M.auroc(np.ones(3), np.arange(3)))


def test_micro_f1_matches_hand_value_and_sklearn() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0]])
    p = np.array([[1, 1, 0], [0, 1, 0]])  # TP 2, FP 1, FN 1 → 4/6
    assert M.micro_f1(y, p) == pytest.approx(2 / 3)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (30, 14))
    p = rng.integers(0, 2, (30, 14))
    assert M.micro_f1(y, p) == pytest.approx(f1_score(y, p, average="micro"))


def test_best_threshold_maximises_f1() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.7, 0.6, 0.2, 0.65])
    t = M.best_threshold(y, s)
    assert t == pytest.approx(0.65)  # predicts exactly 0.9, 0.7, 0.65 → F1 = 1
    assert M.micro_f1(y, s >= t) == pytest.approx(1.0)
    assert M.best_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3])) == 0.5


def test_retrieval_metrics_on_constructed_ranking() -> None:
    # Query A: positives at sorted positions 0 and 6 → rank 0, 1 hit in top 5, 2 positives.
    scores_a = np.array([10, 9, 8, 7, 6, 5, 4, 3], dtype=float)
    rel_a = np.array([1, 0, 0, 0, 0, 0, 1, 0], dtype=bool)
    # Query B: positives at sorted positions 2, 3, 4 (scores shuffled in file order) → rank 2,
    # 3 hits in top 5, 3 positives.
    scores_b = np.array([0.1, 0.8, 0.9, 0.7, 0.6, 0.5, 0.95, 0.2])
    rel_b = np.array([0, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    rel_b[1] = True  # score 0.8 → sorted position 2
    # Query C: single positive at sorted position 5 → rank 5, no hit.
    scores_c = np.arange(8, 0, -1, dtype=float)
    rel_c = np.zeros(8, dtype=bool)
    rel_c[5] = True
    results = [
        M.score_query(s, r) for s, r in ((scores_a, rel_a), (scores_b, rel_b), (scores_c, rel_c))
    ]
    assert [r.rank for r in results] == [0, 2, 5]
    assert [r.hits_at_k for r in results] == [1, 3, 0]
    got = M.retrieval_metrics(results)
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 6) / 3)
    assert got["hit@5"] == pytest.approx(2 / 3)
    assert got["recall@5"] == pytest.approx((1 / 2 + 3 / 3 + 0) / 3)
    assert got["precision@5"] == pytest.approx((1 / 5 + 3 / 5 + 0) / 3)


def test_retrieval_block_without_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="no positive"):
        M.first_positive_rank(np.array([0.3, 0.2]), np.array([False, False]))


def test_vqa_accuracy_open_closed_overall() -> None:
    targets = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.6], [0, 1.0, 0]])
    predicted = np.array([0, 0, 2, 1])  # scores 1, 0, 0.6, 1
    got = M.vqa_accuracy(targets, predicted, ["OPEN", "CLOSED ", "OPEN", "CLOSED"])
    assert got["open"] == pytest.approx(0.8)
    assert got["closed"] == pytest.approx(0.5)
    assert got["overall"] == pytest.approx(2.6 / 4)


def test_perplexity_is_mean_of_per_report_exp() -> None:
    nll = [np.array([math.log(2), math.log(2)]), np.array([math.log(4)])]
    assert M.perplexity(nll) == pytest.approx(3.0)


def test_bleu_hand_values() -> None:
    # identical → 1; hypothesis "a b c d" vs reference "a b x d": p1 = 3/4, p2 = 1/3, no p3/p4
    assert M.bleu_scores(["the lungs are clear"], ["the lungs are clear"])["bleu4"] == 1.0
    got = M.bleu_scores(["a b c d"], ["A b x d"])
    assert got["bleu1"] == pytest.approx(0.75)
    assert got["bleu2"] == pytest.approx(math.sqrt(0.75 * 1 / 3))
    # brevity penalty: hyp 2 tokens, ref 4 → exp(1 - 4/2)
    assert M.bleu_scores(["a b"], ["a b c d"])["bleu1"] == pytest.approx(math.exp(-1))


def test_clinical_efficacy_micro_positive_only() -> None:
    nan = float("nan")
    ref = np.array([[1, 0, nan, -1], [1, 1, nan, nan]])
    hyp = np.array([[1, nan, 1, 1], [0, 1, nan, -1]])
    # positives: ref cells (0,0), (1,0), (1,1); hyp (0,0), (0,2), (0,3), (1,1)
    # TP 2, FP 2, FN 1; agreement on positivity: 8 cells, disagreements (0,2), (0,3), (1,0)
    got = M.clinical_efficacy(hyp, ref)
    assert got["ce_precision"] == pytest.approx(0.5)
    assert got["ce_recall"] == pytest.approx(2 / 3)
    assert got["ce_f1"] == pytest.approx(4 / 7)
    assert got["ce_accuracy"] == pytest.approx(5 / 8)


def test_clinical_efficacy_release_variant() -> None:
    nan = float("nan")
    ref = np.array([[1.0, nan], [0.0, nan]])
    hyp = np.array([[1.0, nan], [-1.0, 1.0]])
    got = M.clinical_efficacy_release(hyp, ref)
    # col 0: acc 1/2, prec 1/2, rec 1/2, f1 1/2; col 1: acc 1/2 (blank=blank), prec 0/1, rec NaN
    assert got["ce_release_accuracy"] == pytest.approx(0.5)
    assert got["ce_release_precision"] == pytest.approx(0.25)
    assert got["ce_release_recall"] == pytest.approx(0.5)
    assert got["ce_release_f1"] == pytest.approx(0.5)


def test_bootstrap_is_seeded_and_brackets_the_value() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, 200)

    def compute(idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(x[idx].mean())}

    first = M.bootstrap(compute, len(x), n_resamples=200, seed=5)["mean"]
    again = M.bootstrap(compute, len(x), n_resamples=200, seed=5)["mean"]
    assert first == again
    assert first["value"] == pytest.approx(x.mean())
    assert first["ci_low"] < x.mean() < first["ci_high"]
    # the standard error of a mean of 200 N(·, 1) draws is ≈ 0.07
    assert 0.04 < first["std"] < 0.11
    with pytest.raises(ValueError, match="empty"):
        M.bootstrap(compute, 0)


def test_paired_bootstrap_detects_a_real_difference_only() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 300)
    good = truth.copy()
    good[:30] ^= 1  # 90 % correct
    bad = truth.copy()
    bad[:120] ^= 1  # 60 % correct

    def acc(pred: np.ndarray):
        return lambda idx: {"accuracy": float(np.mean(pred[idx] == truth[idx]))}

    diff = M.paired_bootstrap(acc(bad), acc(good), len(truth), n_resamples=30, seed=1)
    assert diff["accuracy"]["difference"] == pytest.approx(0.3)
    assert diff["accuracy"]["p_bootstrap"] < 0.05 and diff["accuracy"]["p_ttest_paired"] < 1e-6
    # the paper's test: independent t-test on the two sets of 30 bootstrap values
    assert diff["accuracy"]["p_ttest_independent"] < 1e-6
    assert diff["accuracy"]["resamples"] == 30
    same = M.paired_bootstrap(acc(good), acc(good), len(truth), n_resamples=30, seed=1)
    assert same["accuracy"]["difference"] == 0.0 and same["accuracy"]["p_bootstrap"] == 1.0
    assert same["accuracy"]["p_ttest_independent"] == 1.0


def test_independent_t_test_is_scipys_on_the_resample_values() -> None:
    """Close systems: the independent test (the paper's) is the weaker of the two."""
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 2, 400)
    a, b = truth.copy(), truth.copy()
    a[:100] ^= 1
    b[:92] ^= 1  # b is right on 8 more items than a

    def acc(pred: np.ndarray):
        return lambda idx: {"accuracy": float(np.mean(pred[idx] == truth[idx]))}

    result = M.paired_bootstrap(acc(a), acc(b), len(truth), n_resamples=30, seed=3)["accuracy"]
    indices = M.resample_indices(len(truth), 30, 3)
    va = np.array([acc(a)(i)["accuracy"] for i in indices])
    vb = np.array([acc(b)(i)["accuracy"] for i in indices])
    assert result["p_ttest_independent"] == pytest.approx(ttest_ind(vb, va).pvalue)
    assert result["p_ttest_paired"] == pytest.approx(ttest_rel(vb, va).pvalue)
    assert result["p_ttest_paired"] < result["p_ttest_independent"]
