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
# Types whose forward reads tensor values to decide shapes (JetMoE's expert sizes with .tolist(), XLM's lengths with
# .item()): fake tensors cannot run it, and `ftc plan --trace` says so, keeping the analytic figures.
TRACE_REFUSED = {"jetmoe", "xlm"}
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
    return plan, path, adapted


def _end_to_end(built, model_type: str, tmp_path: Path):
    """plan == what PEFT creates == what the adapter saves; three optimizer steps lower nothing to NaN and move the
    adapter; the plan's traced step (``ftc plan --trace``) runs on the real model class."""
    from safetensors import safe_open

    from ftc.runtime.trace import TraceUnsupported, trace_step

    plan, path, adapted = _check(built, model_type)
    torch.manual_seed(0)
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    vocab = adapted.get_input_embeddings().num_embeddings
    ids = torch.randint(0, min(vocab, 200), (2, 16))
    adapted.train()
    for _ in range(3):
        loss = adapted(input_ids=ids, labels=ids, use_cache=False).loss
        assert torch.isfinite(loss), loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, trainable)), "no adapter weight moved"
    adapted.save_pretrained(tmp_path / "adapter")
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        saved = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert saved == plan.method.trainable_params
    if model_type in TRACE_REFUSED:
        with pytest.raises(TraceUnsupported, match="reads tensor values"):
            trace_step(plan, 1, 16)
        return
    traced = trace_step(plan, 1, 16)
    assert traced.activations_bytes > 0 and traced.flops > 0


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("model_type", sorted(KINDS))
def test_one_of_each_kind_is_right_end_to_end(built, model_type, tmp_path):
    _end_to_end(built, model_type, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", zoo.model_types())
def test_every_model_type_of_transformers_is_right_end_to_end(built, model_type, tmp_path):
    _end_to_end(built, model_type, tmp_path)


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


# --- the nine classes of failure issue 34 found, each on a family of that class (each fails on the table-driven
# --- planner this replaced: aa415ba) ------------------------------------------------------------------------------
def _loaded_experts(path: Path) -> set[str]:
    """The 3-D expert parameters of the model as transformers loads it (the checkpoint stores them per expert)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path))
    return {n for n, p in model.named_parameters() if p.dim() == 3}


@pytest.mark.parametrize("model_type", ["phimoe", "minimax_m2"])
def test_class1_experts_are_targeted_under_the_names_transformers_loads(built, model_type):
    """Expert layouts outside ftc's old conversion table: the plan targets the fused experts transformers loads (the
    table's stored names no longer exist after loading; PEFT refused the router or froze the experts)."""
    plan, path, _ = _check(built, model_type)
    experts = _loaded_experts(path)
    assert plan.method.target_parameters and all(any(e.endswith(t) for e in experts)
                                                 for t in plan.method.target_parameters), (plan.method, experts)
    assert not set(plan.method.target_modules) & set(plan.model.moe.routers)


@pytest.mark.parametrize("model_type, layers", [("mpt", 2), ("xglm", 2), ("nemotron_h", 4)])
def test_class2_configs_that_name_their_sizes_differently_are_read(built, model_type, layers):
    """d_model/n_heads/n_layers (MPT), num_layers (XGLM), no layer count key at all (Nemotron-H's per-layer pattern):
    read through transformers' config object, not refused as 'config.json not found'."""
    plan, _, _ = _check(built, model_type)
    assert (plan.model.num_layers, plan.model.hidden_size) == (layers, 64)


def test_class3_a_per_layer_intermediate_size_plans_at_its_widest(tmp_path):
    """Gemma-3n keeps intermediate_size as a list per layer: planned at the widest layer (it crashed the plan)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from ftc.runtime.model import lora_config

    config = CONFIG_MAPPING["gemma3n_text"](
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=[128, 96, 128, 64], vocab_size=256, vocab_size_per_layer_input=256,
        hidden_size_per_layer_input=8, num_kv_shared_layers=0, activation_sparsity_pattern=[0.0] * 4, laurel_rank=4,
        layer_types=["sliding_attention"] * 3 + ["full_attention"])
    config.save_pretrained(tmp_path)
    plan = plan_for(["model=local", f"model.path={tmp_path}", "data.max_length=64"])
    assert not [e for e in plan.errors if not e.startswith("memory")], plan.errors
    assert plan.model.intermediate_size == 128
    with torch.device("meta"):
        adapted = get_peft_model(AutoModelForCausalLM.from_config(config), lora_config(plan))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == plan.method.trainable_params


def test_class4_a_module_list_inside_a_layer_is_targeted_by_parent_and_index(built, tmp_path):
    """CTRL's feed-forward is a Sequential (ffn.0, ffn.2): the targets are 'ffn.0'/'ffn.2', never a bare '0' that PEFT
    matched to whole decoder layers (training crashed)."""
    plan = _check(built, "ctrl")[0]
    assert {"ffn.0", "ffn.2"} <= set(plan.method.target_modules)
    assert not [t for t in plan.method.target_modules if t.isdigit()]
    _end_to_end(built, "ctrl", tmp_path)


@pytest.mark.parametrize("model_type, experts, top_k", [("ernie4_5_moe", 64, 6), ("aria_text", 8, 2)])
def test_class5_a_mixture_of_experts_under_other_key_names_is_one(built, model_type, experts, top_k):
    """moe_num_experts / moe_k / moe_topk: recognised as a mixture of experts (expert memory terms, the router loss)."""
    plan = _check(built, model_type)[0]
    assert plan.model.moe is not None and (plan.model.moe.experts, plan.model.moe.experts_per_token) == (experts,
                                                                                                        top_k)
    assert plan.model.moe.expert_params > 0
    assert any(d.startswith("loss=model (mixture of experts") for d in plan.decisions)


def test_class6_experts_outside_an_experts_module_are_adapted_and_the_router_is_not(built):
    """JetMoE keeps its experts as mlp.input_linear / mlp.output_linear (3-D) and routes with router.layer: the
    experts are adapted, the router is not (it was the reverse)."""
    plan = _check(built, "jetmoe")[0]
    assert {"mlp.input_linear.weight", "mlp.output_linear.weight"} <= set(plan.method.target_parameters)
    assert "layer" in plan.model.moe.routers and "layer" not in plan.method.target_modules


def test_class7_a_shared_expert_is_adapted_where_peft_does_not_rename_it(built):
    """Flint's shared expert (shared_expert.gate_proj...) on a model type outside PEFT's MoE renaming table: in
    all-linear, and naming it is planned as PEFT creates it (it was left out with a false reason, and refused)."""
    plan = _check(built, "flint")[0]
    assert {"gate_proj", "up_proj", "down_proj"} <= set(plan.method.target_modules)
    path = built("flint")[0]
    named = plan_for(["model=local", f"model.path={path}", "data.max_length=64",
                      "method.target_modules=[q_proj,gate_proj]"])
    assert not [e for e in named.errors if not e.startswith("memory")], named.errors
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ftc.runtime.model import lora_config

    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(str(path)), lora_config(named))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) == named.method.trainable_params
    assert any(n.endswith("shared_expert.gate_proj.lora_A.default.weight") for n, _ in adapted.named_parameters())


def test_class8_the_trace_finds_the_decoder_and_says_what_it_cannot_trace(built):
    """Llama 4's base_model_prefix is not an attribute of its causal LM: the trace finds the decoder by its
    embeddings. JetMoE routes with .tolist(), which fake tensors refuse: `ftc plan --trace` says so in one line,
    keeps the analytic plan and exits 0 (it raised a traceback)."""
    import subprocess
    import sys

    from ftc.runtime.trace import trace_step

    plan, _, _ = _check(built, "llama4_text")
    assert trace_step(plan, 1, 16).activations_bytes > 0
    path = built("jetmoe")[0]
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--trace", "model=local", f"model.path={path}",
                        "data.max_length=64"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "--trace: jetmoe's forward reads tensor values to decide shapes" in r.stderr


def test_a_linear_whose_forward_reshapes_its_weight_is_left_out_with_why(built):
    """Found by the zoo: DeepSeek-V4's grouped output projection (o_a_proj) is an nn.Linear by class, so all-linear
    takes it, but its forward reshapes the weight and a LoRA adapter of the Linear's shape breaks the forward. The
    description runs the adapted model once under fake tensors and leaves such a module out, saying why."""
    plan = _check(built, "deepseek_v4")[0]
    assert "o_a_proj" not in plan.method.target_modules
    assert any("o_a_proj" in w and "breaks deepseek_v4's forward" in w for w in plan.decisions + plan.warnings), \
        plan.decisions


def test_a_catalog_model_is_described_and_traced_offline_from_the_config_json_ftc_ships(tmp_path):
    """model=llama3_8b with no download and an empty Hugging Face cache: the plan is transformers' description of
    the shipped config.json (not a table), and `ftc plan --trace` traces it (it needed the hub before)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--trace", "--json", "model=llama3_8b",
                        "method=qlora", "hardware=rtx4090"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert any(d.startswith("architecture: as transformers and PEFT build it (LlamaForCausalLM")
               for d in plan["decisions"])
    assert plan["model"]["params"] == 8_030_261_248  # Llama-3.1-8B, counted by transformers on the meta device
    assert plan["memory"]["traced"]["activations_gb"] > 0
