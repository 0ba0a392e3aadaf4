"""ftc's plan against published, measured runs (tests/evidence/): the accuracy the docs claim, held."""

from __future__ import annotations

import statistics

import pytest

from tests.conftest import ROOT
from tests.evidence import table

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def rows():
    return table.rows()


def test_the_table_covers_enough_independent_runs(rows):
    included = [r for r in rows if r.memory_error is not None and not r.excluded]
    assert len(included) >= 15
    assert len({r.source for r in included}) >= 3


def test_median_memory_error_is_within_ten_percent(rows):
    assert table.summary(rows)["memory_median"] <= 0.10


def test_no_run_that_ran_is_refused(rows):
    refused = [r.label for r in rows if not r.excluded and not r.fits]
    assert refused == []


def test_full_fine_tuning_with_an_8bit_paged_optimizer_in_bf16_is_within_25_percent(rows):
    full = [r for r in rows if r.method == "full" and not r.excluded and r.memory_error is not None]
    assert full and all(abs(r.memory_error) <= 0.25 for r in full)


def test_each_source_is_within_twenty_percent_at_its_median(rows):
    by_source: dict[str, list[float]] = {}
    for r in rows:
        if r.memory_error is not None and not r.excluded:
            by_source.setdefault(r.source, []).append(abs(r.memory_error))
    assert {s: statistics.median(e) <= 0.20 for s, e in by_source.items()} == {s: True for s in by_source}


def test_median_tokens_per_second_error_is_within_25_percent(rows):
    assert table.summary(rows)["tps_median"] <= 0.25


def test_throughput_rows_no_constant_was_fitted_on_are_within_25_percent(rows):
    """The held-out rows (full fine-tuning's optimizer step, DoRA) test the fitted constants rather than echo them."""
    held_out = [r for r in rows if r.tps_error is not None and not (r.excluded or r.tps_excluded or r.fitted)]
    assert len(held_out) >= 2
    assert {r.label: abs(r.tps_error) <= 0.25 for r in held_out} == {r.label: True for r in held_out}


def test_docs_carry_the_current_table(rows):
    """docs/ESTIMATES.md shows the table this code computes (regenerate: python -m tests.evidence.table)."""
    assert table.markdown(rows) in (ROOT / "docs" / "ESTIMATES.md").read_text()
