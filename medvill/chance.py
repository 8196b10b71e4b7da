"""What a model that never looks at the image scores on each downstream task's test set.

A learnability number means little without its floor. The floors are not the textbook ones:
retrieval counts every candidate with the query's CheXpert label set as a hit, so a block of
100 candidates often holds a dozen positives and a random ranking already scores an MRR near
0.3, not 1/100-ish 0.05; most VQA questions can be answered from the question alone ("Is this
chest x-ray normal?" is mostly "no"); and label priors lift a pooled micro-AUROC above 0.5.
Each floor here is computed from the same task files the evaluation reads, with no model:

* retrieval: the exact expected MRR of a uniformly random order of each block;
* VQA: the most frequent training answer of the same (cleaned) question, else of its answer
  type (closed / open), scored as the evaluation scores (the answer's soft target score);
* classification: every test report scored with each label's training prevalence (micro-AUROC);
* report generation: the most frequent training label set asserted for every test report
  (clinical-efficacy F1, positives).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from math import comb

import numpy as np

from medvill import metrics as M
from pipeline.records import CHEXPERT_LABELS


def random_ranking_mrr(candidates: int, positives: int) -> float:
    """E[1 / rank of the first positive] when ``candidates`` items, ``positives`` of them
    relevant, are put in a uniformly random order. The first positive is at rank r (1-based)
    with probability C(n − r, p − 1) / C(n, p)."""
    if not 0 < positives <= candidates:
        raise ValueError(f"need 0 < positives <= candidates, got {positives} of {candidates}")
    total = comb(candidates, positives)
    return sum(
        comb(candidates - r, positives - 1) / total / r
        for r in range(1, candidates - positives + 2)
    )


def retrieval_chance_mrr(blocks: Iterable[Sequence[int]]) -> float:
    """Mean random-order MRR over query blocks, each given as its 0/1 relevance list."""
    values = [random_ranking_mrr(len(block), int(sum(block))) for block in blocks]
    if not values:
        raise ValueError("no retrieval blocks")
    return float(np.mean(values))


def question_prior_answers(
    train_questions: Sequence[str],
    train_answers: Sequence[int],
    train_types: Sequence[str],
    test_questions: Sequence[str],
    test_types: Sequence[str],
) -> np.ndarray:
    """Answer index per test question: the most frequent training answer of that question
    text, else of its answer type, else overall (ties: the smaller answer index)."""

    def top(counter: Counter) -> int:
        return min(counter, key=lambda answer: (-counter[answer], answer))

    by_question: dict[str, Counter] = {}
    by_type: dict[str, Counter] = {}
    for question, answer, kind in zip(train_questions, train_answers, train_types, strict=True):
        by_question.setdefault(question, Counter())[answer] += 1
        by_type.setdefault(kind.strip().upper(), Counter())[answer] += 1
    if not by_question:
        raise ValueError("no training questions")
    overall = Counter(train_answers)
    return np.array(
        [
            top(by_question.get(q) or by_type.get(kind.strip().upper()) or overall)
            for q, kind in zip(test_questions, test_types, strict=True)
        ],
        dtype=int,
    )


def label_matrix(label_sets: Iterable[Iterable[str]]) -> np.ndarray:
    """(n, 14) 0/1 matrix of positive CheXpert labels, in the fixed label order."""
    rows = []
    for labels in label_sets:
        row = np.zeros(len(CHEXPERT_LABELS), dtype=float)
        for name in labels:
            row[CHEXPERT_LABELS.index(name)] = 1.0
        rows.append(row)
    return np.array(rows).reshape(-1, len(CHEXPERT_LABELS))


def label_prior_micro_auroc(train: np.ndarray, test: np.ndarray) -> float:
    """Micro-AUROC of scoring every test report with the training prevalence of each label."""
    scores = np.broadcast_to(train.mean(axis=0), test.shape)
    return M.micro_auroc(test, scores)


def constant_report_ce_f1(train: np.ndarray, test: np.ndarray) -> float:
    """Clinical-efficacy F1 of asserting the most frequent training label set for every test
    report (``train``/``test``: 0/1 label matrices)."""
    counts = Counter(tuple(row) for row in train.astype(int).tolist())
    most_common = max(counts, key=lambda row: (counts[row], row))
    hyp = np.broadcast_to(np.array(most_common, dtype=float), test.shape)
    return M.clinical_efficacy(hyp, test)["ce_f1"]
