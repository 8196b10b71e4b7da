"""The paper's downstream metrics as pure functions (numpy / scikit-learn / NLTK), plus the
bootstrap and the paired test every reported number goes through.

Definitions follow MedViLL (paper §IV-C, tables II–V) and the released code as described in
``docs/model.md`` §8–9:

* classification — micro-averaged AUROC and F1 over all (sample, label) cells; F1 at a
  threshold chosen on validation (the release used 0.5);
* retrieval — per query block, candidates sorted by descending score; ``rank`` = 0-based
  position of the first positive; MRR = mean 1/(rank+1); Hit@K = share of queries with
  rank < K; R@K = positives in the top K / positives in the block; P@K = positives in top K / K;
* VQA — the target score of the arg-max answer, averaged (open / closed / all);
* report generation — perplexity (exp of the mean token cross-entropy per report, averaged over
  reports), corpus BLEU-1..4 (NLTK ``corpus_bleu``, whitespace tokens, one reference: what the
  release used), clinical efficacy from CheXpert labels of generated vs reference reports.

Every function works on plain arrays. The ``*_resampled`` variants score many bootstrap
resamples at once from per-item weights, which is what :func:`bootstrap` and
:func:`paired_bootstrap` call: 1,000 resamples for an interval stay cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

# --------------------------------------------------------------------------- classification


def _masked(
    y_true: np.ndarray, y_score: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (n, L) arrays to the cells that count (``valid`` True; all when None)."""
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    if y_true.shape != y_score.shape:
        raise ValueError(f"shape mismatch: labels {y_true.shape} vs scores {y_score.shape}")
    if valid is None:
        return y_true.ravel(), y_score.ravel()
    keep = np.asarray(valid, dtype=bool)
    if keep.shape != y_true.shape:
        raise ValueError(f"valid mask shape {keep.shape} differs from labels {y_true.shape}")
    return y_true[keep], y_score[keep]


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve of one binary problem; NaN when only one class is present
    (undefined, and a bootstrap resample may well contain a single class)."""
    y_true = np.asarray(y_true, dtype=float).ravel()
    if y_true.size == 0 or np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=float).ravel()))


def micro_auroc(y_true: np.ndarray, y_score: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Micro AUROC (paper table II): one ROC over every (sample, label) cell that counts.

    Equal to scikit-learn's ``roc_auc_score(average="micro")`` when no cell is masked.
    """
    truth, score = _masked(y_true, y_score, valid)
    return auroc(truth, score)


