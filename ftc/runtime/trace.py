"""A traced training step: the real model class, built from its config without allocating a weight, wrapped with the
plan's PEFT config, runs one forward and backward of the planned micro-batch shape, with the plan's gradient
checkpointing, under torch's fake tensors. What it measures, with torch's own instruments:

- **saved activations**: every tensor autograd keeps for the backward (``torch.autograd.graph.saved_tensors_hooks``),
  counted once per storage, the model's parameters left out (they are the weights term);
- **FLOPs** of the step, forward and backward, recomputation included (``torch.utils.flop_counter.FlopCounterMode``).

Why these: both work under ``FakeTensorMode``, which transformers itself treats as tracing (it skips the reads of
mask values a meta tensor cannot give), so an 8B or 70B model traces on a laptop in seconds. torch's ``MemTracker``
(``torch.distributed._tools.mem_tracker``) would add the live peak, but in torch 2.13 it registers a gradient hook on
every parameter and refuses PEFT's frozen base weights, so the peak stays the analytic model's sum.

The trace covers the decoder. What it cannot see stays modelled and named so: the output head and loss (the plan's
``logits`` term: selective or fused losses run it on a few positions), 4-bit weights (QLoRA traces the 16-bit layers:
bitsandbytes does not run on fake tensors), attention kernels' workspaces, the allocator's reservation, the CUDA
context and NCCL buffers.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from ftc.compiler.facts import TraceFacts
from ftc.errors import UserError
from ftc.plan import Plan


def _config(plan: Plan) -> Any:
    """The model's transformers config: the tiny model's from its shape, any other from its config.json."""
    from transformers import AutoConfig, LlamaConfig

    spec = plan.model
    if spec.path == "ftc:tiny":
        return LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                           num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
                           intermediate_size=spec.intermediate_size,
                           max_position_embeddings=spec.max_position_embeddings,
                           tie_word_embeddings=spec.tie_word_embeddings)
    from ftc.compiler.facts import find_model_dir

    # a local dir, the HF cache, or the config.json ftc ships for a catalog id
    found = find_model_dir(spec.path, spec.revision)
    try:
        return AutoConfig.from_pretrained(str(found) if found else spec.path, revision=None if found else spec.revision,
                                          trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"--trace needs the model's config.json ({spec.path}): {e}. fix: model.path=<a local model "
                        "directory>, or download its config.json (huggingface-cli download <id> config.json)") from e


class TraceUnsupported(Exception):
    """The model's forward does something fake tensors cannot: the trace is refused with what and why, and the plan's
    figures stay the analytic model's."""


def trace_step(plan: Plan, micro: int, seq: int) -> TraceFacts:
    """Traces one training step of ``micro`` sequences of ``seq`` tokens as the plan trains them."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    start = time.time()
    with warnings.catch_warnings():  # transformers' deprecation notices of the properties PEFT reads: not the user's
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return _trace(plan, micro, seq, start)
        except (DataDependentOutputException, DynamicOutputShapeException) as e:
            op = getattr(e, "func", None) or str(e).splitlines()[0]
            raise TraceUnsupported(
                f"{plan.model.family or plan.model.path}'s forward reads tensor values to decide shapes ({op}: e.g. "
                "expert sizes or sequence lengths read with .tolist() or .item()), which fake tensors cannot give; "
                "the plan's activation and FLOP figures stay the analytic model's") from e


def _fused_attention(flops: list[float]) -> Any:
    """``scaled_dot_product_attention`` as the fused kernels behave (flash / memory-efficient): saved for the backward
    are q, k, v, the output and the row log-sum-exp, never the s x s probabilities; FLOPs counted as causal. Under fake
    tensors torch would run the math fallback, which keeps the probabilities: a tracing artefact, not what trains on a
    GPU or with SDPA's fused CPU kernel."""
    import torch

    class Fused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):  # type: ignore[override]
            out = q.new_empty(q.shape[:-1] + v.shape[-1:])
            lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, grad):  # type: ignore[override]
            q, k, v, _, _ = ctx.saved_tensors
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        b, h, sq, d = query.shape
        sk = key.shape[-2]
        causal = 0.5 if (is_causal or attn_mask is not None) and sq == sk else 1.0  # a decoder's mask is causal
        flops.append(2 * 2 * b * h * sq * sk * d * causal * 3)  # QK^T and PV, forward + backward (2x)
        return Fused.apply(query, key, value)

    return sdpa


