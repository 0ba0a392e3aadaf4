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
        "num_experts_per_tok": 2, "expert_intermediate_size": 32, "shared_expert_intermediate_size": 32}
MAX_PARAMS = 3_000_000  # a tiny model; larger means the shrink did not reach some part of the config
PER_LAYER = ("layer_types", "block_types", "layers_block_type", "hybrid_override_pattern")
TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
# Model types left out, and why (none of them is a decoder-only language model a LoRA run of ftc's kind targets).
SKIPPED = {
    "musicgen": "an audio model: its causal-LM class decodes audio codes under an encoder's conditioning",
    "musicgen_melody": "an audio model (as musicgen)",
    "reformer": "its LM head needs chunked, hashed attention sizes the generic shrink cannot choose",
    "whisper": "a speech encoder-decoder whose causal-LM class is its decoder only",
}


def shrink(config: Any) -> Any:
    """The config with every size it declares brought down to TINY, per-layer lists cut to the layer count, token
    ids kept inside the vocabulary, and decoder mode set for encoder families that offer a causal-LM head."""
    declared = config.to_dict()
    for name, value in TINY.items():
        if name in declared and isinstance(declared[name], int):
            setattr(config, name, value)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings"):
        try:
            setattr(config, name, TINY[name])
        except (AttributeError, ValueError, TypeError):
            pass
    for name in PER_LAYER:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple, str)) and len(value) > TINY["num_hidden_layers"]:
            setattr(config, name, value[: TINY["num_hidden_layers"]])
    if isinstance(getattr(config, "mlp_only_layers", None), list):
        config.mlp_only_layers = []
    for name in TOKENS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= TINY["vocab_size"]:
            setattr(config, name, TINY["vocab_size"] - 1)
    if hasattr(config, "is_decoder"):
        config.is_decoder = True
    return config


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
    except Exception as e:  # noqa: BLE001 - the generic shrink does not fit this type: said, counted
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return None


def model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


if __name__ == "__main__":
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    failed = {}
    for t in model_types():
        with tempfile.TemporaryDirectory() as d:
            why = build(t, Path(d))
            if why:
                failed[t] = why
    total = len(model_types())
    print(f"built {total - len(failed)} of {total} causal-LM model types of the installed transformers")
    for t, why in failed.items():
        print(f"  {t}: {why}")