def per_label_auroc(
    y_true: np.ndarray,
    y_score: np.ndarray,
    names: Sequence[str],
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """AUROC of each label column (NaN where the column has one class among valid cells)."""
    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    if y_true.shape[1] != len(names):
        raise ValueError(f"{y_true.shape[1]} label columns but {len(names)} names")
    keep = np.ones_like(y_true, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    return {
        name: auroc(y_true[keep[:, j], j], y_score[keep[:, j], j]) for j, name in enumerate(names)
    }


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    """F1 = 2TP / (2TP + FP + FN); 0 when there is nothing to find and nothing predicted is
    counted as 0 rather than NaN so it averages (scikit-learn's ``zero_division=0``)."""
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Micro F1 (paper table II): TP/FP/FN pooled over all (sample, label) cells that count."""
    truth, pred = _masked(y_true, y_pred, valid)
    truth, pred = truth > 0.5, pred > 0.5
    return f1_from_counts(
        float(np.sum(truth & pred)), float(np.sum(~truth & pred)), float(np.sum(truth & ~pred))
    )


def best_threshold(
    y_true: np.ndarray,
    y_score: np.ndarray,
    valid: np.ndarray | None = None,
    default: float = 0.5,
) -> float:
    """The probability threshold that maximises micro F1 on (validation) scores.

    Candidates are the distinct scores themselves (predict positive when score ≥ t); with no
    positive cell the ``default`` (the release's 0.5) is returned. Ties go to the candidate
    closest to ``default`` so a flat optimum does not pick an extreme.
    """
    truth, score = _masked(y_true, y_score, valid)
    truth = truth > 0.5
    if truth.sum() == 0 or score.size == 0:
        return default
    order = np.argsort(-score, kind="stable")
    sorted_scores, sorted_truth = score[order], truth[order]
    tp = np.cumsum(sorted_truth)
    fp = np.cumsum(~sorted_truth)
    fn = truth.sum() - tp
    # only the last index of each run of equal scores is a valid cut
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1 = np.where(last, 2 * tp / np.maximum(2 * tp + fp + fn, 1), -1.0)
    best = f1.max()
    candidates = sorted_scores[np.isclose(f1, best) & last]
    return float(candidates[np.argmin(np.abs(candidates - default))])


# --------------------------------------------------------------------------- retrieval


def first_positive_rank(scores: np.ndarray, relevant: np.ndarray) -> int:
    """0-based position of the first relevant candidate after sorting by descending score.

    Ties keep file order (a stable sort), so the result is deterministic. A block without any
    relevant candidate is an error: MRR is undefined for it, and the pipeline's blocks always
    contain the true pair.
    """
    scores = np.asarray(scores, dtype=float)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 1:
        raise ValueError("scores and relevance must be 1-D arrays of the same length")
    if not relevant.any():
        raise ValueError("a retrieval block has no positive candidate")
    order = np.argsort(-scores, kind="stable")
    return int(np.flatnonzero(relevant[order])[0])


@dataclass(frozen=True)
class QueryResult:
    """Per-query retrieval outcome: rank of the first positive, positives in top K, positives."""

    rank: int
    hits_at_k: int
    positives: int


def score_query(scores: np.ndarray, relevant: np.ndarray, k: int = 5) -> QueryResult:
    """Rank one block (docs/model.md §8) and count the positives among its top ``k``."""
    relevant = np.asarray(relevant, dtype=bool)
    rank = first_positive_rank(scores, relevant)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return QueryResult(rank, int(relevant[order[:k]].sum()), int(relevant.sum()))


def retrieval_metrics(results: Sequence[QueryResult], k: int = 5) -> dict[str, float]:
    """MRR, Hit@K, R@K, P@K (MedViLL's definitions, as fractions; the paper prints ×100)."""
    if not results:
        raise ValueError("no retrieval queries to score")
    ranks = np.array([r.rank for r in results], dtype=float)
    hits = np.array([r.hits_at_k for r in results], dtype=float)
    positives = np.array([r.positives for r in results], dtype=float)
    return {
        "mrr": float(np.mean(1.0 / (ranks + 1.0))),
        f"hit@{k}": float(np.mean(ranks < k)),
        f"recall@{k}": float(np.mean(hits / positives)),
        f"precision@{k}": float(np.mean(hits / k)),
    }


# --------------------------------------------------------------------------- VQA


def vqa_accuracy(
    target_scores: np.ndarray, predicted: np.ndarray, answer_types: Sequence[str]
) -> dict[str, float]:
    """VQA-RAD accuracy (docs/model.md §8): the soft target score of the arg-max answer, averaged
    over open (``OPEN``), closed (``CLOSED``) and all questions. A type absent from the set
    gives NaN. ``target_scores`` (n, A), ``predicted`` (n,) answer indices."""
    target_scores = np.asarray(target_scores, dtype=float)
    predicted = np.asarray(predicted, dtype=int)
    if target_scores.shape[0] != predicted.shape[0] or len(answer_types) != predicted.shape[0]:
        raise ValueError("targets, predictions and answer types differ in length")
    got = target_scores[np.arange(predicted.shape[0]), predicted]
    kinds = np.array([t.strip().upper() for t in answer_types])

    def mean(sel: np.ndarray) -> float:
        return float(got[sel].mean()) if sel.any() else float("nan")

    return {
        "open": mean(kinds == "OPEN"),
        "closed": mean(kinds == "CLOSED"),
        "overall": mean(np.ones_like(kinds, dtype=bool)),
    }


# --------------------------------------------------------------------------- report generation


def perplexity(token_nll: Sequence[np.ndarray]) -> float:
    """Per report exp(mean token cross-entropy) on the reference report, averaged over reports
    (docs/model.md §9). ``token_nll[i]``: report i's per-token negative log-likelihoods (nats)."""
    values = [math.exp(float(np.mean(nll))) for nll in token_nll if len(nll) > 0]
    if not values:
        raise ValueError("no report with tokens to compute perplexity on")
    return float(np.mean(values))


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 with NLTK's ``corpus_bleu`` (the release's implementation): lower-cased
    whitespace tokens, one reference per hypothesis, uniform n-gram weights, no smoothing."""
    from nltk.translate.bleu_score import corpus_bleu

    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references differ in length")
    if not hypotheses:
        raise ValueError("no reports to score")
    hyps = [h.lower().split() for h in hypotheses]
    refs = [[r.lower().split()] for r in references]
    weights = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25, 0.25, 0.25, 0.25)}
    with warnings.catch_warnings():  # NLTK warns on zero n-gram overlap; 0 is the right value
        warnings.simplefilter("ignore", UserWarning)
        return {f"bleu{n}": float(corpus_bleu(refs, hyps, weights=w)) for n, w in weights.items()}


def clinical_efficacy(hyp_labels: np.ndarray, ref_labels: np.ndarray) -> dict[str, float]:
    """Clinical efficacy as the issue and paper (table V) state it: CheXpert labels of the
    generated (hyp) and reference reports, positive = 1 (uncertain, negative and blank are not
    positive), micro-averaged over all (report, label) cells:
    accuracy = share of cells where positivity agrees; precision/recall/F1 from pooled TP/FP/FN.

    Inputs are (n, 14) arrays of 1 / 0 / −1 / NaN.
    """
    hyp = np.asarray(hyp_labels, dtype=float) == 1.0
    ref = np.asarray(ref_labels, dtype=float) == 1.0
    if hyp.shape != ref.shape:
        raise ValueError(f"label shapes differ: {hyp.shape} vs {ref.shape}")
    tp = float(np.sum(hyp & ref))
    fp = float(np.sum(hyp & ~ref))
    fn = float(np.sum(~hyp & ref))
    return {
        "ce_accuracy": float(np.mean(hyp == ref)) if hyp.size else float("nan"),
        "ce_precision": tp / (tp + fp) if tp + fp > 0 else 0.0,
        "ce_recall": tp / (tp + fn) if tp + fn > 0 else 0.0,
        "ce_f1": f1_from_counts(tp, fp, fn),
    }


def clinical_efficacy_release(hyp_labels: np.ndarray, ref_labels: np.ndarray) -> dict[str, float]:
    """The released code's variant (docs/model.md §9), logged beside the paper's: per category,
    acc = P(hyp = ref) with blank = blank a match, prec = #(equal, non-blank)/#hyp non-blank,
    rec = #(equal, non-blank)/#ref non-blank; each macro-averaged over the categories where it
    is defined (all four label values count, not only positives)."""
    hyp = np.asarray(hyp_labels, dtype=float)
    ref = np.asarray(ref_labels, dtype=float)
    if hyp.shape != ref.shape:
        raise ValueError(f"label shapes differ: {hyp.shape} vs {ref.shape}")
    hyp_blank, ref_blank = np.isnan(hyp), np.isnan(ref)
    equal = (hyp == ref) | (hyp_blank & ref_blank)
    equal_defined = (hyp == ref) & ~hyp_blank
    accs, precs, recs, f1s = [], [], [], []
    for j in range(hyp.shape[1]):
        accs.append(float(equal[:, j].mean()) if hyp.shape[0] else float("nan"))
        n_hyp, n_ref = float((~hyp_blank[:, j]).sum()), float((~ref_blank[:, j]).sum())
        hit = float(equal_defined[:, j].sum())
        p = hit / n_hyp if n_hyp else float("nan")
        r = hit / n_ref if n_ref else float("nan")
        precs.append(p)
        recs.append(r)
        if not (math.isnan(p) or math.isnan(r)) and p + r > 0:
            f1s.append(2 * p * r / (p + r))
        elif not (math.isnan(p) or math.isnan(r)):
            f1s.append(0.0)

    def avg(values: list[float]) -> float:
        clean = [v for v in values if not math.isnan(v)]
        return float(np.mean(clean)) if clean else float("nan")

    return {
        "ce_release_accuracy": avg(accs),
        "ce_release_precision": avg(precs),
        "ce_release_recall": avg(recs),
        "ce_release_f1": avg(f1s),
    }


# --------------------------------------------------------------------------- resampled metrics
#
# A bootstrap resample draws items with replacement, so it is the full set with an integer
# weight per item (how often it was drawn). Every metric below takes those weights for many
# resamples at once — ``weights`` is (R, n), one resample per row, ones for the full set — and
# returns one value per row. They equal the plain functions above on the resampled data (the
# tests check this), but 1,000 resamples cost a few matrix products, not 1,000 Python calls.


def item_weights(indices: np.ndarray, n_items: int) -> np.ndarray:
    """(R, n) draw counts of each item from (R, k) resample indices."""
    indices = np.atleast_2d(np.asarray(indices, dtype=np.int64))
    rows = indices.shape[0]
    flat = indices + (np.arange(rows, dtype=np.int64) * n_items)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n_items).reshape(rows, n_items).astype(float)


def _ratio(
    numerator: np.ndarray, denominator: np.ndarray, empty: float = float("nan")
) -> np.ndarray:
    """numerator / denominator, ``empty`` where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.full(np.broadcast(numerator, denominator).shape, empty, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def weighted_mean(
    values: np.ndarray, weights: np.ndarray, keep: np.ndarray | None = None
) -> np.ndarray:
    """Per resample, the mean of ``values`` (n,) over the items in ``keep`` (NaN when none)."""
    values = np.asarray(values, dtype=float)
    w = weights if keep is None else weights * np.asarray(keep, dtype=float)
    return _ratio(w @ values, w.sum(axis=1))


def weighted_auroc(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one binary problem per row of ``weights`` (R, m): the Mann-Whitney statistic
    with each cell counted ``weight`` times, ties counting one half — what ``roc_auc_score``
    gives on the data with the cells repeated. NaN where a row lacks one class."""
    truth = np.asarray(truth, dtype=float).ravel() > 0.5
    score = np.asarray(score, dtype=float).ravel()
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if score.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(score, kind="stable")
    sorted_scores = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * truth[order], starts, axis=1)  # (R, groups) of tied scores
    neg = np.add.reduceat(w * ~truth[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    return _ratio(wins, pos.sum(axis=1) * neg.sum(axis=1))


def macro_average(values: np.ndarray) -> np.ndarray:
    """Row means of (R, L) per-label values over the labels where they are defined (not NaN);
    NaN for a row with none."""
    defined = ~np.isnan(values)
    return _ratio(np.where(defined, values, 0.0).sum(axis=1), defined.sum(axis=1))


def _cells(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)


def micro_auroc_resampled(
    y_true: np.ndarray, y_score: np.ndarray, valid: np.ndarray | None, weights: np.ndarray
) -> np.ndarray:
    """:func:`micro_auroc` per resample (cells inherit their item's weight)."""
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    keep = _cells(valid, y_true.shape)
    rows, _ = np.nonzero(keep)
    return weighted_auroc(y_true[keep], y_score[keep], weights[:, rows])


def per_label_auroc_resampled(
    y_true: np.ndarray, y_score: np.ndarray, valid: np.ndarray | None, weights: np.ndarray
) -> np.ndarray:
    """:func:`per_label_auroc` per resample: (R, L)."""
    y_true, y_score = np.asarray(y_true, float), np.asarray(y_score, float)
    keep = _cells(valid, y_true.shape)
    columns = [
        weighted_auroc(y_true[keep[:, j], j], y_score[keep[:, j], j], weights[:, keep[:, j]])
        for j in range(y_true.shape[1])
    ]
    return np.stack(columns, axis=1)


def micro_f1_resampled(
    y_true: np.ndarray, y_pred: np.ndarray, valid: np.ndarray | None, weights: np.ndarray
) -> np.ndarray:
    """:func:`micro_f1` per resample."""
    truth = np.asarray(y_true, float) > 0.5
    pred = np.asarray(y_pred, float) > 0.5
    keep = _cells(valid, truth.shape)
    tp = weights @ (truth & pred & keep).sum(axis=1)
    fp = weights @ (~truth & pred & keep).sum(axis=1)
    fn = weights @ (truth & ~pred & keep).sum(axis=1)
    return _ratio(2 * tp, 2 * tp + fp + fn, empty=0.0)


def retrieval_metrics_resampled(
    results: Sequence[QueryResult], weights: np.ndarray, k: int = 5
) -> dict[str, np.ndarray]:
    """:func:`retrieval_metrics` per resample."""
    ranks = np.array([r.rank for r in results], dtype=float)
    hits = np.array([r.hits_at_k for r in results], dtype=float)
    positives = np.array([r.positives for r in results], dtype=float)
    return {
        "mrr": weighted_mean(1.0 / (ranks + 1.0), weights),
        f"hit@{k}": weighted_mean(ranks < k, weights),
        f"recall@{k}": weighted_mean(hits / positives, weights),
        f"precision@{k}": weighted_mean(hits / k, weights),
    }


def vqa_accuracy_resampled(
    target_scores: np.ndarray,
    predicted: np.ndarray,
    answer_types: Sequence[str],
    weights: np.ndarray,
    keep: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`vqa_accuracy` per resample, over the questions in ``keep`` (all when None)."""
    target_scores = np.asarray(target_scores, dtype=float)
    predicted = np.asarray(predicted, dtype=int)
    got = target_scores[np.arange(predicted.shape[0]), predicted]
    kinds = np.array([t.strip().upper() for t in answer_types])
    base = np.ones(got.shape, bool) if keep is None else np.asarray(keep, bool)
    return {
        "open": weighted_mean(got, weights, base & (kinds == "OPEN")),
        "closed": weighted_mean(got, weights, base & (kinds == "CLOSED")),
        "overall": weighted_mean(got, weights, base),
    }


def report_perplexities(token_nll: Sequence[np.ndarray]) -> np.ndarray:
    """exp(mean token NLL) of each report; NaN for a report without tokens (left out)."""
    return np.array(
        [math.exp(float(np.mean(nll))) if len(nll) > 0 else float("nan") for nll in token_nll]
    )


def perplexity_resampled(per_report: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`perplexity` per resample from :func:`report_perplexities`."""
    per_report = np.asarray(per_report, dtype=float)
    has = ~np.isnan(per_report)
    return weighted_mean(np.where(has, per_report, 0.0), weights, has)


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per report the sums NLTK's ``corpus_bleu`` adds up, (n, 10): clipped n-gram matches
    (n = 1..4), n-gram counts of the hypothesis (at least 1, as NLTK), hypothesis length and
    reference length (lower-cased whitespace tokens, one reference)."""
    from collections import Counter

    if len(hypotheses) != len(references):
        raise ValueError("hypotheses and references differ in length")
    stats = np.zeros((len(hypotheses), 10), dtype=float)
    for i, (hyp_text, ref_text) in enumerate(zip(hypotheses, references, strict=True)):
        hyp, ref = hyp_text.lower().split(), ref_text.lower().split()
        for n in range(1, 5):
            hyp_grams = Counter(tuple(hyp[j : j + n]) for j in range(len(hyp) - n + 1))
            ref_grams = Counter(tuple(ref[j : j + n]) for j in range(len(ref) - n + 1))
            stats[i, n - 1] = sum(min(c, ref_grams[g]) for g, c in hyp_grams.items())
            stats[i, 3 + n] = max(1, sum(hyp_grams.values()))
        stats[i, 8], stats[i, 9] = len(hyp), len(ref)
    return stats


def bleu_resampled(statistics: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`bleu_scores` per resample from :func:`bleu_statistics`, with NLTK's rules: 0 when
    no unigram matches; an order without matches counts as the smallest float (so BLEU-n is
    vanishingly small, not 0); brevity penalty exp(1 − ref/hyp) when hyp ≤ ref."""
    import sys

    sums = weights @ statistics  # (R, 10)
    matches, totals = sums[:, :4], sums[:, 4:8]
    hyp_len, ref_len = sums[:, 8], sums[:, 9]
    precision = np.where(matches > 0, _ratio(matches, totals, 0.0), sys.float_info.min)
    penalty = np.where(hyp_len > ref_len, 1.0, np.exp(1.0 - _ratio(ref_len, hyp_len, np.inf)))
    out = {}
    for n in range(1, 5):
        score = penalty * np.exp(np.log(precision[:, :n]).mean(axis=1))
        out[f"bleu{n}"] = np.where(matches[:, 0] > 0, score, 0.0)
    return out


def clinical_efficacy_resampled(
    hyp_labels: np.ndarray, ref_labels: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`clinical_efficacy` and :func:`clinical_efficacy_release` per resample."""
    hyp_raw = np.asarray(hyp_labels, dtype=float)
    ref_raw = np.asarray(ref_labels, dtype=float)
    if hyp_raw.shape != ref_raw.shape:
        raise ValueError(f"label shapes differ: {hyp_raw.shape} vs {ref_raw.shape}")
    hyp, ref = hyp_raw == 1.0, ref_raw == 1.0
    tp = weights @ (hyp & ref).sum(axis=1)
    fp = weights @ (hyp & ~ref).sum(axis=1)
    fn = weights @ (~hyp & ref).sum(axis=1)
    agree = weights @ (hyp == ref).sum(axis=1)
    total = weights.sum(axis=1)
    out = {
        "ce_accuracy": _ratio(agree, total * hyp.shape[1]),
        "ce_precision": _ratio(tp, tp + fp, 0.0),
        "ce_recall": _ratio(tp, tp + fn, 0.0),
        "ce_f1": _ratio(2 * tp, 2 * tp + fp + fn, 0.0),
    }
    hyp_blank, ref_blank = np.isnan(hyp_raw), np.isnan(ref_raw)
    equal = (hyp_raw == ref_raw) | (hyp_blank & ref_blank)
    hit = weights @ ((hyp_raw == ref_raw) & ~hyp_blank)  # (R, 14)
    accuracy = _ratio(weights @ equal, total[:, None])
    precision = _ratio(hit, weights @ ~hyp_blank)
    recall = _ratio(hit, weights @ ~ref_blank)
    f1 = np.where(
        np.isnan(precision) | np.isnan(recall),
        np.nan,
        _ratio(2 * precision * recall, precision + recall, 0.0),
    )
    out.update(
        {
            "ce_release_accuracy": macro_average(accuracy),
            "ce_release_precision": macro_average(precision),
            "ce_release_recall": macro_average(recall),
            "ce_release_f1": macro_average(f1),
        }
    )
    return out


# --------------------------------------------------------------------------- statistics

#: Metrics of many resamples at once: (R, n) item weights (draw counts; a row of ones is the
#: full set) → each metric's (R,) values.
Compute = Callable[[np.ndarray], Mapping[str, np.ndarray]]

#: Resamples evaluated per batch: bounds the (rows × items) weight matrices in memory.
_CELLS_PER_BATCH = 2_000_000


def resample_indices(n_items: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_items) indices drawn with replacement from a seeded generator, so every
    metric of a run and both checkpoints of a comparison use the same resamples. The first k
    rows do not depend on how many rows are drawn: the paper's 30 resamples are the first 30
    of the 1,000 that give the interval."""
    if n_items < 1:
        raise ValueError("cannot bootstrap an empty evaluation set")
    if n_resamples < 1:
        raise ValueError("evaluate.bootstrap must be >= 1")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_items, size=(n_resamples, n_items))


def full_set(compute: Compute, n_items: int) -> dict[str, float]:
    """Every metric of ``compute`` on all items."""
    return {name: float(values[0]) for name, values in compute(np.ones((1, n_items))).items()}


def resampled(compute: Compute, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``compute`` on each row of ``indices`` (R, n), in memory-bounded batches."""
    n_items = indices.shape[1]
    step = max(1, _CELLS_PER_BATCH // max(n_items, 1))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, indices.shape[0], step):
        batch = compute(item_weights(indices[start : start + step], n_items))
        for name, values in batch.items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=float))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    clean = values[~np.isnan(values)]
    if clean.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(clean, [tail, 100 - tail])
    return float(low), float(high)


def _check_counts(n_resamples: int, ci_resamples: int) -> None:
    if n_resamples < 1:
        raise ValueError("evaluate.bootstrap must be >= 1")
    if ci_resamples < n_resamples:
        raise ValueError(
            f"evaluate.bootstrap_ci_resamples ({ci_resamples}) must be >= evaluate.bootstrap "
            f"({n_resamples}): the mean ± std resamples are the first of the interval's"
        )


def bootstrap(
    compute: Compute,
    n_items: int,
    n_resamples: int = 30,
    seed: int = 123,
    confidence: float = 0.95,
    ci_resamples: int = 1000,
) -> dict[str, dict[str, float]]:
    """Every metric of ``compute`` on the full set plus its bootstrap distribution.

    Returns ``{metric: {value, mean, std, resamples, ci_low, ci_high, ci_resamples}}``:
    ``value`` on all items; mean/std over the first ``n_resamples`` resamples (the paper
    reports mean (std) of 30 test-set resamples, docs/model.md §9); a percentile interval at
    ``confidence`` over ``ci_resamples`` resamples (30 are far too few for the 2.5 % tails:
    each tail would rest on less than one value). ``resamples``/``ci_resamples`` count the
    resamples each figure used: NaN resamples (e.g. an AUROC on a one-class resample) are left
    out.
    """
    _check_counts(n_resamples, ci_resamples)
    indices = resample_indices(n_items, ci_resamples, seed)
    full = full_set(compute, n_items)
    draws = resampled(compute, indices)
    out: dict[str, dict[str, float]] = {}
    for name, value in full.items():
        values = draws[name]
        head = values[:n_resamples]
        head = head[~np.isnan(head)]
        low, high = _interval(values, confidence)
        out[name] = {
            "value": float(value),
            "mean": float(head.mean()) if head.size else float("nan"),
            "std": float(head.std(ddof=1)) if head.size > 1 else float("nan"),
            "resamples": int(head.size),
            "ci_low": low,
            "ci_high": high,
            "ci_resamples": int(np.count_nonzero(~np.isnan(values))),
        }
    return out


def paired_bootstrap(
    compute_a: Compute,
    compute_b: Compute,
    n_items: int,
    n_resamples: int = 30,
    seed: int = 123,
    confidence: float = 0.95,
    ci_resamples: int = 1000,
) -> dict[str, dict[str, float]]:
    """Compare two systems scored on the *same* items with the *same* resamples.

    Per metric: both full-set values, the difference B − A with its percentile interval and a
    two-sided bootstrap p-value (twice the share of resample differences on the other side of
    zero, capped at 1), both over ``ci_resamples`` resamples; and two t-tests over the first
    ``n_resamples`` resample values: ``p_ttest_independent``, the paper's test ("an
    independent t-test with a significance value of 0.05" on each model's 30 bootstrap values,
    tables II–V), and ``p_ttest_paired``, which uses that both systems saw the same resamples
    and is the sharper test when they did.
    """
    from scipy.stats import ttest_ind, ttest_rel

    _check_counts(n_resamples, ci_resamples)
    indices = resample_indices(n_items, ci_resamples, seed)
    full_a, full_b = full_set(compute_a, n_items), full_set(compute_b, n_items)
    draws_a, draws_b = resampled(compute_a, indices), resampled(compute_b, indices)
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(full_a) & set(full_b)):
        a_all, b_all = draws_a[name], draws_b[name]
        keep_all = ~(np.isnan(a_all) | np.isnan(b_all))
        diff_all = b_all[keep_all] - a_all[keep_all]
        low, high = _interval(diff_all, confidence)
        if diff_all.size:
            p_boot = min(1.0, 2 * min(np.mean(diff_all <= 0), np.mean(diff_all >= 0)))
        else:
            p_boot = float("nan")
        a, b = a_all[:n_resamples], b_all[:n_resamples]
        keep = ~(np.isnan(a) | np.isnan(b))
        diff = b[keep] - a[keep]
        if diff.size > 1 and np.std(diff) > 0:
            p_paired = float(ttest_rel(b[keep], a[keep]).pvalue)
        else:
            p_paired = float("nan") if diff.size < 2 else (1.0 if np.all(diff == 0) else 0.0)
        if diff.size > 1 and (np.std(a[keep]) > 0 or np.std(b[keep]) > 0):
            p_independent = float(ttest_ind(b[keep], a[keep]).pvalue)
        else:
            p_independent = p_paired  # constant values: equal (1) or different (0) for sure
        out[name] = {
            "a": float(full_a[name]),
            "b": float(full_b[name]),
            "difference": float(full_b[name] - full_a[name]),
            "ci_low": low,
            "ci_high": high,
            "p_bootstrap": float(p_boot),
            "ci_resamples": int(diff_all.size),
            "p_ttest_independent": p_independent,
            "p_ttest_paired": p_paired,
            "resamples": int(diff.size),
        }
    return out
