"""Hydra composition: the test helper that builds typed configs without Hydra agrees with Hydra's compose."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import ROOT, typed_config

pytestmark = pytest.mark.unit

CASES = [[], ["model=mistral_7b", "method=qlora", "hardware=a10g_x4", "launcher=ray",  # an option built on another
              "method.target_modules=[q_proj,v_proj]", "train.epochs=null", "train.max_steps=10"],
         ["data=file", "data.path=/x.jsonl", "+data.fields.output=answer"]]
CASES += [[f"recipe={p.stem}"] for p in sorted((ROOT / "recipes").glob("*.yaml"))]
CASES[-1].append("model=tiny")  # a command-line group choice wins over the recipe's


@pytest.fixture(scope="module")
def hydra_compose():
    from hydra import compose, initialize_config_module

    from ftc.config.schema import register

    register()
    with initialize_config_module(config_module="ftc.conf", version_base="1.3"):  # once for the module
        yield lambda overrides: compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: " ".join(o) or "default")
def test_typed_helper_equals_hydra_compose(overrides, hydra_compose):
    from ftc.compiler.frontend import to_typed

    hydra = dataclasses.replace(to_typed(hydra_compose(overrides)), output_dir="runs/test")
    assert typed_config(overrides) == hydra


def test_a_profile_swapped_into_a_composition_equals_composing_it(hydra_compose):
    """hardware=auto composes once per launcher and swaps each profile in (advisor.on_profile): the typed config
    must be what composing hardware=<profile> gives, for every shipped GPU profile."""
    from ftc.advisor import _profile_shape, on_profile, profiles
    from ftc.compiler.frontend import to_typed

    base = ["model=llama3_8b", "method=qlora"]
    for name in profiles():
        accelerator, devices = _profile_shape(name)
        if accelerator != "cuda":
            continue
        launcher = "launcher=ray" if devices > 1 else "launcher=local"
        swapped = to_typed(on_profile(hydra_compose(base + [launcher]), name))
        composed = to_typed(hydra_compose(base + [launcher, f"hardware={name}"]))
        assert dataclasses.replace(swapped, output_dir="x") == dataclasses.replace(composed, output_dir="x"), name
