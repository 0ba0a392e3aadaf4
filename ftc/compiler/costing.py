"""Time, cost, spot checkpoints and serving of a compiled experiment: the estimators applied to the draft.

Formulas and sources in docs/ESTIMATES.md; ``compile`` calls these once the batch and schedule are decided.
"""

from __future__ import annotations

import math
from typing import Optional

from ftc.compiler import estimate as est
from ftc.compiler.draft import Draft, weight_dtype
from ftc.compiler.facts import Facts
from ftc.config.objectives import TRAINERS
from ftc.config.schema import Config
from ftc.plan import ServingSpec

EVAL_BATCH = 16  # runtime/evaluate.py generates 16 prompts at a time


def time_and_cost(cfg: Config, facts: Facts, draft: Draft) -> tuple[float, float, float, float, float]:
    hw, a = cfg.hardware, draft.arch
    context = draft.tokens_per_example
    selective = draft.loss in ("selective", "liger")
    fpt = est.train_flops_per_token(a, method=draft.method.flops_terms, context=context,
                                    checkpointing=draft.checkpointing,
                                    head_share=draft.loss_share if selective else 1.0,
                                    head_recompute=draft.loss == "selective" and draft.loss_recompute,
                                    reference_forwards=draft.reference_forwards)
    # Tokens one device's matmuls see per micro-step (a typical unpacked batch: its mean example): short ones run
    # below the profile's utilisation on a GPU. CPU profiles are calibrated end to end (ftc calibrate fits rate and
    # fixed cost).
    micro_tokens = draft.micro * draft.sequences_per_example * draft.seq_tokens
    tps = est.tokens_per_second(fpt, peak_tflops=hw.peak_tflops, mfu=hw.mfu, world=draft.world,
                                method=draft.method.throughput_terms, gathers=draft.weights_sharded,
                                micro_tokens=micro_tokens,
                                half_tokens=est.GEMM_HALF_TOKENS if hw.accelerator == "cuda" else 0)
    # One optimizer step on one worker: its micro-steps (FLOPs + fixed cost) and the optimizer's update.
    step_s = draft.grad_accum * (micro_tokens * draft.world / tps if tps else 0.0) \
        + draft.grad_accum * micro_step_overhead(cfg, draft) + optimizer_seconds(cfg, draft)
    step_s += draft.generation_s  # GRPO: sampling the step's completions
    draft.offload_s = offload_seconds(cfg, draft)
    step_s += draft.offload_s
    step_tokens = cfg.train.global_batch_size * draft.seq_tokens * draft.sequences_per_example
    if step_s > 0:
        tps = step_tokens / step_s  # what a run measures: training tokens over training time, every cost in it
    train_s = draft.steps * step_s
    evals = max(1, draft.steps // eval_steps(cfg, draft)) if draft.steps else 0
    trainer = TRAINERS.get(cfg.objective.trainer)
    # GRPO runs no validation pass during training (TRL's would generate): ftc evaluates its rewards afterwards.
    val_examples = 0 if trainer is not None and trainer.generates else draft.split_examples.get("validation", 0)
    eval_tokens = evals * val_examples * draft.tokens_per_example * draft.sequences_per_example
    eval_batches = evals * math.ceil(val_examples / max(draft.micro * draft.world, 1))
    generation_batches, decode_steps = 0, 0.0
    if cfg.eval.enabled:
        samples = min(cfg.eval.max_samples, max(draft.split_examples.get("test", 0), 1))
        generation_batches = math.ceil(samples / EVAL_BATCH)
        # The tuned model stops at EOS, about a completion's length in (a batch runs to its longest, x1.5); the base
        # model, not tuned to stop, is charged every max_new_tokens step.
        completion = draft.tokens_per_example * draft.loss_share if draft.loss_share < 1 else cfg.eval.max_new_tokens
        decode_steps = min(cfg.eval.max_new_tokens, math.ceil(1.5 * completion))
        # Each baseline is charged every max_new_tokens step (the dangerous side: it may not stop); the prompted one
        # also reads its eval.shots training examples before each prompt.
        runs = 1 + len(draft.baselines)
        decode_steps = (decode_steps + len(draft.baselines) * cfg.eval.max_new_tokens) / runs
        generation_batches *= runs
        if "prompted" in draft.baselines:
            eval_tokens += samples * cfg.eval.shots * draft.tokens_per_example
    method = draft.method.memory_terms
    weights = est.weight_bytes(a, method, weight_dtype(cfg, draft), cfg.method.double_quant)
    draft.baseline_hours = 0.0
    if cfg.eval.enabled and draft.baselines:
        prefill = samples * cfg.eval.shots * draft.tokens_per_example if "prompted" in draft.baselines else 0
        draft.baseline_hours = est.eval_seconds(
            a, eval_tokens=prefill, eval_batches=0,
            generation_batches=generation_batches // runs * len(draft.baselines),
            decode_steps=cfg.eval.max_new_tokens, batch=EVAL_BATCH, weight_bytes_=weights, peak_tflops=hw.peak_tflops,
            mfu=hw.mfu, world=draft.world, bandwidth_gbs=hw.memory_bandwidth_gbs, decode_gbs=hw.decode_gbs) / 3600
    eval_s = est.eval_seconds(a, eval_tokens=eval_tokens, eval_batches=eval_batches,
                              generation_batches=generation_batches, decode_steps=decode_steps,
                              batch=EVAL_BATCH, weight_bytes_=weights,
                              peak_tflops=hw.peak_tflops, mfu=hw.mfu, world=draft.world,
                              step_overhead_s=hw.step_overhead_s, bandwidth_gbs=hw.memory_bandwidth_gbs,
                              decode_gbs=hw.decode_gbs)
    return fpt, tps, train_s / 3600, eval_s / 3600, (train_s + eval_s) / 3600


def micro_step_overhead(cfg: Config, draft: Draft) -> float:
    """Fixed seconds per micro-step: the profile's measured figure (ftc calibrate), else on a GPU the eager host cost
    of the adapted modules (est.EAGER_ADAPTER_S each)."""
    hw = cfg.hardware
    if not est.eager_adapter_cost(hw.accelerator, draft.peft, hw.step_overhead_s) or draft.arch is None:
        return hw.step_overhead_s
    modules = sum(1 if t == "lm_head" or "embed" in t else draft.arch.layers for t in draft.targets)
    return modules * est.EAGER_ADAPTER_S


# The CPU's optimizer step under offload (DeepSpeed's CPU-Adam, or torch's AdamW on the CPU for FSDP): assumed
# 0.5 billion parameters a second, the slow side of what DeepSpeed's ZeRO-Offload paper reports for its CPU-Adam on a
# server socket; not measured here.
CPU_OPTIMIZER_PARAMS_PER_S = 0.5e9


def offload_seconds(cfg: Config, draft: Draft) -> float:
    """What offload adds to an optimizer step on one worker: its weight shard copied to the device for every pass
    over the layers (forward, backward, and the recomputed forward with checkpointing) of every micro-step
    (``offload=params``), its gradients down and its updated trainable parameters up once a step (16-bit each), and
    the optimizer step on the CPU."""
    if draft.offload == "none" or draft.arch is None:
        return 0.0
    shards = draft.state_shards
    trainable = draft.trainable / shards
    moved = trainable * 2 * est.BYTES["bf16"]
    if draft.offload == "params":
        weights = est.weight_bytes(draft.arch, draft.method.memory_terms, weight_dtype(cfg, draft),
                                   cfg.method.double_quant) / shards
        moved += weights * (2 + draft.checkpointing) * draft.grad_accum
    return moved / (cfg.hardware.host_link_gbs * 1e9) + trainable / CPU_OPTIMIZER_PARAMS_PER_S


def optimizer_seconds(cfg: Config, draft: Draft) -> float:
    """One optimizer step on one device (ZeRO and FSDP shard the update across workers); offloaded, the CPU steps
    it (``offload_seconds``)."""
    if draft.offload != "none":
        return 0.0
    trainable = draft.trainable / draft.state_shards
    param_bytes = est.ADAPTER_BYTES if draft.peft else est.BYTES[weight_dtype(cfg, draft)]
    return est.optimizer_step_seconds(trainable, optim=cfg.train.optim, param_bytes=param_bytes,
                                      clip=cfg.train.max_grad_norm > 0, bandwidth_gbs=cfg.hardware.memory_bandwidth_gbs)


CHECKPOINT_WRITE_GBS = 1.0  # assumed local-disk write rate for a checkpoint (adapter/weights + optimizer state)


def spot_checkpoints(cfg: Config, draft: Draft, train_hours: float, devices: int, price: float) -> Optional[int]:
    """On spot devices: a checkpoint interval from the preemption assumption (Young 1974: sqrt(2 x checkpoint
    cost x mean time between preemptions)), and what a preemption costs in lost work."""
    hw = cfg.hardware
    if draft.steps == 0 or train_hours <= 0:
        return None
    step_s = train_hours * 3600 / draft.steps
    weights = draft.trainable if draft.peft else (draft.arch.total_params if draft.arch else 0)
    checkpoint_s = 1.0 + weights * est.trainable_bytes_per_param(
        draft.method.memory_terms, cfg.train.optim, draft.precision if draft.precision in est.BYTES else "fp32",
        deepspeed=draft.zero_stage > 0) / (CHECKPOINT_WRITE_GBS * 1e9)
    between_s = 3600 / max(hw.preemptions_per_hour * devices, 1e-9)
    interval_s = math.sqrt(2 * checkpoint_s * between_s)
    steps = max(1, min(draft.steps, round(interval_s / step_s)))
    lost_s = steps * step_s / 2
    expected = train_hours * hw.preemptions_per_hour * devices
    draft.decisions.append(
        f"spot: checkpoint every {steps} steps (~{steps * step_s / 60:.1f} min: Young's rule for an assumed "
        f"{hw.preemptions_per_hour:g} preemptions per device-hour and ~{checkpoint_s:.0f} s per checkpoint); "
        f"~{expected:.2f} preemptions expected, each losing ~{lost_s / 60:.1f} min of work "
        f"(${lost_s / 3600 * price * devices:.2f}) plus the restart"
        + ("" if cfg.train.save_steps is None else f"; train.save_steps={cfg.train.save_steps} is kept as set"))
    return steps


def serving_estimate(cfg: Config, draft: Draft) -> Optional[ServingSpec]:
    hw, a = cfg.hardware, draft.arch
    if a is None or not (hw.memory_bandwidth_gbs or hw.decode_gbs):
        return None
    cuda = hw.accelerator == "cuda"
    # On CUDA as LoRA servers do it (vLLM): a 16-bit base, merged or with the adapter applied per step (its bytes
    # read too; the extra LoRA kernels are not modelled); a QLoRA adapter is served on the 16-bit base as well. On
    # a CPU: llama.cpp on the GGUF f16 export, one request at a time.
    merged = est.weight_bytes(a, "lora", "bf16" if hw.bf16 and cuda else "fp16", False)
    adapter = merged + (draft.trainable * 2 if draft.peft else 0)

    def figures(weights: float, batch: int) -> tuple[float, float]:
        step = est.decode_step_s(weights, batch, est.decode_flops_per_token(a), peak_tflops=hw.peak_tflops,
                                 bandwidth_gbs=hw.memory_bandwidth_gbs, decode_gbs=hw.decode_gbs, mfu=None)
        tps = batch / step if step else 0.0
        return round(tps, 1), round(hw.usd_per_hour / (tps * 3600) * 1e6, 3) if tps else 0.0

    stream, _ = figures(merged, 1)
    if not cuda:
        _, usd = figures(merged, 1)
        return ServingSpec(engine="llama.cpp", format="GGUF f16 (ftc export format=gguf)",
                           stream_tokens_per_s=stream, merged_tokens_per_s=stream, merged_usd_per_m_tokens=usd,
                           adapter_tokens_per_s=None, adapter_usd_per_m_tokens=None)
    (m_tps, m_usd), (a_tps, a_usd) = figures(merged, est.SERVING_BATCH), figures(adapter, est.SERVING_BATCH)
    return ServingSpec(engine="vllm", format=f"merged {'bf16' if hw.bf16 else 'fp16'} safetensors (ftc merge), or "
                       "the base + adapter (--enable-lora)", stream_tokens_per_s=stream,
                       merged_tokens_per_s=m_tps, merged_usd_per_m_tokens=m_usd, adapter_tokens_per_s=a_tps,
                       adapter_usd_per_m_tokens=a_usd)


def eval_steps(cfg: Config, draft: Draft) -> int:
    if cfg.train.eval_steps:
        return cfg.train.eval_steps
    return max(1, draft.steps // 5) if draft.steps else 1
