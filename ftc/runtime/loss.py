"""The selective, chunked causal-LM loss: the output head runs only where the loss needs it.

The model's own loss computes logits for every position (batch x sequence x vocabulary, in fp32, with their
gradient) and then ignores the masked ones; with completion-only loss most positions are prompt tokens. This loss
runs the decoder, keeps the hidden states only at positions whose (shifted) label counts, and applies the output
head and the cross-entropy to those in chunks of ``chunk_tokens``. Each chunk is recomputed in the backward pass
(activation checkpointing), so at most one chunk's logits exist at a time: the full logits never do.

The numbers are those of the model's own loss (``tests/integration/test_loss.py`` holds loss and gradients equal):
labels are shifted by one, -100 is ignored, and the sum is divided by ``num_items_in_batch`` (the completion tokens
of the whole accumulated batch) when the Trainer passes it, else by this batch's counted tokens.
"""

from __future__ import annotations

from typing import Any, Optional

IGNORE = -100


def _parts(model: Any) -> tuple[Any, Any]:
    """(decoder, output head) of a causal LM, through PEFT and DeepSpeed/DDP wrappers. LoRA layers injected by
    PEFT live inside these modules, so adapters (also on the head) take part as in the model's own forward."""
    inner = model
    while hasattr(inner, "module") and not hasattr(inner, "get_output_embeddings"):
        inner = inner.module  # DeepSpeedEngine / DistributedDataParallel
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()  # PeftModel -> the transformers model with LoRA layers injected
    return decoder_of(inner), inner.get_output_embeddings()


def decoder_of(causal_lm: Any) -> Any:
    """The decoder inside a transformers causal LM: its ``base_model_prefix`` attribute where it has one, else the
    child module that holds the input embeddings (Llama 4's text model names its prefix ``language_model`` but keeps
    the decoder in ``model``)."""
    inner = getattr(causal_lm, causal_lm.base_model_prefix, None)
    if inner is not None and inner is not causal_lm:
        return inner
    embeddings = causal_lm.get_input_embeddings()
    for _, child in causal_lm.named_children():
        if any(m is embeddings for m in child.modules()):
            return child
    raise ValueError(f"{type(causal_lm).__name__} has no decoder module holding its input embeddings")


def _chunk_loss(head: Any, hidden: Any, labels: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), labels, reduction="sum")


def _fused_loss(head: Any, hidden: Any, labels: Any) -> Any:
    """Liger's fused linear cross-entropy (CUDA, Triton): logits never leave the kernel's chunks. The compiler
    chooses it only with CUDA, liger-kernel installed, and a plain frozen head (no LoRA on it, no ZeRO-3 shards)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(reduction="sum")(head.weight, hidden, labels, head.bias)


def selective_loss(model: Any, inputs: dict[str, Any], chunk_tokens: int,
                   num_items_in_batch: Optional[Any] = None, fused: bool = False, recompute: bool = True) -> Any:
    """Causal-LM cross-entropy over the positions whose label is not -100, without full logits. ``recompute``
    (the plan's ``train.loss_recompute``) recomputes each chunk in the backward so only one chunk's logits exist at
    a time; without it (ZeRO-3, whose sharded head cannot be re-gathered inside the backward) every counted
    position's logits are kept, still never the full batch's."""
    import torch
    from torch.utils.checkpoint import checkpoint

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    decoder, head = _parts(model)
    kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids",
                                                      "inputs_embeds", "cache_position")}
    hidden = decoder(**kwargs, use_cache=False).last_hidden_state
    shifted = labels[:, 1:]
    keep = shifted != IGNORE
    selected, targets = hidden[:, :-1][keep], shifted[keep]  # (N, hidden), (N,)
    total = hidden.new_zeros((), dtype=torch.float32)
    if fused and targets.numel():
        total = total + _fused_loss(head, selected, targets)
    else:
        for start in range(0, targets.numel(), chunk_tokens):
            h, t = selected[start: start + chunk_tokens], targets[start: start + chunk_tokens]
            if recompute and torch.is_grad_enabled():  # recomputed in backward: one chunk's logits at a time
                total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
            else:
                total = total + _chunk_loss(head, h, t)
    if targets.numel() == 0:
        total = total + hidden.sum() * 0.0  # keeps the graph connected (every rank must run backward)
    if num_items_in_batch is None:
        return total / max(targets.numel(), 1)
    return total / torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
