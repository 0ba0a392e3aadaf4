"""Golden plan fields for representative groups, recipes snapshots, estimator formulas, serialization."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftc.render import plan_table
from tests.conftest import ROOT, plan_for

pytestmark = pytest.mark.unit

RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
SNAPSHOTS = Path(__file__).resolve().parent.parent / "snapshots"


def _get(plan_dict, dotted):
    for part in dotted.split("."):
        plan_dict = plan_dict[part]
    return plan_dict


@pytest.mark.parametrize("overrides,expected", [
    pytest.param([], {"model.name": "tiny", "method.name": "lora", "precision": "fp32", "world_size": 1,
                      "batch.global": 16, "launcher.kind": "local", "deepspeed": None, "memory.fits": True,
                      "cost.usd": 0.0, "hardware.accelerator": "cpu"}, id="default"),
    pytest.param(["model=mistral_7b", "method=qlora", "hardware=rtx4090"],
                 {"precision": "bf16", "method.quantization.bits": 4, "method.quantization.quant_type": "nf4",
                  "method.quantization.double_quant": True, "method.quantization.compute_dtype": "bf16",
                  "method.quantization.storage_dtype": "uint8", "memory.fits": True, "batch.global": 16,
                  "method.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"]}, id="qlora-mistral-4090"),
    pytest.param(["model=llama3_8b", "method=lora", "hardware=a100_80g_x4", "launcher=ray"],
                 {"world_size": 4, "batch.world": 4, "batch.global": 16, "deepspeed.zero_optimization.stage": 3,
                  "deepspeed.train_batch_size": 16, "launcher.kind": "ray", "launcher.num_workers": 4,
                  "launcher.use_gpu": True, "launcher.resources_per_worker.GPU": 1.0,
                  "deepspeed.zero_optimization.stage3_gather_16bit_weights_on_model_save": True},
                 id="lora-llama3-zero3-x4"),
    pytest.param(["model=qwen2_5_7b", "method=lora", "hardware=t4"], {"precision": "fp16", "memory.fits": False},
                 id="t4-fp16-does-not-fit"),
    pytest.param(["model=phi3_mini", "method=dora", "hardware=a100_80g"],
                 # the model's own module order (Phi3Attention defines o_proj before qkv_proj)
                 {"method.use_dora": True, "method.target_modules": ["o_proj", "qkv_proj", "gate_up_proj",
                                                                     "down_proj"]}, id="phi3-dora"),
    pytest.param(["model=qwen2_5_0_5b", "method=full", "hardware=a100_40g"],
                 {"method.peft": False, "method.trainable_percent": 100.0, "model.tie_word_embeddings": True},
                 id="full-qwen-0.5b"),
    pytest.param(["method=qlora", "hardware=cpu_x2", "launcher=ray"],
                 {"deepspeed": None, "train.zero_stage": 0, "world_size": 2}, id="qlora-multi-worker-is-ddp"),
])
def test_golden_fields(overrides, expected):
    plan = plan_for(overrides).to_dict()
    for key, value in expected.items():
        assert _get(plan, key) == value, key


CATALOG = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem not in ("local", "tiny"))


@pytest.mark.parametrize("model", CATALOG)
def test_every_catalog_model_plans_without_an_error_from_what_ftc_ships(model):
    """Each catalog model compiles from the config.json ftc ships (this session's cache has no converted or
    downloaded copy): a shipped config carrying a loader's options (SmolLM2's GGUF quantization_config) made the
    plan refuse the model as 'stored quantized' before anything was installed."""
    plan = plan_for([f"model={model}", "method=lora", "hardware=a100_80g"])
    about_the_model = [e for e in plan.errors if e.startswith("model")]  # a 70B not fitting one card is the plan's job
    assert not about_the_model, about_the_model
    assert plan.model.params > 100e6


@pytest.mark.parametrize("overrides,baselines,said", [
    ([], ("base", "prompted"), "the tuned model against the base model and the base model prompted with 3 examples"),
    (["eval.baselines=[prompted]", "eval.shots=5"], ("prompted",), "the base model prompted with 5 examples"),
    (["eval.baselines=[]"], (), None),
    (["objective=dpo", "data=sample_preference"], ("base",), "no prompted base (dpo's evaluation scores pairs"),
    (["data=file", "data.format=text", "data.path=ftc:sample/train.jsonl"], ("base",),
     "no prompted base (data.format=text rows are not a prompt and its answer"),
])
def test_the_plan_decides_which_baselines_the_evaluation_scores(overrides, baselines, said):
    plan = plan_for(overrides)
    assert plan.eval.baselines == baselines
    if said:
        assert any(said in d for d in plan.decisions), plan.decisions


def test_each_baseline_is_priced_in_the_evaluation_time():
    alone, two, three = (plan_for([f"eval.baselines={b}"]).time.eval_hours
                         for b in ("[]", "[base]", "[base,prompted]"))
    assert alone < two < three


def test_the_plan_has_every_number_the_issue_lists_worked_out():
    plan = plan_for([]).to_dict()
    numbers = ("world_size", "batch.micro", "batch.grad_accum", "batch.global", "schedule.steps", "schedule.epochs",
               "schedule.tokens", "memory.per_device_gb", "memory.device_gb", "time.hours", "time.tokens_per_s")
    missing = [k for k in numbers if not isinstance(_get(plan, k), (int, float)) or _get(plan, k) <= 0]
    assert missing == []
    assert plan["precision"] in ("fp32", "bf16", "fp16") and plan["launcher"]["kind"] == "local"
    assert set(plan["memory"]["breakdown"]) >= {"weights", "activations", "adapters_grads_optimizer"}
    assert plan["memory"]["fits"] is True and plan["cost"]["usd"] == 0.0 and plan["deepspeed"] is None
    assert plan["errors"] == [] and isinstance(plan["warnings"], list)


@pytest.mark.parametrize("hardware,launcher", [("cpu", "local"), ("cpu_x2", "ray"), ("a100_80g_x4", "ray"),
                                               ("h100_x8", "ray"), ("rtx4090", "local")])
def test_global_batch_is_invariant_under_retargeting(hardware, launcher):
    plan = plan_for(["model=qwen2_5_0_5b", "train.global_batch_size=32", f"hardware={hardware}",
                     f"launcher={launcher}"])
    b = plan.batch
    assert b.micro * b.grad_accum * b.world == b.global_ == 32
    assert f"32 = {b.micro} micro x {b.grad_accum} accum x {b.world}" in b.derivation


def test_zero3_shards_memory():
    one = plan_for(["model=llama3_8b", "hardware=a100_80g_x4", "launcher=ray", "launcher.num_workers=1",
                    "train.micro_batch_size=1", "train.zero_stage=0"])
    four = plan_for(["model=llama3_8b", "hardware=a100_80g_x4", "launcher=ray", "train.micro_batch_size=1",
                     "train.global_batch_size=16"])
    assert four.memory.breakdown["weights"] == pytest.approx(one.memory.breakdown["weights"] / 4, rel=1e-3)
    assert four.memory.per_device_gb < one.memory.per_device_gb


@pytest.mark.parametrize("model,params", [("llama3_8b", 8.03e9), ("mistral_7b", 7.25e9), ("qwen2_5_7b", 7.62e9),
                                          ("qwen2_5_0_5b", 0.494e9), ("gemma2_9b", 9.24e9), ("phi3_mini", 3.82e9),
                                          ("llama3_70b", 70.6e9)])
def test_parameter_counts_match_published(model, params):
    assert plan_for([f"model={model}", "hardware=h100"]).model.params == pytest.approx(params, rel=0.01)


def test_qlora_weights_are_about_a_quarter_of_bf16():
    lora = plan_for(["model=mistral_7b", "hardware=a100_80g"]).memory.breakdown["weights"]
    qlora = plan_for(["model=mistral_7b", "hardware=a100_80g", "method=qlora"]).memory.breakdown["weights"]
    assert 0.25 < qlora / lora < 0.35  # embeddings and head stay 16-bit


def test_checkpointing_chosen_only_when_needed():
    small = plan_for(["model=qwen2_5_0_5b", "hardware=a100_80g", "data.max_length=512"])
    assert not small.train.gradient_checkpointing
    big = plan_for(["model=llama3_70b", "hardware=h100", "method=qlora", "data.max_length=4096",
                    "model.attn_implementation=flash_attention_2"])  # packed rows of 4096 tokens
    assert big.train.gradient_checkpointing
    assert any("gradient_checkpointing=on" in d for d in big.decisions)


def test_cost_is_hours_times_price_times_devices():
    plan = plan_for(["model=llama3_8b", "hardware=a100_80g_x4", "launcher=ray", "train.epochs=30"])
    assert plan.cost.usd == pytest.approx(plan.time.hours * 1.79 * 4, rel=0.02)  # (cents: a job worth dollars)


def test_plan_round_trips_through_json():
    from ftc.plan import Plan

    plan = plan_for(["method=qlora"])
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again == plan


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_compiles_and_matches_snapshot(recipe):
    plan = plan_for([f"recipe={recipe}"])
    assert plan.errors == (), plan.errors
    assert plan.name == recipe
    snapshot = {k: v for k, v in plan.to_dict().items() if k != "output_dir"}
    path = SNAPSHOTS / f"{recipe}.json"
    if os.environ.get("FTC_UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot for {recipe}: review its plan, then run with FTC_UPDATE_SNAPSHOTS=1"
    assert json.loads(path.read_text()) == json.loads(json.dumps(snapshot)), \
        f"plan of {recipe} changed; review and re-run with FTC_UPDATE_SNAPSHOTS=1"


def test_at_least_the_documented_recipes():
    assert {"cpu_demo", "qlora_mistral_7b_24gb", "lora_llama3_8b_zero3_x4", "qwen2_5_7b_chat_sft"} <= set(RECIPES)


def test_compile_is_pure_given_facts():
    """compile() takes typed config + facts and nothing else: same inputs, same plan, no I/O."""
    from ftc.compiler.compile import compile
    from ftc.compiler.facts import DataFacts, Facts, load_families
    from tests.conftest import typed_config

    cfg = typed_config(["data=file", "data.path=/not/read.jsonl", "data.max_length=256"])
    facts = Facts(data={"train": DataFacts(path="/not/read.jsonl", exists=True, rows=1000, mean_chars=400)},
                  families=load_families())
    a, b = compile(cfg, facts), compile(cfg, facts)
    assert a == b
    assert a.data.train_examples == 800  # 1000 - 10% validation - 10% test
    assert a.errors == ()


def test_model_config_json_is_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 256, "vocab_size": 5000, "max_position_embeddings": 1024,
        "tie_word_embeddings": True}))
    plan = plan_for(["model=local", f"model.path={tmp_path}"])
    assert plan.errors == ()
    assert (plan.model.family, plan.model.num_layers, plan.model.vocab_size) == ("qwen2", 3, 5000)


def test_config_reference_is_up_to_date():
    from ftc.config.docs import render

    assert (ROOT / "docs" / "CONFIG.md").read_text().strip() == render().strip(), \
        "run: python -m ftc.config.docs > docs/CONFIG.md"


def test_plan_reference_is_generated_and_up_to_date():
    from ftc.config.docs import render_plan

    text = (ROOT / "docs" / "PLAN.md").read_text()
    assert text.strip() == render_plan().strip(), "run: python -m ftc.config.docs plan > docs/PLAN.md"
    for spec in ("ModelSpec", "DataSpec", "HardwareSpec", "ObjectiveSpec", "ServingSpec", "Finding", "QuantSpec"):
        assert f"## {spec}" in text, spec  # every structure of the Plan, nested ones included


def test_serving_estimate_is_decode_bound_on_the_chosen_profile():
    """Tokens/s = batch x bandwidth x efficiency / weight bytes; dollars per million tokens from the device price."""
    from ftc.compiler.estimate import DECODE_BANDWIDTH_EFFICIENCY, SERVING_BATCH

    l4 = plan_for(["model=mistral_7b", "method=qlora", "hardware=l4"]).serving
    h100 = plan_for(["model=mistral_7b", "method=qlora", "hardware=h100"])
    weights = h100.model.params * 2  # served 16-bit, merged
    expected = SERVING_BATCH * 3350e9 * DECODE_BANDWIDTH_EFFICIENCY / weights
    assert h100.serving.merged_tokens_per_s == pytest.approx(expected, rel=0.01)
    assert h100.serving.merged_usd_per_m_tokens == pytest.approx(2.99 / (expected * 3600) * 1e6, rel=0.01)
    assert h100.serving.adapter_tokens_per_s < h100.serving.merged_tokens_per_s  # the adapter's bytes too
    assert l4.merged_tokens_per_s < h100.serving.merged_tokens_per_s
    assert h100.serving.engine == "vllm" and "merged" in h100.serving.format
    assert h100.serving.stream_tokens_per_s == pytest.approx(expected / SERVING_BATCH, rel=0.01)
    cpu = plan_for([])  # the CPU profile: llama.cpp on the GGUF f16 export, one stream
    assert (cpu.serving.engine, cpu.serving.adapter_tokens_per_s) == ("llama.cpp", None)
    assert cpu.serving.stream_tokens_per_s == pytest.approx(
        9.4e9 * DECODE_BANDWIDTH_EFFICIENCY / (cpu.model.params * 2), rel=0.01)
    assert "llama.cpp on the GGUF f16" in plan_table(cpu)


def test_spot_pays_the_spot_price_and_spaces_checkpoints_for_preemptions():
    import math

    from ftc.compiler.costing import CHECKPOINT_WRITE_GBS

    on_demand = plan_for(["model=mistral_7b", "method=qlora", "hardware=rtx4090"])
    spot = plan_for(["model=mistral_7b", "method=qlora", "hardware=rtx4090", "hardware.spot=true"])
    assert spot.cost.usd == pytest.approx(spot.cost.device_hours * 0.34, abs=0.01)
    assert spot.cost.on_demand_usd == on_demand.cost.usd and on_demand.cost.spot_usd == spot.cost.usd
    decision = next(d for d in spot.decisions if d.startswith("spot: checkpoint every"))
    assert "preemptions expected" in decision and "losing" in decision
    step_s = spot.time.train_hours * 3600 / spot.schedule.steps
    between_s = 3600 / 0.1  # the schema's assumed preemption rate, one device
    # checkpoint cost: 1 s + the fp32 adapter, its gradient and AdamW's two moments (16 B a parameter) at 1 GB/s
    checkpoint_s = 1.0 + spot.method.trainable_params * 16 / (CHECKPOINT_WRITE_GBS * 1e9)
    young = math.sqrt(2 * checkpoint_s * between_s)
    assert spot.schedule.save_steps == pytest.approx(young / step_s, rel=0.2)
    assert spot.schedule.save_steps != on_demand.schedule.save_steps


def test_the_optimizer_update_is_timed_by_the_bytes_it_moves():
    """Full fine-tuning's step is mostly the optimizer's update: the fused AdamW moves a third of foreach's bytes."""
    base = ["model=qwen2_5_0_5b", "method=full", "hardware=l40s", "train.precision=bf16", "data.packing=false"]
    foreach, fused = (plan_for(base + [f"train.optim={o}"]) for o in ("adamw_torch", "adamw_torch_fused"))
    assert fused.time.tokens_per_s > 1.2 * foreach.time.tokens_per_s
    assert fused.time.train_flops_per_token == foreach.time.train_flops_per_token


