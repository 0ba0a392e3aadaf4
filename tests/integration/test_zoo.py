"""Any model transformers can load: the zoo generated from transformers' own causal-LM mapping (tests/zoo.py), each
type planned as ``model=local model.path=DIR`` and checked against what the runtime builds from the plan: the LoRA
config training passes to PEFT (``ftc.runtime.model.lora_config``) on the model transformers loads from DIR creates
exactly the plan's trainable parameters, and the plan reads the architecture from transformers (not a table).

Every buildable type runs in the slow tier; one of each kind (dense, mixture of experts, hybrid, state-space) runs in
the default tier. Training, the saved adapter and the traced step of hand-built models of each kind are
tests/integration/test_architectures.py's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the unit tier runs without torch; this module needs it

from tests import zoo  # noqa: E402
from tests.conftest import plan_for  # noqa: E402

pytestmark = pytest.mark.integration

# One of each kind, in the default tier: dense, mixture of experts (fused experts, a router), hybrid attention +
# state-space (Mamba mixers PEFT refuses some modules of), linear attention + MoE with a shared expert, and a model
# whose experts are not under `.experts.`.
KINDS = {"llama": "dense", "qwen3_moe": "moe", "falcon_h1": "hybrid", "qwen3_next": "hybrid", "jetmoe": "moe",
         "mamba": "ssm", "mpt": "dense"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    cache: dict[str, tuple[Path, str | None]] = {}

    def get(model_type: str) -> tuple[Path, str | None]:
        if model_type not in cache:
            target = root / model_type
            cache[model_type] = (target, zoo.build(model_type, target))
        return cache[model_type]

    return get


def _check(built, model_type: str):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ftc.runtime.model import lora_config

    path, why = built(model_type)
    if why:
        pytest.skip(f"the generic shrink cannot build {model_type}: {why}")
    plan = plan_for(["model=local", f"model.path={path}", "data.max_length=64"])
    assert not [e for e in plan.errors if not e.startswith("memory")], plan.errors
    # the plan says where the architecture came from: transformers and PEFT, or (when transformers cannot build the
    # class from the saved config.json) the tables, with transformers' reason
    assert any(d.startswith("architecture: ") for d in plan.decisions), plan.decisions[:3]
    model = AutoModelForCausalLM.from_pretrained(str(path))
    adapted = get_peft_model(model, lora_config(plan))
    created = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert created == plan.method.trainable_params, (plan.method.target_modules, plan.method.target_parameters)
    assert created > 0
    return plan, path


@pytest.mark.parametrize("model_type", sorted(KINDS))
def test_one_of_each_kind_plans_what_peft_creates(built, model_type):
    _check(built, model_type)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", zoo.model_types())
def test_every_model_type_of_transformers_plans_what_peft_creates(built, model_type):
    _check(built, model_type)


def test_layer_kinds_come_from_the_instantiated_layers(tmp_path):
    """Qwen3-Next as its config class defines it (48 layers: three gated-delta-net linear-attention layers to one
    full attention layer), planned from config.json alone: 12 attention layers, 36 recurrent ones (the tables counted
    all 48 as attention); Falcon-H1's parallel hybrid has attention and a Mamba mixer in every layer."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for model_type, attention, recurrent in (("qwen3_next", 12, 36), ("falcon_h1", 32, 32)):
        directory = tmp_path / model_type
        CONFIG_MAPPING[model_type]().save_pretrained(directory)
        plan = plan_for(["model=local", f"model.path={directory}"])
        assert (plan.model.attention_layers, plan.model.ssm_layers) == (attention, recurrent), model_type
        assert any(d.startswith("layers: ") for d in plan.decisions)
