"""The plan describes the target machine: a GPU plan never depends on the planner's packages, and ``ftc train``
checks the live packages the plan depends on before loading any weight."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import plan_for

pytestmark = pytest.mark.unit

FLASH = ["model=llama3_8b", "method=qlora", "hardware=a100_80g", "model.attn_implementation=flash_attention_2"]


def test_a_gpu_plan_uses_the_declared_packages_not_this_machines():
    """flash-attn is not installed here; a plan for an A100 whose image has it is not refused for that, and packs."""
    refused = plan_for(FLASH)
    assert any(e.startswith("model.attn_implementation") and "hardware.packages" in e for e in refused.errors)
    declared = plan_for([*FLASH, "hardware.packages=[flash_attn,liger_kernel,wandb]"])
    assert declared.errors == (), declared.errors
    assert declared.data.packing and declared.train.loss == "liger"
    assert declared.hardware.packages == ("flash_attn", "liger_kernel", "wandb")
    assert plan_for([*FLASH, "hardware.packages=[flash_attn]", "train.report_to=[wandb]"]).errors != ()


def test_an_undeclared_gpu_plan_assumes_no_optional_package_and_says_so():
    plan = plan_for(["model=llama3_8b", "hardware=a100_80g"])
    assert plan.hardware.packages == () and plan.train.loss == "selective" and plan.train.report_to == ()
    assert any(d.startswith("target packages: none assumed") for d in plan.decisions)


def test_a_cpu_plan_uses_this_machines_packages():
    from ftc.compiler.facts import installed_packages

    plan = plan_for([])
    assert set(plan.hardware.packages) == {n for n, ok in installed_packages().items() if ok}


def test_train_refuses_before_loading_when_a_planned_package_is_missing(monkeypatch):
    from ftc.errors import UserError
    from ftc.runtime import environment

    plan = plan_for([*FLASH, "hardware.packages=[flash_attn,liger_kernel]"])
    assert set(environment.required(plan)) == {"flash_attn", "liger_kernel"}
    with pytest.raises(UserError) as e:
        environment.check(plan)
    assert "flash_attn (for model.attn_implementation=flash_attention_2)" in str(e.value)
    assert "Nothing was loaded" in str(e.value)
    monkeypatch.setattr(environment.importlib.util, "find_spec", lambda name: object())
    environment.check(plan)  # all present: no complaint
    plain = dataclasses.replace(plan, train=dataclasses.replace(plan.train, loss="selective", report_to=()),
                                model=dataclasses.replace(plan.model, attn_implementation="sdpa"))
    assert environment.required(plain) == {}
