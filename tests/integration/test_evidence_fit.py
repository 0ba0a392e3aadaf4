"""Throughput against published runs with each source held out of the utilisation fit (tests/evidence/fit.py).

Compiles every throughput row at each utilisation it tries (~10 s), so it sits in the integration tier beside the
unit tier's memory checks (tests/unit/test_evidence.py)."""

from __future__ import annotations

import statistics

import pytest

from tests.conftest import ROOT
from tests.evidence import fit

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def held():
    return fit.throughput_held_out()


def test_tokens_per_second_held_out_of_the_fit_is_within_25_percent_at_the_median(held):
    """A utilisation fitted on one card and model predicts the other's rows: PEFT's L40S from Qwen's A100 and back."""
    assert len({source for source, _, _ in held}) >= 2
    assert statistics.median(abs(e) for _, _, e in held) <= 0.25


def test_docs_carry_the_current_throughput_table():
    """docs/ESTIMATES.md shows it (regenerate: python -m tests.evidence.fit tps)."""
    assert fit.throughput_markdown() in (ROOT / "docs" / "ESTIMATES.md").read_text()
