"""A zoo generated from transformers itself: every model type of its causal-LM auto mapping, with its config class's
defaults shrunk generically to a tiny model (no per-type sizes), saved like a downloaded model.

``python -m tests.zoo`` prints the coverage: the types built here against the types in the mapping, and why each
other type could not be built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

# Sizes a tiny model takes, by transformers' standard attribute names and the names its config classes use for the
# same things (set where the config class declares the attribute; attribute_map aliases follow the standard names).
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 256, "max_position_embeddings": 256, "head_dim": 16,
        "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_intermediate_size": 32,
        "num_experts_per_tok": 2, "expert_intermediate_size": 32, "shared_expert_intermediate_size": 32,
        # widths a few families name apart from hidden_size (rotary slice, embedding, hybrid attention and Mamba
        # heads), brought down consistently with the sizes above (Mamba: heads x head width = 2 x hidden)
        "rotary_dim": 8, "embedding_dim": 64, "attention_hidden_size": 128, "attention_head_dim": 32,
        "mamba_headdim": 16, "n_mamba_heads": 8, "kv_channels": 16, "mamba_n_heads": 8, "mamba_d_head": 16,
        "mamba_d_ssm": 128, "num_heads": 8, "num_blocks": 2,
        # multi-head latent attention (DeepSeek-V2/V3 and kin): low-rank and rotary slices of a head
        "qk_rope_head_dim": 16, "qk_nope_head_dim": 8, "v_head_dim": 16, "kv_lora_rank": 16, "q_lora_rank": 32}
CAPPED = ("num_experts_per_tok",)  # counts brought down to TINY, never up (ZAYA routes to one expert only)
MAX_PARAMS = 10_000_000  # a tiny model; larger means the shrink did not reach some part of the config
PER_LAYER = ("layer_types", "block_types", "layers_block_type", "hybrid_override_pattern")
TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
# Model types left out, and why (none of them is a decoder-only language model a LoRA run of ftc's kind targets).
SKIPPED = {
    "musicgen": "an audio model: its causal-LM class decodes audio codes under an encoder's conditioning",
    "musicgen_melody": "an audio model (as musicgen)",
    "reformer": "its LM head needs chunked, hashed attention sizes the generic shrink cannot choose",
    "whisper": "a speech encoder-decoder whose causal-LM class is its decoder only",
    "xmod": "an encoder with per-language adapter modules: its forward needs a language chosen first "
            "(set_default_language), which no causal-LM fine-tune sets",
}


def shrink(config: Any) -> Any:
    """The config with every size it declares brought down to TINY, per-layer lists cut to the layer count, token
    ids kept inside the vocabulary, and decoder mode set for encoder families that offer a causal-LM head."""
    declared = config.to_dict()
    # multi-head latent attention (and any config that keeps one key/value head per query head) needs it kept so
    same_kv = declared.get("num_key_value_heads") == declared.get("num_attention_heads")
    for name, value in TINY.items():
        if name in declared and isinstance(declared[name], int):
            setattr(config, name, min(value, declared[name]) if name in CAPPED else value)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"):
        try:
            setattr(config, name, TINY[name])
        except (AttributeError, ValueError, TypeError):
            pass
    if same_kv and isinstance(declared.get("num_key_value_heads"), int):
        config.num_key_value_heads = config.num_attention_heads
    _keep_layers(config, declared)
    if isinstance(getattr(config, "mlp_only_layers", None), list):
        config.mlp_only_layers = []
    for name in TOKENS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= TINY["vocab_size"]:
            setattr(config, name, TINY["vocab_size"] - 1)
    if hasattr(config, "is_decoder"):
        config.is_decoder = True
    return config


def _keep_layers(config: Any, declared: dict[str, Any]) -> None:
    """Cuts every per-layer setting (a list, or a pattern string, with one entry per layer of the full model) to a
    few layers that keep one of each kind the full model has (a hybrid keeps an attention layer and a recurrent one;
    a first-k-dense MoE keeps a dense layer and an expert layer), and sets the layer count to match."""
    layers = declared.get("num_hidden_layers")
    per_layer = {name: value for name, value in declared.items()
                 if isinstance(value, (list, str)) and isinstance(layers, int) and layers > 2 and len(value) == layers}
    keep = list(range(TINY["num_hidden_layers"]))
    pattern = next((per_layer[n] for n in PER_LAYER if n in per_layer), next(iter(per_layer.values()), None))
    if pattern is not None:
        firsts = sorted({str(v): i for i, v in reversed(list(enumerate(pattern)))}.values())[:4]
        keep = sorted(firsts + [i for i in range(layers) if i not in firsts][:max(0, len(keep) - len(firsts))])
    for name, value in per_layer.items():
        cut = [value[i] for i in keep]
        setattr(config, name, "".join(cut) if isinstance(value, str) else cut)
    if per_layer:
        config.num_hidden_layers = len(keep)
    for name in PER_LAYER:  # per-layer settings the config keeps shorter or longer than the layer count
        value = getattr(config, name, None)
        if name not in per_layer and isinstance(value, (list, tuple, str)) and len(value) > config.num_hidden_layers:
            setattr(config, name, value[: config.num_hidden_layers])


def build(model_type: str, target: Path) -> Optional[str]:
    """Saves a tiny random-init model of ``model_type`` into ``target``; None, or why it could not be built."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type in SKIPPED:
        return SKIPPED[model_type]
    try:
        config = shrink(CONFIG_MAPPING[model_type]())
        with torch.device("meta"):  # counted before any memory is spent on it
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if params > MAX_PARAMS:
            return (f"{params / 1e6:.0f} M parameters after the generic shrink (sub-configs it does not reach, e.g. "
                    "a vision tower)")
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        model.save_pretrained(target, safe_serialization=True)
        AutoConfig.from_pretrained(target)  # the shrink must leave a config that loads back
        try:  # the shrunk sizes must agree with each other: a forward pass of the saved model says
            AutoModelForCausalLM.from_pretrained(target)(input_ids=torch.ones((1, 8), dtype=torch.long),
                                                         use_cache=False)
        except Exception as e:  # noqa: BLE001
            return f"its forward fails after the generic shrink ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    except Exception as e:  # noqa: BLE001 - the generic shrink does not fit this type: said, counted
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return None


