"""The fine-tuning methods as one registry, as objectives (``objectives.py``) and launcher kinds are: what each
trains and how the estimators price it. ``method_of`` is the one place a method's flags (``method.peft``,
``quant_bits``, ``use_dora``) become a method; the compiler, the cost model and the rules read the entry's fields
instead of comparing names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    name: str
    full: bool
    """Every weight trains (gradients and optimizer state for all of them); else adapters (PEFT LoRA family)."""
    quantized: bool
    """The frozen base is held in 4 bits (bitsandbytes NF4): QLoRA."""
    memory_terms: str
    """The estimator's name for the weights, gradients and optimizer state (``estimate.weight_bytes``,
    ``trainable_bytes``): DoRA's are LoRA's."""
    flops_terms: str
    """The estimator's name for FLOPs per token (``estimate.train_flops_per_token``): the backward reaches every
    weight's gradient only under full fine-tuning."""
    throughput_terms: str
    """The estimator's name for the throughput (``estimate.tokens_per_second``: QLoRA's dequantization and DoRA's
    magnitude vectors slow a step)."""


METHODS = {
    "lora": Method("lora", full=False, quantized=False, memory_terms="lora", flops_terms="lora",
                   throughput_terms="lora"),
    "qlora": Method("qlora", full=False, quantized=True, memory_terms="qlora", flops_terms="lora",
                    throughput_terms="qlora"),
    "dora": Method("dora", full=False, quantized=False, memory_terms="lora", flops_terms="lora",
                   throughput_terms="dora"),
    "full": Method("full", full=True, quantized=False, memory_terms="full", flops_terms="full",
                   throughput_terms="full"),
}


def method_of(m: Any) -> Method:
    """The method a ``MethodConfig``'s flags describe."""
    if not m.peft:
        return METHODS["full"]
    return METHODS["qlora" if m.quant_bits else "dora" if m.use_dora else "lora"]
