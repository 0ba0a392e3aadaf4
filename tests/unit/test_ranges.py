"""Every numeric and enumerated setting is checked at plan time from one declaration beside its field
(``schema.checked``): the key, what it accepts and a fix, no traceback, and every other problem still found."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from ftc.config import schema
from tests.conftest import plan_for

pytestmark = pytest.mark.unit

SECTIONS = {"model": schema.ModelConfig, "method": schema.MethodConfig, "objective": schema.ObjectiveConfig,
            "data": schema.DataConfig, "hardware": schema.HardwareConfig, "launcher": schema.LauncherConfig,
            "train": schema.TrainConfig, "eval": schema.EvalConfig, "budget": schema.BudgetConfig}
# Enumerations whose valid names live in a registry above the schema, each checked by its own rule (test_rules.py).
REGISTRY_CHECKED = {"objective.trainer", "objective.loss_type", "data.format", "launcher.kind", "model.family",
                    "train.report_to"}


def _checked_fields():
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            check = schema.field_check(f)
            if check is not None:
                yield pytest.param(section, f, check, id=f"{section}.{f.name}")


def _outside(f, check) -> typing.Any:
    """A value the check refuses, of the field's type."""
    if check.shape:
        return [5] if check.shape == "mappings" else 5  # a number where names or mappings belong
    if check.choices:
        return "bogus" if isinstance(check.choices[0], str) else 1 if 1 not in check.choices else 5
    integer = typing.get_type_hints(SECTIONS_BY_CLASS[f]).get(f.name) in (int, typing.Optional[int])
    step = 1 if integer else 0.5
    if check.ge is not None:
        return check.ge - step
    if check.gt is not None:
        return check.gt
    if check.lt is not None:
        return check.lt
    return check.le + step


SECTIONS_BY_CLASS: dict = {}
for _cls in SECTIONS.values():
    for _f in dataclasses.fields(_cls):
        SECTIONS_BY_CLASS[_f] = _cls


def test_every_numeric_and_enumerated_field_declares_what_it_accepts():
    unchecked = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            numeric = hints[f.name] in (int, float, typing.Optional[int], typing.Optional[float])
            if numeric and schema.field_check(f) is None:
                unchecked.append(f"{section}.{f.name}")
    assert unchecked == [], f"declare a range with schema.checked(...): {unchecked}"
    assert all(key.split(".")[1] in {f.name for f in dataclasses.fields(SECTIONS[key.split(".")[0]])}
               for key in REGISTRY_CHECKED)


@pytest.mark.parametrize("section,f,check", list(_checked_fields()))
def test_a_value_outside_the_declared_range_is_refused_naming_key_range_and_fix(section, f, check):
    key, bad = f"{section}.{f.name}", _outside(f, check)
    plan = plan_for([f"{key}={bad}"])
    errors = [e for e in plan.errors if e.startswith(f"{key}:")]
    assert errors, (key, bad, plan.errors)
    assert f"got {bad!r}" in errors[0] and check.allowed() in errors[0] and f"(fix: {key}=" in errors[0]
    assert any(d.startswith("values outside") and key in d for d in plan.decisions)  # compiled on sane values


def test_other_problems_are_still_found_beside_a_range_error():
    plan = plan_for(["train.lr=-1", "method.r=0", "model.attn_implementation=flash_attention_2"])
    keys = {e.split(":", 1)[0] for e in plan.errors}
    assert {"train.lr", "method.r", "model.attn_implementation"} <= keys
    assert "method.r: LoRA rank must be >= 1, got 0 (fix: method.r=8)" in plan.errors


def test_an_unknown_optimizer_is_an_error_listing_valid_names():
    error = next(e for e in plan_for(["train.optim=adamw_hf"]).errors if e.startswith("train.optim:"))
    assert "adamw_torch" in error and "paged_adamw_8bit" in error and "got 'adamw_hf'" in error


def _float_fields():
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] in (float, typing.Optional[float]):
                yield pytest.param(section, f.name, id=f"{section}.{f.name}")


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
@pytest.mark.parametrize("section,name", list(_float_fields()))
def test_a_non_finite_number_is_refused_wherever_the_schema_takes_a_float(section, name, value):
    """inf passes every lower bound and NaN compares false with every bound: neither may reach a run."""
    key = f"{section}.{name}"
    errors = [e for e in plan_for([f"{key}={value}"]).errors if e.startswith(f"{key}:")]
    assert errors and "a finite number" in errors[0] and f"(fix: {key}=" in errors[0], errors
