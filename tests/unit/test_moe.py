"""Mixture-of-experts and state-space terms of the plan, on the catalog models (config numbers only, no weights):
parameters resident vs active, what 4-bit does to fused experts, FLOPs at top-k, the folded expert copies of LoRA on
experts, and the targets decided for them."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, plan_for

pytestmark = pytest.mark.unit


# Published totals and active parameters per token (model cards). Cards differ on whether the active count includes
# the input embedding: it lies between decoder + output head and decoder + head + embedding.
@pytest.mark.parametrize("model,total,active", [
    ("qwen3_30b_a3b", 30.5e9, 3.3e9),
    ("gpt_oss_20b", 20.9e9, 3.6e9),
    ("mixtral_8x7b", 46.7e9, 12.9e9),
    ("olmoe_1b_7b", 6.9e9, 1.3e9),
])
def test_catalog_moe_counts_match_the_model_cards(model, total, active):
    plan = plan_for([f"model={model}", "hardware=h100"])
    m = plan.model
    assert m.moe is not None
    assert m.params == pytest.approx(total, rel=0.015)
    head = m.vocab_size * m.hidden_size
    assert 0.97 * (m.moe.active_params + head) <= active <= 1.03 * (m.moe.active_params + 2 * head)
    assert m.moe.expert_params < m.params and m.moe.active_params < m.params / 3


def test_qlora_keeps_fused_experts_in_16_bit_and_counts_them():
    """bitsandbytes quantizes nn.Linear only; transformers 5 loads experts as 3-D parameters (measured: a 4-bit
    Mixtral load keeps experts.gate_up_proj bf16). The weights term is 16-bit experts + 4-bit attention."""
    plan = plan_for(["model=qwen3_30b_a3b", "method=qlora", "hardware=h100"])
    moe = plan.model.moe
    assert moe.expert_weights == "bf16"
    assert plan.memory.breakdown["weights"] >= moe.expert_params * 2 / 1e9
    assert any(d.startswith("QLoRA on a mixture of experts") for d in plan.decisions)
    dense = plan_for(["model=qwen3_8b", "method=qlora", "hardware=h100"])
    assert dense.model.moe is None and not any("mixture" in d for d in dense.decisions)


def test_flops_per_token_use_the_active_experts_not_all():
    from ftc.compiler import estimate as est

    plan = plan_for(["model=mixtral_8x7b", "method=lora", "hardware=a100_80g_x4", "launcher=ray"])
    m = plan.model
    per_token = plan.time.train_flops_per_token
    # LoRA without checkpointing: ~3 x 2 x active decoder params (+ attention and head); all experts would be 3.6x
    assert per_token < 2 * 3 * (m.moe.active_params + m.vocab_size * m.hidden_size) * 1.3
    assert per_token < 2 * 3 * m.params / 2.5
    assert est.Arch(hidden=8, layers=1, heads=1, kv_heads=1, head_dim=8, intermediate=8, vocab=8, tied=True,
                    gated_mlp=True, experts=4, top_k=1, expert_intermediate=8, moe_layers=1).active_expert_params \
        == 3 * 8 * 8


def test_adapting_experts_is_decided_recorded_and_sized():
    """all-linear adapts the experts through target_parameters with dropout 0 (PEFT requires it), never the router;
    each expert has its own A and B: trainable parameters grow by r x experts x (in + out) per MoE layer; the folded
    W + BA copies are a memory term of their own."""
    on = plan_for(["model=olmoe_1b_7b", "method=lora", "hardware=l40s"])
    off = plan_for(["model=olmoe_1b_7b", "method=lora", "hardware=l40s", "method.target_experts=false"])
    assert on.method.target_parameters == ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
    assert off.method.target_parameters == () and off.method.dropout == 0.05
    assert on.method.dropout == 0
    m, r = on.model, on.method.r
    per_layer = r * m.moe.experts * ((m.hidden_size + 2 * m.moe.expert_intermediate_size)
                                     + (m.moe.expert_intermediate_size + m.hidden_size))
    assert on.method.trainable_params - off.method.trainable_params == m.moe.moe_layers * per_layer
    assert on.memory.breakdown["expert_adapter_copies"] > 0
    assert "expert_adapter_copies" not in off.memory.breakdown
    named = plan_for(["model=olmoe_1b_7b", "method.target_modules=[q_proj,v_proj]"])
    assert named.method.target_parameters == () and any("target_experts=false" in d for d in named.decisions)


def test_dora_cannot_adapt_experts():
    plan = plan_for(["model=olmoe_1b_7b", "method=dora", "hardware=l40s"])
    assert any(e.startswith("method.use_dora") and "target_experts=false" in e for e in plan.errors)
    assert plan_for(["model=olmoe_1b_7b", "method=dora", "hardware=l40s", "method.target_experts=false"]).errors == ()


def test_moe_trains_with_the_models_loss_so_the_router_balance_loss_counts():
    plan = plan_for(["model=olmoe_1b_7b", "hardware=l40s"])
    assert plan.train.loss == "model" and any("load-balancing" in d for d in plan.decisions)


def test_an_attention_free_model_plans_from_its_config():
    """Mamba has no attention heads: the plan works from its state-space numbers instead of refusing."""
    from ftc.compiler.compile import compile
    from ftc.compiler.facts import Facts, load_families
    from tests.conftest import typed_config

    config = {"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24, "vocab_size": 50280,
              "state_size": 16, "expand": 2, "intermediate_size": 1536, "tie_word_embeddings": True}
    cfg = typed_config(["model=local", "model.path=/models/mamba", "method.target_modules=[in_proj,x_proj]"])
    plan = compile(cfg, Facts(model_config=config, families=load_families()))
    assert plan.errors == (), plan.errors
    assert plan.model.attention_layers == 0 and plan.model.ssm_layers == 24
    assert plan.model.attn_implementation == "eager"
    assert 100e6 < plan.model.params < 160e6  # mamba-130m


@pytest.mark.parametrize(("recipe", "verdict"), [
    ("qlora_olmoe_1b_7b_24gb", "fits"), ("lora_olmoe_1b_7b_48gb", "fits"), ("qlora_qwen3_30b_a3b_80gb", "tight"),
    ("lora_gpt_oss_20b_80gb", "fits"), ("lora_mixtral_8x7b_zero3_x4", "fits")])
def test_moe_recipes_fit_their_cards_and_say_where_only_if_the_estimate_holds(recipe, verdict):
    """The QLoRA recipes keep their bf16 experts (bitsandbytes quantizes linear layers only): weights alone are most
    of the card. The band does not spread their exactly known bytes, so OLMoE fits a 24 GB card; Qwen3-30B-A3B's
    60 GB of experts on an 80 GB card leave too little room, and its only warning is that one, as its header says."""
    plan = plan_for([f"recipe={recipe}"])
    assert plan.errors == (), plan.errors
    assert plan.memory.verdict == verdict and plan.model.moe is not None
    expected = ["hardware"] if verdict == "tight" else []
    assert [w.split(":")[0] for w in plan.warnings] == expected, plan.warnings
    if verdict == "tight":
        assert "fits only if the estimate holds" in (ROOT / "recipes" / f"{recipe}.yaml").read_text()


def test_stored_expert_layouts_convert_to_what_transformers_loads():
    """Per-expert linears fuse into experts x out x in (gate and up concatenated); MXFP4 blocks (gpt-oss on the hub)
    count as the dequantized parameter they load as; a family without a rule is counted, not guessed."""
    from ftc.compiler.facts import load_families, loaded_shapes, moe_rules

    stored = {f"model.layers.0.block_sparse_moe.experts.{e}.{w}.weight": ([14, 8] if w != "w2" else [8, 14])
              for e in range(3) for w in ("w1", "w2", "w3")}
    shapes, unconverted = loaded_shapes(stored, moe_rules(load_families(), "mixtral"))
    assert shapes == {"model.layers.0.mlp.experts.gate_up_proj": [3, 28, 8],
                      "model.layers.0.mlp.experts.down_proj": [3, 8, 14]} and unconverted == 0
    _, unknown = loaded_shapes(stored, None)
    assert unknown == 9
    mxfp4 = {"model.layers.0.mlp.experts.gate_up_proj_blocks": [32, 5760, 90, 16],
             "model.layers.0.mlp.experts.gate_up_proj_scales": [32, 5760, 90]}
    shapes, _ = loaded_shapes(mxfp4, moe_rules(load_families(), "gpt_oss"))
    assert shapes == {"model.layers.0.mlp.experts.gate_up_proj": [32, 5760, 2880]}


def test_a_checkpoint_stored_quantized_is_not_quantized_again():
    """gpt-oss ships MXFP4 experts: LoRA loads them dequantized (decided and said); QLoRA is refused at plan time,
    as transformers would refuse a BitsAndBytesConfig over the checkpoint's Mxfp4Config at load."""
    lora = plan_for(["model=gpt_oss_20b", "method=lora", "hardware=h100"])
    assert lora.errors == () and lora.model.stored_quantization == "mxfp4"
    assert any("MXFP4 weights load dequantized" in d for d in lora.decisions)
    qlora = plan_for(["model=gpt_oss_20b", "method=qlora", "hardware=h100"])
    assert any(e.startswith("method.quant_bits") and "method=lora" in e for e in qlora.errors)
    fp8 = plan_for(["model=qwen3_8b", "model.stored_quantization=fp8", "hardware=h100"])
    assert any(e.startswith("model.path") and "16-bit checkpoint" in e for e in fp8.errors)


def test_experts_of_an_unknown_layout_are_flagged_not_guessed():
    from ftc.compiler.compile import compile
    from ftc.compiler.facts import Facts, LinearModule, WeightFacts, load_families
    from tests.conftest import typed_config

    config = {"model_type": "newmoe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "vocab_size": 1024, "intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}
    weights = WeightFacts(total_params=10_000, linear={"q_proj": LinearModule(2, 256, 128, 8192)},
                          module_paths=("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"),
                          unconverted_experts=24)
    plan = compile(typed_config(["model=local", "model.path=/models/newmoe"]),
                   Facts(model_config=config, weights=weights, families=load_families()))
    assert any(w.startswith("model.path") and "24 per-expert linear layers" in w for w in plan.warnings)
