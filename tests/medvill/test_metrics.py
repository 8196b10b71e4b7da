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


def _resample_rows(n_items: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    indices = M.resample_indices(n_items, rows, seed)
    return indices, M.item_weights(indices, n_items)


def test_item_weights_count_draws() -> None:
    weights = M.item_weights(np.array([[0, 0, 2], [1, 2, 2]]), 4)
    assert weights.tolist() == [[2, 0, 1, 0], [0, 1, 2, 0]]


def test_resampled_classification_metrics_equal_the_plain_ones_on_resampled_data() -> None:
    rng = np.random.default_rng(11)
    n, labels = 40, 5
    truth = (rng.random((n, labels)) > 0.6).astype(float)
    # coarse scores so ties occur (AUROC counts them one half)
    score = np.round(rng.random((n, labels)) * 4) / 4
    valid = rng.random((n, labels)) > 0.15
    valid[:, 4] = False  # a label with no valid cell: NaN, as the plain function
    indices, weights = _resample_rows(n, 25, 2)
    micro = M.micro_auroc_resampled(truth, score, valid, weights)
    f1 = M.micro_f1_resampled(truth, score >= 0.5, valid, weights)
    per = M.per_label_auroc_resampled(truth, score, valid, weights)
    for r, idx in enumerate(indices):
        assert micro[r] == pytest.approx(M.micro_auroc(truth[idx], score[idx], valid[idx]))
        assert f1[r] == pytest.approx(M.micro_f1(truth[idx], score[idx] >= 0.5, valid[idx]))
        plain = M.per_label_auroc(truth[idx], score[idx], list("abcde"), valid[idx])
        np.testing.assert_allclose(per[r], list(plain.values()), equal_nan=True)
    assert np.isnan(per[:, 4]).all()
    # the full set is a row of ones
    ones = np.ones((1, n))
    assert M.micro_auroc_resampled(truth, score, valid, ones)[0] == pytest.approx(
        M.micro_auroc(truth, score, valid)
    )
    # a one-class resample has no AUROC
    only_negative = np.zeros((1, n))
    only_negative[0, np.flatnonzero((truth[:, 0] == 0) & valid[:, 0])[:3]] = 1
    assert np.isnan(M.weighted_auroc(truth[:, 0], score[:, 0], only_negative)[0])


def test_resampled_retrieval_and_vqa_equal_the_plain_ones() -> None:
    rng = np.random.default_rng(12)
    results = [
        M.QueryResult(int(rng.integers(0, 9)), int(rng.integers(0, 3)), 3) for _ in range(30)
    ]
    targets = rng.random((30, 6))
    predicted = rng.integers(0, 6, 30)
    kinds = list(rng.choice(["OPEN", "CLOSED"], 30))
    indices, weights = _resample_rows(30, 20, 3)
    ret = M.retrieval_metrics_resampled(results, weights)
    vqa = M.vqa_accuracy_resampled(targets, predicted, kinds, weights)
    for r, idx in enumerate(indices):
        plain = M.retrieval_metrics([results[i] for i in idx])
        assert {k: v[r] for k, v in ret.items()} == pytest.approx(plain)
        plain = M.vqa_accuracy(targets[idx], predicted[idx], [kinds[i] for i in idx])
        assert {k: v[r] for k, v in vqa.items()} == pytest.approx(plain)


def test_resampled_generation_metrics_equal_nltk_and_the_plain_ones() -> None:
    rng = np.random.default_rng(13)
    words = [
        "no",
        "acute",
        "cardiopulmonary",
        "process",
        "heart",
        "size",
        "is",
        "normal",
        "lungs",
        "are",
        "clear",
    ]
    hyps = [" ".join(rng.choice(words, int(rng.integers(0, 9)))) for _ in range(25)]
    refs = [" ".join(rng.choice(words, int(rng.integers(3, 14)))) for _ in range(25)]
    hyps[0] = refs[0]  # at least one long match, so BLEU-4 is not vanishing everywhere
    values = np.array([1.0, 0.0, -1.0, np.nan])
    hyp_labels = rng.choice(values, (25, 14))
    ref_labels = rng.choice(values, (25, 14))
    nll = [rng.random(int(rng.integers(0, 5))) for _ in range(25)]
    nll[0] = rng.random(3)
    indices, weights = _resample_rows(25, 15, 4)
    stats = M.bleu_statistics(hyps, refs)
    bleu = M.bleu_resampled(stats, weights)
    ce = M.clinical_efficacy_resampled(hyp_labels, ref_labels, weights)
    ppl = M.perplexity_resampled(M.report_perplexities(nll), weights)
    for r, idx in enumerate(indices):
        plain = M.bleu_scores([hyps[i] for i in idx], [refs[i] for i in idx])
        for name, value in plain.items():
            assert bleu[name][r] == pytest.approx(value, rel=1e-9, abs=1e-300)
        plain = M.clinical_efficacy(hyp_labels[idx], ref_labels[idx])
        plain |= M.clinical_efficacy_release(hyp_labels[idx], ref_labels[idx])
        for name, value in plain.items():
            assert ce[name][r] == pytest.approx(value, nan_ok=True)
        if any(len(nll[i]) for i in idx):
            assert ppl[r] == pytest.approx(M.perplexity([nll[i] for i in idx]))
    # NLTK's rule: no unigram match at all is 0
    none = M.bleu_statistics(["a b"], ["c d"])
    assert M.bleu_resampled(none, np.ones((1, 1)))["bleu1"][0] == 0.0


def _mean_of(x: np.ndarray):
    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"mean": weights @ x / weights.sum(axis=1)}

    return compute


