"""The estimator's mixture-of-experts terms against what torch saves for the backward (saved-tensor hooks) on a
tiny Qwen3-MoE built offline: routed activations, and the folded W + BA copies LoRA on fused experts keeps."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.integration

TOKENS = (2, 128)


def _model():
    import transformers as tf
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tf.Qwen3MoeConfig(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=64, intermediate_size=512, moe_intermediate_size=128,
                               num_experts=16, num_experts_per_tok=4, max_position_embeddings=512)
    return AutoModelForCausalLM.from_config(config), config


def _saved_bytes(experts: bool) -> float:
    """Bytes the decoder's forward saves for the backward (each storage once; parameters excluded)."""
    from peft import LoraConfig, get_peft_model

    model, _ = _model()
    peft = get_peft_model(model, LoraConfig(
        r=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"] if experts else None))
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    x = torch.randint(0, 500, TOKENS)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        peft.base_model.model.model(input_ids=x, use_cache=False)
    params = {p.untyped_storage().data_ptr() for p in peft.parameters()}
    return sum(v for k, v in seen.items() if k not in params)


def _arch():
    from ftc.compiler import estimate as est

    _, c = _model()
    return est.Arch(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                    kv_heads=c.num_key_value_heads, head_dim=c.head_dim, intermediate=c.intermediate_size,
                    vocab=c.vocab_size, tied=False, gated_mlp=True, experts=c.num_experts,
                    top_k=c.num_experts_per_tok, expert_intermediate=c.moe_intermediate_size,
                    moe_layers=c.num_hidden_layers)


def test_routed_activations_match_what_torch_saves():
    from ftc.compiler import estimate as est

    analytic = est.activation_bytes(_arch(), TOKENS[0], TOKENS[1], "fp32", checkpointing=False, dropout_width=0)
    measured = _saved_bytes(experts=False)
    assert analytic == pytest.approx(measured, rel=0.10), (analytic, measured)


def test_lora_on_experts_keeps_a_folded_copy_per_layer():
    from ftc.compiler import estimate as est

    arch = _arch()
    extra = _saved_bytes(experts=True) - _saved_bytes(experts=False)
    per_layer = arch.expert_params / arch.moe_layers * est.BYTES["fp32"]
    assert extra == pytest.approx(est.EXPERT_ADAPTER_SAVED * per_layer * arch.moe_layers, rel=0.10), extra / per_layer