def _decoder_layers(model: Any) -> list[Any]:
    """The repeated decoder blocks (transformers names their class in ``_no_split_modules``), outermost only: a block
    inside a listed block (Mamba's mixer in its block) is measured with it."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = [(n, m) for n, m in model.named_modules() if type(m).__name__ in names]
    return [m for n, m in found if not any(n.startswith(o + ".") for o, _ in found if o != n)]


def _trace(plan: Plan, micro: int, seq: int, start: float) -> TraceFacts:
    """One step without checkpointing, each decoder block's saved bytes and input measured apart; with the plan's
    gradient checkpointing the step keeps every block's input and recomputes one block at a time, so its saved
    activations are the rest + every block's input + the largest block's, and its FLOPs one more forward of the
    blocks (non-reentrant checkpointing hides what it keeps from saved-tensor hooks, so it is composed, not hooked)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from ftc.compiler.model_description import fake_weights
    from ftc.runtime.loss import decoder_of
    from ftc.runtime.model import DTYPES, lora_config, torch_dtype

    config = _config(plan)
    q = plan.method.quantization
    dtype = getattr(torch, DTYPES[q.compute_dtype]) if q else torch_dtype(plan)
    # A mixture of experts runs its experts through torch's grouped matmul (transformers 5's default), whose fake
    # kernel takes bf16 only: such a model is traced in bf16, and each bf16 tensor it saves is counted at the plan's
    # width. (The per-expert loop would take any dtype, but it selects tokens with nonzero(), a data-dependent shape
    # fake tensors cannot give.)
    widen = 1.0
    if plan.model.moe is not None and dtype != torch.bfloat16:
        widen = torch.empty((), dtype=dtype).element_size() / 2
        dtype = torch.bfloat16
    _count_grouped_mm()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=plan.model.attn_implementation,
                                                 dtype=dtype, trust_remote_code=plan.model.trust_remote_code)
    if plan.method.peft:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(plan))
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    fake_weights(model, fake)  # CPU code paths (autocast...), no memory
    model.train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        key = t.untyped_storage()._cdata
        if key not in params:
            nbytes = t.untyped_storage().nbytes() * (widen if t.dtype == torch.bfloat16 else 1.0)
            saved[key] = max(saved.get(key, 0), nbytes)
        return t

    inner = model.get_base_model() if plan.method.peft else model
    decoder = decoder_of(inner)
    blocks: list[tuple[float, float]] = []  # (saved bytes, input bytes) of each decoder block
    marks: dict[int, float] = {}

    def before(module: Any, args: Any, kwargs: Any) -> None:
        marks[id(module)] = sum(saved.values())
        hidden = args[0] if args else kwargs.get("hidden_states")
        marks[-id(module)] = hidden.numel() * hidden.element_size() if hidden is not None else 0.0

    def after(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        blocks.append((sum(saved.values()) - marks[id(module)], marks[-id(module)]))

    hooks = [h for layer in _decoder_layers(inner) for h in (
        layer.register_forward_pre_hook(before, with_kwargs=True),
        layer.register_forward_hook(after, with_kwargs=True))]
    attention: list[float] = []
    flops = FlopCounterMode(display=False)
    device = next(model.parameters()).device
    try:
        with fake, flops, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                _patched_sdpa(_fused_attention(attention)):
            ids = torch.zeros((micro, seq), dtype=torch.long, device=device)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
            if plan.model.moe is not None:
                kwargs["output_router_logits"] = True
            hidden = decoder(**kwargs).last_hidden_state
            forward = flops.get_total_flops() + sum(attention) / 3
            hidden.float().square().mean().backward()  # a stand-in loss: the head and loss stay modelled
    finally:
        for h in hooks:
            h.remove()
    total = float(sum(saved.values()))
    step_flops = float(flops.get_total_flops()) + sum(attention)
    if plan.train.gradient_checkpointing and blocks:
        total = total - sum(b for b, _ in blocks) + sum(i for _, i in blocks) + max(b for b, _ in blocks)
        step_flops += forward  # each block's forward runs again in the backward
    return TraceFacts(micro=micro, seq=seq, activations_bytes=total, flops=step_flops,
                      seconds=round(time.time() - start, 2))


def _grouped_mm_flops(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of torch's grouped matmul, 2 per multiply-add over every group: (tokens, k) by experts' (k, n) weights,
    the weight gradient's (k, tokens) by (tokens, n) grouped over tokens, or batched 3-D by 3-D."""
    if len(a_shape) == 3 and len(b_shape) == 3:
        return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]
    if len(a_shape) == 3:  # (groups, m, k) by (k, n over the groups)
        return 2 * a_shape[1] * a_shape[2] * b_shape[1]
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


def _count_grouped_mm() -> None:
    """FlopCounterMode has no formula for aten._grouped_mm (torch 2.13): register one, once."""
    import torch
    from torch.utils import flop_counter

    op = getattr(torch.ops.aten, "_grouped_mm", None)
    if op is not None and op not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op)(_grouped_mm_flops)


def _patched_sdpa(sdpa: Any) -> Any:
    from unittest import mock

    import torch

    return mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", sdpa)
