"""Human-readable plan: a compact table, errors and warnings last so they are seen."""

from __future__ import annotations

from typing import Any

from ftc import secrets
from ftc.compiler import estimate as est
from ftc.config.launchers import LAUNCHER_KINDS
from ftc.config.objectives import TRAINERS
from ftc.plan import Plan

VERDICTS = {"fits": "fits", "tight": "TIGHT: fits only if the estimate holds", "does_not_fit": "DOES NOT FIT"}
DROPPED = {"empty": "empty", "pii": "with personal data", "language": "in other languages",
           "duplicates": "duplicates", "near_duplicates": "near-duplicates"}


def data_quality(d: Any) -> str:
    """One line of what the data selection found: near-duplicates, leakage, personal data, languages."""
    q = d.quality
    near = (f"{q.near_groups} near-duplicate groups (Jaccard >= {d.near_dup_threshold:g})"
            if d.near_dup_threshold is not None else "near-duplicates not checked (data.near_dup_threshold=null)")
    leaked = f"{q.leaked} training copies of held-out rows dropped" if q.leaked else \
        "no training copy of a held-out row"
    moved = f", {q.moved} held-out examples moved to training" if q.moved else ""
    pii = "no personal data found"
    if q.pii:
        pii = "personal data: " + ", ".join(f"{n} {k}" for k, n in q.pii.items()) + f" ({d.pii})"
    langs = ", ".join(f"{k} {n}" for k, n in list(q.languages.items())[:5])
    sampled = f" (an even sample of {q.languages_sampled})" if q.languages_sampled else ""
    return f"{near}; {leaked}{moved}; {pii}; languages {langs or 'none'}{sampled}"


def _num(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:g}"


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    if h < 1:
        return f"{h * 60:.1f} min"
    return f"{h:.2f} h"


def _serving(plan: Plan) -> str:
    s = plan.serving
    if s is None:
        return "no estimate (the profile has no memory bandwidth)"
    if s.adapter_tokens_per_s is None:
        return (f"{s.engine} on the {s.format}: ~{_num(s.stream_tokens_per_s)} tokens/s one stream "
                f"(${s.merged_usd_per_m_tokens:g}/M tokens), decode-bound; `ftc serve` measures it")
    return (f"{s.engine}: ~{_num(s.merged_tokens_per_s)} tokens/s merged (${s.merged_usd_per_m_tokens:g}/M "
            f"tokens), ~{_num(s.adapter_tokens_per_s)} tokens/s adapter on the 16-bit base "
            f"(${s.adapter_usd_per_m_tokens:g}/M), batch 32 on one device; ~{_num(s.stream_tokens_per_s)} "
            "tokens/s one stream; decode-bound")


def _part_line(d: Any) -> str:
    p = d.part
    whole = (f"{'~' if p.total_from == 'the shard count' else ''}{p.total:,} rows ({p.total_from})" if p.total
             else "an unknown number of rows")
    line = f"first {p.rows:,} rows (data.max_rows) from {p.shards_read} of {p.shards} files; the split: {whole}"
    if p.whole_epoch_hours is not None:
        line += (f"; scaled from them, an epoch over all of it ~{p.whole_train_examples:,} examples, "
                 f"{_hours(p.whole_epoch_hours)}, ${p.whole_epoch_usd:,.2f}")
    return line


