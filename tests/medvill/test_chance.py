"""The no-image floors of the learnability benchmark against hand values and simulation."""

from __future__ import annotations

import numpy as np
import pytest

from medvill import chance
from pipeline.records import CHEXPERT_LABELS


def test_random_ranking_mrr_hand_values() -> None:
    assert chance.random_ranking_mrr(100, 1) == pytest.approx(
        sum(1 / r for r in range(1, 101)) / 100
    )
    assert chance.random_ranking_mrr(100, 1) == pytest.approx(0.0519, abs=1e-4)  # the 0.05
    assert chance.random_ranking_mrr(2, 1) == pytest.approx(0.75)
    assert chance.random_ranking_mrr(3, 2) == pytest.approx(2 / 3 + 1 / 3 / 2)
    assert chance.random_ranking_mrr(4, 4) == pytest.approx(1.0)


def test_random_ranking_mrr_matches_shuffled_blocks() -> None:
    """A dozen positives in 100 candidates (what label-set retrieval blocks hold): ≈ 0.28."""
    rng = np.random.default_rng(0)
    ranks = [np.flatnonzero(rng.permutation(100) < 12)[0] + 1 for _ in range(40_000)]
    simulated = float(np.mean(1.0 / np.asarray(ranks)))
    assert chance.random_ranking_mrr(100, 12) == pytest.approx(simulated, abs=0.004)
    assert 0.25 < simulated < 0.31


def test_random_ranking_mrr_rejects_a_block_without_positives() -> None:
    with pytest.raises(ValueError, match="0 < positives <= candidates"):
        chance.random_ranking_mrr(10, 0)


def test_retrieval_chance_is_the_mean_over_blocks() -> None:
    blocks = [[1, 0], [0, 1, 1], [1, 1, 1, 1]]
    expected = (0.75 + (2 / 3 + 1 / 6) + 1.0) / 3
    assert chance.retrieval_chance_mrr(blocks) == pytest.approx(expected)


def test_question_prior_answers_fall_back_from_question_to_type_to_overall() -> None:
    predicted = chance.question_prior_answers(
        train_questions=["is it normal", "is it normal", "is it normal", "which side", "how big"],
        train_answers=[0, 0, 1, 2, 3],
        train_types=["CLOSED", "CLOSED", "CLOSED", "OPEN", "OPEN"],
        test_questions=["is it normal", "which side", "is there a tube", "what view"],
        test_types=["CLOSED", "OPEN", "closed", "OPEN"],
    )
    # own question's majority; own question; unseen closed question → closed majority (0);
    # unseen open question → open answers tie (2 and 3) → the smaller index
    assert predicted.tolist() == [0, 2, 0, 2]


def test_label_prior_micro_auroc_scores_cells_by_training_prevalence() -> None:
    cardio, effusion = (
        CHEXPERT_LABELS.index("Cardiomegaly"),
        CHEXPERT_LABELS.index("Pleural Effusion"),
    )
    train = chance.label_matrix([["Cardiomegaly"], ["Cardiomegaly", "Pleural Effusion"], []])
    test = chance.label_matrix([["Cardiomegaly"], ["Pleural Effusion"]])
    assert train[:, cardio].tolist() == [1, 1, 0] and train[:, effusion].tolist() == [0, 1, 0]
    # positives score 2/3 (cardio) and 1/3 (effusion); 26 negatives: 1 at 2/3, 1 at 1/3, 24 at 0
    # P(pos > neg) + ½ P(tie), averaged over the 2 × 26 pairs
    expected = ((24 + 1 + 0.5) + (24 + 0.5)) / (2 * 26)
    assert chance.label_prior_micro_auroc(train, test) == pytest.approx(expected)


def test_constant_report_asserts_the_most_frequent_training_label_set() -> None:
    train = chance.label_matrix([["No Finding"], ["No Finding"], ["Cardiomegaly"]])
    test = chance.label_matrix([["No Finding"], ["Cardiomegaly"]])
    # "No Finding" for both: TP 1, FP 1, FN 1 → F1 0.5
    assert chance.constant_report_ce_f1(train, test) == pytest.approx(0.5)


def test_label_matrix_rejects_an_unknown_label() -> None:
    with pytest.raises(ValueError):
        chance.label_matrix([["Cardiomegally"]])