def test_bootstrap_is_seeded_and_brackets_the_value() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 1.0, 200)
    compute = _mean_of(x)
    first = M.bootstrap(compute, len(x), n_resamples=200, seed=5)["mean"]
    again = M.bootstrap(compute, len(x), n_resamples=200, seed=5)["mean"]
    assert first == again
    assert first["value"] == pytest.approx(x.mean())
    assert first["ci_low"] < x.mean() < first["ci_high"]
    # the standard error of a mean of 200 N(·, 1) draws is ≈ 0.07
    assert 0.04 < first["std"] < 0.11
    with pytest.raises(ValueError, match="empty"):
        M.bootstrap(compute, 0)


def test_mean_std_from_30_resamples_interval_from_1000() -> None:
    """The paper's mean ± std over 30 resamples, the interval over ≥ 1,000, each counted."""
    rng = np.random.default_rng(6)
    x = rng.normal(0.0, 1.0, 50)
    compute = _mean_of(x)
    stats = M.bootstrap(compute, len(x), n_resamples=30, seed=7, ci_resamples=1000)["mean"]
    assert stats["resamples"] == 30 and stats["ci_resamples"] == 1000
    rows = M.resample_indices(len(x), 1000, 7)
    values = x[rows].mean(axis=1)
    # the first 30 of the 1,000 are exactly the 30 a 30-resample run draws
    assert np.array_equal(rows[:30], M.resample_indices(len(x), 30, 7))
    assert stats["mean"] == pytest.approx(values[:30].mean())
    assert stats["std"] == pytest.approx(values[:30].std(ddof=1))
    assert stats["ci_low"] == pytest.approx(np.percentile(values, 2.5))
    assert stats["ci_high"] == pytest.approx(np.percentile(values, 97.5))
    # fewer interval resamples than mean resamples is a configuration error
    with pytest.raises(ValueError, match="bootstrap_ci_resamples"):
        M.bootstrap(compute, len(x), n_resamples=30, ci_resamples=10)


def test_bootstrap_of_1000_resamples_is_fast_on_a_large_set() -> None:
    """Vectorised: 1,000 resamples of 1,000 items × 14 labels cost seconds, not minutes."""
    import time

    rng = np.random.default_rng(8)
    truth = (rng.random((1000, 14)) > 0.7).astype(float)
    score = rng.random((1000, 14))

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"auroc": M.micro_auroc_resampled(truth, score, None, weights)}

    start = time.perf_counter()
    stats = M.bootstrap(compute, 1000, n_resamples=30, seed=1, ci_resamples=1000)["auroc"]
    assert time.perf_counter() - start < 60
    assert stats["ci_resamples"] == 1000
    assert stats["ci_low"] <= stats["value"] <= stats["ci_high"]


def _accuracy_of(pred: np.ndarray, truth: np.ndarray):
    correct = (pred == truth).astype(float)

    def compute(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"accuracy": weights @ correct / weights.sum(axis=1)}

    return compute


def test_paired_bootstrap_detects_a_real_difference_only() -> None:
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 2, 300)
    good = truth.copy()
    good[:30] ^= 1  # 90 % correct
    bad = truth.copy()
    bad[:120] ^= 1  # 60 % correct

    diff = M.paired_bootstrap(
        _accuracy_of(bad, truth), _accuracy_of(good, truth), len(truth), n_resamples=30, seed=1
    )
    assert diff["accuracy"]["difference"] == pytest.approx(0.3)
    assert diff["accuracy"]["p_bootstrap"] < 0.05 and diff["accuracy"]["p_ttest_paired"] < 1e-6
    # the paper's test: independent t-test on the two sets of 30 bootstrap values
    assert diff["accuracy"]["p_ttest_independent"] < 1e-6
    assert diff["accuracy"]["resamples"] == 30 and diff["accuracy"]["ci_resamples"] == 1000
    same = M.paired_bootstrap(
        _accuracy_of(good, truth), _accuracy_of(good, truth), len(truth), n_resamples=30, seed=1
    )
    assert same["accuracy"]["difference"] == 0.0 and same["accuracy"]["p_bootstrap"] == 1.0
    assert same["accuracy"]["p_ttest_independent"] == 1.0


def test_independent_t_test_is_scipys_on_the_resample_values() -> None:
    """Close systems: the independent test (the paper's) is the weaker of the two."""
    rng = np.random.default_rng(9)
    truth = rng.integers(0, 2, 400)
    a, b = truth.copy(), truth.copy()
    a[:100] ^= 1
    b[:92] ^= 1  # b is right on 8 more items than a

    result = M.paired_bootstrap(
        _accuracy_of(a, truth), _accuracy_of(b, truth), len(truth), n_resamples=30, seed=3
    )["accuracy"]
    indices = M.resample_indices(len(truth), 30, 3)
    va = np.array([np.mean(a[i] == truth[i]) for i in indices])
    vb = np.array([np.mean(b[i] == truth[i]) for i in indices])
    assert result["p_ttest_independent"] == pytest.approx(ttest_ind(vb, va).pvalue)
    assert result["p_ttest_paired"] == pytest.approx(ttest_rel(vb, va).pvalue)
    assert result["p_ttest_paired"] < result["p_ttest_independent"]