def test_adapted_modules_cost_a_fixed_time_per_micro_step_on_a_gpu():
    two, seven = (plan_for(["model=llama3_8b", "hardware=l40s", "data.packing=false", "data.max_length=512",
                            "data.tokens_per_example=200", "train.micro_batch_size=4",
                            "train.gradient_checkpointing=true",
                            f"method.target_modules={t}"])
                  for t in ("[q_proj,v_proj]", "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"))
    from ftc.compiler.estimate import EAGER_ADAPTER_S

    step_s = [p.schedule.tokens_per_step / p.time.tokens_per_s for p in (two, seven)]
    expected = two.batch.grad_accum * 5 * two.model.num_layers * EAGER_ADAPTER_S  # 5 more targets in every layer
    assert step_s[1] - step_s[0] == pytest.approx(expected, rel=0.1)
    assert any("as data.tokens_per_example sets" in d for d in two.decisions)
    assert two.data.tokens_per_example == 200


def test_one_decode_step_model_the_slower_of_reading_the_weights_and_computing_the_batch():
    """Evaluation, GRPO's sampling and the serving estimate price a decode step with ``decode_step_s``: measured,
    the weights at the measured rate; else the slower of reading them at the datasheet bandwidth x 0.7 and computing
    the batch at 2% of peak (a mixture of experts reads every expert: evaluation was charged the compute alone)."""
    from ftc.compiler.estimate import DECODE_BANDWIDTH_EFFICIENCY, EVAL_DECODE_MFU, decode_step_s

    weights, per_token = 14e9, 2 * 1.3e9  # OLMoE-like: 7B weights in 16 bits, 1.3B active
    h100 = dict(peak_tflops=989, bandwidth_gbs=3350, decode_gbs=None)
    read = weights / (3350e9 * DECODE_BANDWIDTH_EFFICIENCY)
    assert decode_step_s(weights, 16, per_token, **h100) == pytest.approx(read)  # memory-bound at eval's batch
    compute = 512 * per_token / (989e12 * EVAL_DECODE_MFU)
    assert compute > read and decode_step_s(weights, 512, per_token, **h100) == pytest.approx(compute)
    assert decode_step_s(weights, 512, per_token, **h100, mfu=None) == pytest.approx(read)  # the serving estimate
    measured = dict(h100, decode_gbs=1000.0)
    assert decode_step_s(weights, 512, per_token, **measured) == pytest.approx(weights / 1000e9)
    no_bandwidth = dict(h100, bandwidth_gbs=None)
    assert decode_step_s(weights, 16, per_token, **no_bandwidth) == pytest.approx(16 * per_token / (989e12 * 0.02))
