"""One registry of trainers (ftc/config/objectives.py): what every layer reads of an objective, and the objectives
it makes possible from a YAML file alone."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, plan_for

pytestmark = pytest.mark.unit


def test_the_runtime_builds_exactly_the_registered_trainers():
    from ftc.config.objectives import TRAINERS
    from ftc.runtime.train import BUILDERS

    assert set(BUILDERS) == set(TRAINERS)
    for name, t in TRAINERS.items():
        assert t.name == name and t.formats and t.headline


def test_no_layer_compares_an_objective_or_trainer_name():
    """Every layer dispatches on the registry's entries, never on a name (an objective YAML named anything keeps
    its metrics and its rules)."""
    from ftc.config.objectives import TRAINERS

    names = "|".join(sorted(set(TRAINERS) | {p.stem for p in (ROOT / "conf" / "objective").glob("*.yaml")}
                            - {"base_objective"}))
    compared = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for path in (ROOT / "ftc").rglob("*.py"):
        if path.name == "objectives.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if compared.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_an_objective_from_a_yaml_alone_plans_runs_and_is_judged_as_its_trainer(tmp_path):
    """conf/objective/ipo.yaml names DPO's trainer and the IPO loss, nothing else: the plan costs it as DPO, the
    rules check its loss against TRL's, and a sweep of it ranks by preference accuracy."""
    from ftc.sweep.report import write_report

    assert (ROOT / "conf" / "objective" / "ipo.yaml").read_text().count("\n") < 10
    plan = plan_for(["objective=ipo", "data=sample_preference"])
    assert plan.errors == () and plan.objective.loss_type == "ipo"
    assert (plan.objective.sequences_per_example, plan.objective.reference_forwards) == (2, 1)
    bad = plan_for(["objective=ipo", "data=sample_preference", "objective.loss_type=nope"])
    assert any(e.startswith("objective.loss_type") and "ipo" in e for e in bad.errors)
    for n, accuracy in enumerate((0.6, 0.8)):
        trial = tmp_path / str(n)
        trial.mkdir()
        (trial / "plan.json").write_text(json.dumps({"objective": {"name": "ipo", "trainer": "dpo"}}))
        (trial / "summary.json").write_text(json.dumps({"status": "completed", "eval": {"tuned": {
            "preference_accuracy": accuracy, "logp_margin": 1.0}}}))
    text = write_report(str(tmp_path))
    assert "preference_accuracy" in text.split("\n", 3)[0] + text and text.index("| 1 ") < text.index("| 0 ")


def test_orpo_needs_no_reference_and_costs_less_than_dpo():
    orpo = plan_for(["objective=orpo", "data=sample_preference", "model=llama3_8b", "method=qlora",
                     "hardware=rtx4090"])
    dpo = plan_for(["objective=dpo", "data=sample_preference", "model=llama3_8b", "method=qlora", "hardware=rtx4090"])
    assert orpo.errors == () and orpo.objective.reference_forwards == 0
    assert orpo.time.train_flops_per_token < dpo.time.train_flops_per_token


def test_kto_unpairs_the_pairs_and_counts_its_steps_so():
    kto = plan_for(["objective=kto", "data=sample_preference"])
    dpo = plan_for(["objective=dpo", "data=sample_preference"])
    assert kto.errors == () and kto.objective.loss_type == "kto"
    assert kto.schedule.sequences_per_epoch == 2 * dpo.schedule.sequences_per_epoch
    assert kto.schedule.steps == 2 * dpo.schedule.steps


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto", "ipo"])
def test_a_preference_objective_refuses_other_data_with_the_fix(objective):
    plan = plan_for([f"objective={objective}"])
    error = next(e for e in plan.errors if e.startswith("data.format"))
    assert "not alpaca rows" in error and "data=sample_preference" in error