def model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def kind(description: Any) -> str:
    """dense, moe, hybrid (attention beside state-space or linear-attention layers) or ssm, from the layer kinds and
    fused experts the model description read off the instantiated model."""
    kinds = description.layer_kinds
    recurrent = kinds.get("ssm", 0) + kinds.get("linear_attention", 0)
    attention = kinds.get("attention", 0) + kinds.get("sliding_attention", 0)
    moe = kinds.get("moe", 0) > 0 or bool(description.experts)
    if recurrent and attention:
        return "hybrid" + (" moe" if moe else "")
    if recurrent:
        return "ssm" + (" moe" if moe else "")
    return "moe" if moe else "dense"


if __name__ == "__main__":
    import tempfile
    import warnings

    from ftc.compiler.model_description import describe

    warnings.filterwarnings("ignore")
    failed, kinds = {}, {}
    for t in model_types():
        with tempfile.TemporaryDirectory() as d:
            why = build(t, Path(d))
            if why:
                failed[t] = why
            else:
                kinds[t] = kind(describe(d))
    total = len(model_types())
    print(f"built {total - len(failed)} of {total} causal-LM model types of the installed transformers")
    for k in sorted(set(kinds.values())):
        named = sorted(t for t, v in kinds.items() if v == k)
        print(f"  {k}: {len(named)} ({', '.join(named)})")
    print("not built:")
    for t, why in failed.items():
        print(f"  {t}: {why}")