def plan_table(plan: Plan) -> str:
    m, me, d, b, s, mem = plan.model, plan.method, plan.data, plan.batch, plan.schedule, plan.memory
    q = me.quantization
    method = me.name + (f" r={me.r} alpha={me.alpha:g} dropout={me.dropout:g}" if me.peft else "")
    if q:
        method += (f", {q.bits}-bit {q.quant_type}{' +double-quant' if q.double_quant else ''}, "
                   f"compute {q.compute_dtype}")
    ds = plan.deepspeed
    kind = LAUNCHER_KINDS.get(plan.launcher.kind)  # an unknown kind is among the plan's errors; still printable
    ray_train = kind is not None and kind.ray_train
    rows = [
        ("experiment", plan.name),
        ("model", f"{m.name} ({m.path}), {m.family}, {_num(m.params)} params"
                  + (f"; starts from the adapter {m.adapter}" if m.adapter else "")),
        ("method", method),
        ("objective", f"{plan.objective.name} ({TRAINERS[plan.objective.trainer].trl})" + (
            f" beta={plan.objective.beta:g}" if TRAINERS[plan.objective.trainer].uses_beta else "")
         + (f" loss={plan.objective.loss_type}" if plan.objective.loss_type else "")
         + (f", {plan.objective.sequences_per_example} sequences/example" if plan.objective.sequences_per_example > 1
            else "")
         + (f" + {plan.objective.reference_forwards} forward(s) without gradient each, reference: the model at "
            "the start" if plan.objective.reference_forwards else "")),
        *([("experts", f"{m.moe.experts} per layer, top-{m.moe.experts_per_token}, {m.moe.moe_layers} MoE layers; "
                       f"{_num(m.moe.active_params)} active of {_num(m.params)} params per token; experts held in "
                       f"{m.moe.expert_weights}")] if m.moe else []),
        ("targets", (", ".join(me.target_modules) or "all weights")
         + (f" + experts {', '.join(me.target_parameters)}" if me.target_parameters else "")),
        ("trainable", f"{_num(me.trainable_params)} ({me.trainable_percent:.3g}%)"),
        ("data", f"{d.name} [{d.format}] {d.train_examples} examples x ~{d.tokens_per_example} tokens, "
                 f"max_length {d.max_length}, packing {'on' if d.packing else 'off'}" + (
                     f"; validation {d.examples.get('validation', 0)}, test {d.examples.get('test', 0)}"
                     if d.examples else "") + (
                     "; dropped " + ", ".join(f"{n} {DROPPED.get(k, k)}" for k, n in d.dropped.items() if n)
                     if any(d.dropped.values()) else "")),
        *([("  part", _part_line(d))] if d.part else []),
        *([("data quality", data_quality(d))] if d.quality.checked else []),
        ("hardware", f"{plan.hardware.name}: {plan.hardware.devices} x {plan.hardware.device_gb:g} GB "
                     f"{plan.hardware.accelerator}"),
        ("precision", plan.precision),
        ("batch", b.derivation),
        ("schedule", f"{s.steps} steps, {s.epochs:g} epochs, {_num(s.tokens)} tokens "
                     f"({_num(s.tokens_per_step)}/step), warmup {s.warmup_steps}, "
                     + (f"eval/save every {s.eval_steps}" if s.eval_steps == s.save_steps else
                        f"eval every {s.eval_steps}, save every {s.save_steps}")),
        ("grad checkpointing", "on" if plan.train.gradient_checkpointing else "off"),
        ("memory/device", f"{mem.per_device_gb:.2f} GB process peak ({mem.low_gb:.1f}-{mem.high_gb:.1f} GB as "
                          f"published runs spread) of {mem.device_gb:g} GB -> {VERDICTS[mem.verdict]} (live "
                          f"tensors {mem.live_gb:.2f} GB, allocator reserved {mem.reserved_gb:.2f} GB)"),
        ("  breakdown", ", ".join(f"{k} {v:g}" for k, v in mem.breakdown.items() if v)),
        *([("  traced", _traced_line(plan))] if mem.traced else []),
        ("time", f"{_hours(plan.time.hours)} (train {_hours(plan.time.train_hours)}, eval "
                 f"{_hours(plan.time.eval_hours)}) at ~{_num(plan.time.tokens_per_s)} tokens/s (mfu "
                 f"{plan.hardware.mfu:g} {plan.hardware.mfu_basis}"
                 + (f", {est.EAGER_ADAPTER_S * 1e3:g} ms per adapted module fitted on PEFT's L40S runs"
                    if est.eager_adapter_cost(plan.hardware.accelerator, plan.method.peft,
                                              plan.hardware.step_overhead_s) else "") + ")"),
        ("cost", f"${plan.cost.usd:.2f} ({plan.cost.device_hours:g} device-h x "
                 f"${plan.cost.usd_per_hour / max(plan.world_size, 1):g}/h"
                 f"{' spot' if plan.hardware.spot else ''})" + (
                     f"; on-demand ${plan.cost.on_demand_usd:.2f}, spot ${plan.cost.spot_usd:.2f}"
                     if plan.cost.spot_usd is not None else "")),
        ("serving", _serving(plan)),
        ("launcher", f"{plan.launcher.kind}" + (
            f": {plan.launcher.num_workers} workers x {plan.launcher.resources_per_worker}"
            f"{', address ' + plan.launcher.address if plan.launcher.address else ', local Ray instance'}"
            f", max_failures {plan.launcher.max_failures}" if ray_train else
            f": {plan.world_size} processes on this machine, one a device, max_failures {plan.launcher.max_failures}"
            if plan.world_size > 1 else "")),
        ("strategy", _strategy_line(plan, ds)),
        *([("offload", _offload_line(plan))] if plan.train.offload != "none" else []),
        ("output", plan.output_dir),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for title, items in (("decisions", plan.decisions), ("warnings", plan.warnings), ("errors", plan.errors)):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  - {i}" for i in items)
    return secrets.mask("\n".join(lines))  # a path with credentials is refused, and never shown


def _strategy_line(plan: Plan, ds: Any) -> str:
    s = plan.train.strategy
    if s == "deepspeed":
        return f"DeepSpeed ZeRO-{ds['zero_optimization']['stage']} over {plan.world_size} workers"
    if s == "fsdp":
        return f"FSDP2 over {plan.world_size} workers (weights, gradients, optimizer state sharded in their dtype)"
    if s == "ddp":
        return f"DDP over {plan.world_size} workers (each holds the whole model)"
    return "one worker"


def _offload_line(plan: Plan) -> str:
    hw, mem = plan.hardware, plan.memory
    what = "optimizer state" if plan.train.offload == "optimizer" else "parameters and optimizer state"
    host = (f"of {hw.host_memory_gb:g} GB host memory" if hw.host_memory_gb else
            "(hardware.host_memory_gb not stated: unchecked)")
    return (f"{what} in CPU memory: {mem.host_gb:.1f} GB per node {host}; +{plan.time.offload_s:.2f} s per step "
            f"(copies at {hw.host_link_gbs:g} GB/s and the CPU's optimizer step)")


def warnings_text(plan: Plan) -> str:
    """The plan's warnings as ``ftc train`` shows them before it loads anything (empty when none)."""
    if not plan.warnings:
        return ""
    return "\n".join(["ftc: the plan warns (the run goes on):"] + [f"  - {w}" for w in plan.warnings])


def errors_text(plan: Plan) -> str:
    n = len(plan.errors)
    head = f"ftc: the experiment has {n} problem{'s' if n > 1 else ''}; nothing was run:"
    return "\n".join([head] + [f"  - {e}" for e in plan.errors])


def _traced_line(plan: Plan) -> str:
    """``ftc plan --trace``: the traced step beside the analytic terms."""
    m, t = plan.memory.traced, plan.time.traced
    return (f"activations {m.activations_gb:.3g} GB vs analytic {m.analytic_gb:.3g} GB (x{m.ratio:g}) at micro "
            f"{m.micro} x {m.seq} tokens; decoder FLOPs/token {t.flops_per_token:.3g} vs "
            f"{t.analytic_flops_per_token:.3g} (x{t.ratio:g}); traced in {m.seconds:g} s")
