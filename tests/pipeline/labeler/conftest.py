"""Shared fixtures for the labeler tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.labeler.api import Labeler

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def spacy_labeler() -> Labeler:
    """One spaCy-backed labeler for the whole session (the model loads once)."""
    labeler = Labeler()
    labeler.warm_up()
    return labeler
