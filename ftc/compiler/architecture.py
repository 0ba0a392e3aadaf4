"""The architecture a plan is made for, as one typed value: ``resolve(model, facts) -> Architecture``.

Where its numbers and names come from, first to last: what transformers and PEFT say about the model
(``model_description``: the config class's reading of config.json, the modules PEFT wraps, the fused experts, the
layer kinds), the safetensors header when the weights are on disk, config.json's own keys, and only where transformers
is not installed or cannot build the class, ftc's family tables (conf/families.yaml). A value set in the model YAML
or on the command line overrides them all. The estimator, the rules and the report read the Architecture; ``compile``
copies it into the plan. Pure: facts were gathered before (no I/O, no torch here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ftc.compiler import estimate as est
from ftc.compiler.facts import Facts

CONFIG_KEYS = {  # config.json names -> ModelConfig names (Llama/Mistral/Qwen/Gemma/Phi3; GPT-2 aliases)
    "hidden_size": ("hidden_size", "n_embd"),
    "num_layers": ("num_hidden_layers", "n_layer"),
    "num_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "n_inner"),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
    "tie_word_embeddings": ("tie_word_embeddings",),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
    "experts_per_token": ("num_experts_per_tok", "experts_per_token", "moe_topk"),
    "expert_intermediate_size": ("moe_intermediate_size",),
    "dense_layers": ("first_k_dense_replace",),
    "shared_expert_intermediate_size": ("shared_expert_intermediate_size", "shared_intermediate_size"),
    "ssm_layers": (),
    "attention_layers": (),
}
# ModelConfig names -> the names ``model_description`` records them under (transformers' standard attributes).
DESCRIBED_KEYS = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                  "num_kv_heads": "num_key_value_heads", "head_dim": "head_dim",
                  "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
                  "max_position_embeddings": "max_position_embeddings", "tie_word_embeddings": "tie_word_embeddings",
                  "num_experts": "num_experts", "experts_per_token": "experts_per_token"}
# config.json keys of a state-space mixer: its inner width and state size.
SSM_INNER = ("mamba_d_ssm", "mamba_expand", "expand")
SSM_STATE = ("mamba_d_state", "state_size", "ssm_state_size")


def _moe_and_ssm(values: dict[str, Any], text: dict[str, Any], family: str, families: dict[str, Any],
                 kinds: Optional[dict[str, int]] = None) -> dict:
    """Fills the mixture-of-experts and state-space numbers config.json implies: expert widths (Mixtral, OLMoE and
    gpt-oss keep theirs in intermediate_size), dense layers (DeepSeek's first_k_dense_replace, Qwen's
    mlp_only_layers / decoder_sparse_step), shared experts (DeepSeek's count x width), and which layers have
    attention or a Mamba mixer (layer_types; every layer of a Mamba model type). Returns the SSM widths."""
    layers = values["num_layers"] or 0
    experts = values["num_experts"] or 0
    if experts > 1:
        if values["expert_intermediate_size"] is None:
            values["expert_intermediate_size"] = values["intermediate_size"]
        if values["dense_layers"] is None:
            only = text.get("mlp_only_layers") or []
            step = text.get("decoder_sparse_step") or 1
            values["dense_layers"] = len(set(only) | {i for i in range(layers) if (i + 1) % step})
        if values["shared_expert_intermediate_size"] is None:
            values["shared_expert_intermediate_size"] = (text.get("n_shared_experts") or 0) * \
                (values["expert_intermediate_size"] or 0)
        values["experts_per_token"] = values["experts_per_token"] or 1
    else:
        values["num_experts"] = 0
    if kinds and values["ssm_layers"] is None and values["attention_layers"] is None:
        # the kinds of the instantiated layers (model_description): a linear-attention layer (gated delta net)
        # keeps a recurrent state, as a state-space mixer does, not attention over the sequence
        values["attention_layers"] = kinds.get("attention", 0) + kinds.get("sliding_attention", 0)
        values["ssm_layers"] = kinds.get("ssm", 0) + kinds.get("linear_attention", 0)
    types = [str(t) for t in text.get("layer_types") or []]
    mamba_types = families.get("_peft_mamba_refuses", {}).get("model_types", ())
    if values["ssm_layers"] is None:
        if types:
            values["ssm_layers"] = sum(t == "mamba" for t in types)
        elif family in mamba_types or any(k in text for k in ("mamba_d_ssm", "mamba_d_state")):
            values["ssm_layers"] = layers
        else:
            values["ssm_layers"] = 0
    if values["attention_layers"] is None:
        attention_free = not values["num_heads"]
        if types and any(t == "mamba" for t in types):
            values["attention_layers"] = sum(t != "mamba" for t in types)
        else:
            values["attention_layers"] = 0 if attention_free else layers
    hidden = values["hidden_size"] or 0
    inner = next((text[k] for k in SSM_INNER if text.get(k)), 0)
    inner = inner * hidden if inner and inner < 16 else inner  # an expansion factor, not a width
    state = next((text[k] for k in SSM_STATE if text.get(k)), 0)
    return {"ssm_inner": inner if values["ssm_layers"] else 0, "ssm_state": state if values["ssm_layers"] else 0}


@dataclass(frozen=True)
class Architecture:
    numbers: Optional[est.Arch]
    """What the estimator computes with; None when too little is known (the architecture_known rule says so)."""
    values: dict[str, Any]
    """Every ModelConfig size as resolved (YAML/CLI, else transformers, else config.json keys, else defaults)."""
    family: str
    """config.json's model_type (the YAML's family when config.json cannot be read)."""
    linear_modules: tuple[str, ...]
    """Target names of every linear layer PEFT's all-linear would wrap, in the model's order."""
    expert_parameters: tuple[str, ...]
    """The fused expert parameters (experts x out x in) as transformers loads them."""
    routers: tuple[str, ...]
    stored_quantization: Optional[str]
    """The checkpoint's own quantization (mxfp4), from config.json's quantization_config or the YAML."""
    decisions: tuple[str, ...]
    """Where the architecture came from, and the layer kinds read off the instantiated model."""


def resolve(m: Any, facts: Facts) -> Architecture:
    """The Architecture of model config ``m`` from ``facts``."""
    decisions: list[str] = []
    values = {k: getattr(m, k) for k in CONFIG_KEYS}
    source = facts.model_config or {}
    text = source.get("text_config", source)  # multimodal configs nest the language model
    d = facts.description
    if d is not None and d.error is None:  # the library's reading first: its config class knows every alias
        for key, name in DESCRIBED_KEYS.items():
            if values[key] is None and d.config.get(name) is not None:
                values[key] = d.config[name]
        decisions.append(f"architecture: as transformers and PEFT build it ({d.source}; the model class built "
                         "from config.json on the meta device, all-linear resolved by PEFT)")
    elif d is not None:
        decisions.append(f"architecture: from config.json keys and ftc's family tables (transformers could "
                         f"not build the model class here: {d.error})")
    for key, names in CONFIG_KEYS.items():
        if values[key] is None:
            found = next((text[n] for n in names if text.get(n) is not None), None)
            values[key] = max(found) if isinstance(found, list) and found else found  # per layer: the widest
    if values["num_kv_heads"] is None:
        values["num_kv_heads"] = values["num_heads"]
    if values["intermediate_size"] is None and values["hidden_size"]:
        values["intermediate_size"] = 4 * values["hidden_size"]  # GPT-2 convention when n_inner is null
    if values["tie_word_embeddings"] is None:
        values["tie_word_embeddings"] = bool(source.get("tie_word_embeddings", False))
    family = source.get("model_type") or m.family
    known = facts.families.get(family)
    kinds = d.layer_kinds if d is not None and d.error is None else None
    ssm = _moe_and_ssm(values, text, family, facts.families, kinds)
    if kinds:
        decisions.append("layers: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))
                         + " (the kinds of the model's instantiated layers)")
    stored = m.stored_quantization or (source.get("quantization_config") or text.get("quantization_config") or
                                       {}).get("quant_method")
    w = facts.weights
    routers: tuple[str, ...] = ()
    if w is not None:
        linear, expert_parameters, routers = tuple(w.linear), tuple(w.experts), w.routers
    else:
        linear = tuple((known or {}).get("linear", ()))
        expert_parameters = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj") if values["num_experts"] else ()
    numbers = None
    needed = ("hidden_size", "num_layers", "vocab_size")
    if all(values[k] for k in needed) and (values["num_heads"] or values["ssm_layers"]):
        heads = values["num_heads"] or 0
        values["num_kv_heads"] = values["num_kv_heads"] or heads
        values["head_dim"] = values["head_dim"] or (values["hidden_size"] // heads if heads else 0)
        values["max_position_embeddings"] = values["max_position_embeddings"] or 2048
        if values["ssm_layers"] == values["num_layers"] and not values["attention_layers"]:
            values["intermediate_size"] = 0  # Mamba blocks have no MLP (its intermediate_size is the mixer's width)
        experts = values["num_experts"]
        numbers = est.Arch(
            hidden=values["hidden_size"], layers=values["num_layers"], heads=heads,
            kv_heads=values["num_kv_heads"], head_dim=values["head_dim"], intermediate=values["intermediate_size"],
            vocab=values["vocab_size"], tied=values["tie_word_embeddings"],
            gated_mlp=(known or {}).get("mlp", "gated") == "gated",
            exact_total=w.total_params if w else None,
            exact_linear=sum(x.params for x in w.linear.values()) if w else None,
            experts=experts, top_k=values["experts_per_token"] or 0 if experts else 0,
            expert_intermediate=values["expert_intermediate_size"] or 0 if experts else 0,
            moe_layers=values["num_layers"] - (values["dense_layers"] or 0) if experts else 0,
            shared_intermediate=values["shared_expert_intermediate_size"] or 0 if experts else 0,
            exact_experts=sum(x.params for x in w.experts.values()) if w and w.experts else None,
            attention_layers=values["attention_layers"], ssm_layers=values["ssm_layers"], **ssm,
        )
    return Architecture(numbers=numbers, values=values, family=family, linear_modules=linear,
                        expert_parameters=expert_parameters, routers=routers, stored_quantization=stored,
                        decisions=tuple(decisions))
