"""Shared by the X-VL tests: tiny models run on one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models on one intra-op thread: on a busy machine two threads spin-wait for each
    other and run many times slower (benchmarks/bench_xvl.py measured 15×)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
