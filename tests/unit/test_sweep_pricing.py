"""A sweep's price: every trial's own time, and the baselines' evaluation once where trials share it (the first
trial computes it, ``base_once`` hands it to the others)."""

from __future__ import annotations

import pytest

from ftc.plan import runs_total
from ftc.sweep.preflight import Trial, totals, wall_hours
from tests.conftest import plan_for

pytestmark = pytest.mark.unit


def test_trials_that_share_the_base_model_and_test_set_pay_its_evaluation_once():
    lrs = [plan_for(["train.lr=1e-4"]), plan_for(["train.lr=3e-4"]), plan_for(["train.lr=1e-3"])]
    base = lrs[0].time.baseline_hours
    assert 0 < base < lrs[0].time.eval_hours <= lrs[0].time.hours
    trials = [Trial((), p) for p in lrs]
    own = sum(p.time.hours for p in lrs)
    assert wall_hours(trials) == pytest.approx(own - 2 * base, rel=1e-6)
    usd, device_hours = totals(trials)
    assert device_hours == pytest.approx(sum(p.cost.device_hours * (1 - p.time.baseline_hours / p.time.hours)
                                             for p in lrs) + lrs[0].cost.device_hours * base / lrs[0].time.hours)
    # Another evaluation setting is another baseline: each pays its own.
    other = [lrs[0], plan_for(["eval.max_new_tokens=8"])]
    assert runs_total(other, lambda p: p.time.hours) == pytest.approx(sum(p.time.hours for p in other))


def test_no_baselines_no_shared_time():
    plan = plan_for(["eval.baselines=[]"])
    assert plan.time.baseline_hours == 0
    assert runs_total([plan, plan], lambda p: p.time.hours) == pytest.approx(2 * plan.time.hours)
