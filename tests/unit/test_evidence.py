"""ftc's plan against published, measured runs (tests/evidence/): the accuracy the docs claim, held, and the fitted
constants equal to what the leave-one-source-out procedure gives."""

from __future__ import annotations

import math
import statistics

import pytest

from ftc.compiler import estimate as est
from ftc.compiler.draft import verdict
from tests.conftest import ROOT
from tests.evidence import fit, table

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def rows():
    return table.rows()


@pytest.fixture(scope="module")
def held(rows):
    return fit.held_out(rows, fit.unpressured_sources())[1]


def test_the_table_covers_enough_independent_runs(rows):
    memory = fit.memory_rows(rows)
    assert len(memory) >= 60
    assert len({r.source for r in memory}) >= 5
    assert len({r.source for r in rows if not r.excluded}) >= 6


def test_the_fitted_factor_and_band_are_what_leave_one_source_out_gives(rows, held):
    """est.MEMORY_FIT is the fit on every source; est.MEMORY_BAND holds every held-out row (rounded outwards)."""
    assert est.MEMORY_FIT == pytest.approx(fit.fit(fit.memory_rows(rows)), abs=0.005)
    low, high = fit.band(held)
    assert est.MEMORY_BAND == (math.floor(low * 100) / 100, math.ceil(high * 100) / 100)


def test_held_out_memory_error_is_within_twelve_percent_with_no_systematic_low_side(held):
    s = fit.summary(held)
    assert s["sources"] >= 5
    assert s["median"] <= 0.12
    assert abs(s["signed"]) <= 0.05


def test_each_held_out_source_is_within_thirty_percent_at_its_median(held):
    by: dict[str, list[float]] = {}
    for h in held:
        by.setdefault(h.source, []).append(abs(h.error))
    assert {s: statistics.median(e) <= 0.30 for s, e in by.items()} == {s: True for s in by}


def test_a_measured_peak_above_the_card_is_never_fits_and_a_run_that_ran_is_never_does_not_fit(rows):
    """For every row, a card just below what the source measured must not be "fits" (unless the source's figure
    bounds the need from above only) and a card at what it measured must not be "does not fit"; a run that ran out
    of memory on its card must not be "fits" there."""
    unpressured = fit.unpressured_sources()
    wrong = []
    for r in fit.memory_rows(rows):
        if r.source not in unpressured and verdict(r.predicted_gb, r.measured_gb * 0.999, r.floor_gb) == "fits":
            wrong.append(("fits below its peak", r.label))
        if verdict(r.predicted_gb, r.measured_gb, r.floor_gb) == "does_not_fit":
            wrong.append(("does not fit at its peak", r.label))
    out_of_memory = [r for r in rows if r.oom and not r.excluded]
    assert out_of_memory
    wrong += [("fits where it ran out of memory", r.label) for r in out_of_memory
              if verdict(r.predicted_gb, r.card_gb, r.floor_gb) == "fits"]
    assert wrong == []


def test_no_run_that_ran_is_refused(rows):
    refused = [r.label for r in rows if not r.excluded and not r.oom and not r.fits]
    assert refused == []


def test_full_fine_tuning_is_within_25_percent_where_the_source_measured_the_need(rows):
    """bf16 weights with a paged 8-bit AdamW (torchtune) and DeepSpeed ZeRO-3's fp32 master copy (Qwen, 2 GPUs)."""
    unpressured = fit.unpressured_sources()
    full = [r for r in fit.memory_rows(rows) if r.method == "full" and r.source not in unpressured]
    assert len(full) >= 4 and all(abs(r.memory_error) <= 0.25 for r in full), [(r.label, r.memory_error)
                                                                                for r in full]


def test_median_tokens_per_second_error_is_within_25_percent(rows):
    assert table.summary(rows)["tps_median"] <= 0.25


def test_throughput_rows_no_constant_was_fitted_on_are_within_25_percent(rows):
    """The rows no constant was fitted on (full fine-tuning's optimizer step, DoRA) test the fitted constants rather
    than echo them; tests/integration/test_evidence_fit.py holds each source out of the utilisation fit."""
    held_out = [r for r in rows if r.tps_error is not None and not (r.excluded or r.tps_excluded or r.fitted)]
    assert len(held_out) >= 2
    assert {r.label: abs(r.tps_error) <= 0.25 for r in held_out} == {r.label: True for r in held_out}


def test_docs_carry_the_current_tables(rows):
    """docs/ESTIMATES.md shows the tables this code computes (regenerate: python -m tests.evidence.table and
    python -m tests.evidence.fit)."""
    text = (ROOT / "docs" / "ESTIMATES.md").read_text()
    assert table.markdown(rows) in text
    assert fit.markdown(rows) in text
