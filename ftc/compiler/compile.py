"""``compile(cfg, facts) -> Plan``: pure. No I/O, no clock, no environment; no torch.

The steps: resolve the architecture, decide precision / world size / ZeRO stage / targets, size the data, pick the
micro batch that fits (keeping the global batch fixed), work out the schedule, memory, time and cost, then run
every rule and attach their findings to the Plan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

from ftc.compiler import architecture, rules
from ftc.compiler import estimate as est
from ftc.compiler.costing import eval_steps, serving_estimate, spot_checkpoints, time_and_cost
from ftc.compiler.draft import AUTO_MAX_LENGTH, Draft, band, safe, verdict, weight_dtype
from ftc.compiler.facts import Facts, moe_pattern
from ftc.config.launchers import LAUNCHER_KINDS, OPTIONAL_PACKAGES
from ftc.config.methods import METHODS, method_of
from ftc.config.objectives import TRAINERS
from ftc.config.schema import BASELINES, Config
from ftc.data.formats import BY_ROW, FORMATS, Format
from ftc.data.select import held_out_size
from ftc.data.tokens import split_tokens
from ftc.plan import (
    BatchSpec,
    BudgetSpec,
    CostSpec,
    DataQuality,
    DataSpec,
    EvalSpec,
    HardwareSpec,
    LauncherSpec,
    MemorySpec,
    MethodSpec,
    ModelSpec,
    MoeSpec,
    ObjectiveSpec,
    PartSpec,
    Plan,
    QuantSpec,
    ScheduleSpec,
    TimeSpec,
    TracedMemory,
    TracedTime,
    TrainSpec,
)
from ftc.pretrained import BUILT_IN

# The output head's module name as PEFT sees it: ``lm_head`` in every transformers 5 causal LM, whatever name the
# checkpoint stores it under (GPT-NeoX's ``embed_out`` is renamed on load).
HEAD = "lm_head"


def _arch(cfg: Config, facts: Facts, draft: Draft) -> None:
    """The architecture (``architecture.resolve``: transformers and PEFT first, the tables last), into the draft."""
    a = architecture.resolve(cfg.model, facts)
    draft.decisions.extend(a.decisions)
    draft.arch, draft.arch_values, draft.family = a.numbers, a.values, a.family
    draft.linear_modules, draft.expert_parameters, draft.routers = a.linear_modules, a.expert_parameters, a.routers
    draft.stored_quantization = a.stored_quantization
    built_in = BUILT_IN.get(cfg.model.path)
    if built_in is not None:
        draft.decisions.append(f"model {built_in.repo}: {built_in.note}")
    if a.stored_quantization == "mxfp4" and not draft.method.quantized:
        draft.decisions.append("the checkpoint's MXFP4 weights load dequantized to 16-bit for training "
                               "(Mxfp4Config(dequantize=True): PEFT trains no MXFP4 weights)")


def _objective(cfg: Config, draft: Draft) -> None:
    """What the objective costs per example, from its trainer's entry (ftc.config.objectives): preference pairs
    run chosen and rejected (2 sequences); DPO adds a reference forward per sequence (no gradient), KTO also its
    KL estimate. Prompts of pairs keep at most max_prompt_length tokens. An unset loss type is the trainer's own."""
    o = cfg.objective
    trainer = TRAINERS.get(o.trainer)  # an unknown name is refused by rules.objective
    if trainer is not None:
        draft.sequences_per_example, draft.reference_forwards = trainer.sequences_per_example, \
            trainer.reference_forwards
        draft.loss_type = o.loss_type or trainer.default_loss
        if o.loss_type is None and trainer.default_loss:
            draft.decisions.append(f"objective.loss_type={trainer.default_loss} (null: {trainer.trl}'s default)")
        # KTO's 2 examples a row are those of a preference pair; labelled rows (data.format=kto) are one each
        draft.examples_per_row = o.num_generations if trainer.generates else \
            trainer.examples_per_row if _format(cfg).paired else 1
        if trainer.generates:
            draft.reference_forwards = 1  # beta > 0 (the schema's range): the reference's log-probabilities
    if _format(cfg).prompt_apart:  # the prompt is kept apart and truncated from its start
        draft.max_prompt_length = o.max_prompt_length or draft.max_length // 2
        if o.max_prompt_length is None:
            draft.decisions.append(f"objective.max_prompt_length={draft.max_prompt_length} (null: half of "
                                   f"data.max_length)")


def _baselines(cfg: Config, draft: Draft) -> None:
    """eval.baselines as the evaluation will run them. The prompted base needs a prompt to put examples before and
    answers to score (prompt/completion evaluation: SFT on a format with a prompt); elsewhere it is left out, saying
    why. Unknown names are refused by rules.baselines."""
    wanted = tuple(dict.fromkeys(b for b in cfg.eval.baselines if b in BASELINES))
    trainer = TRAINERS.get(cfg.objective.trainer)
    why_not = (f"{cfg.objective.name}'s evaluation scores {trainer.evaluation}, not answers to prompts"
               if trainer is not None and trainer.evaluation != "generation" else
               f"data.format={cfg.data.format} rows are not a prompt and its answer to show as examples"
               if cfg.data.format in FORMATS and not FORMATS[cfg.data.format].shows_examples else None)
    if "prompted" in wanted and why_not:
        wanted = tuple(b for b in wanted if b != "prompted")
        if cfg.eval.enabled:
            draft.decisions.append(f"eval.baselines: no prompted base ({why_not})")
    elif "prompted" in wanted and cfg.eval.enabled:
        draft.decisions.append(f"eval: the tuned model against {' and '.join(_BASELINE_NAMES[b] for b in wanted)}"
                               f" with {cfg.eval.shots} example{'s' if cfg.eval.shots != 1 else ''} from the "
                               f"training split (eval.shots), on the same test prompts")
    draft.baselines = wanted


_BASELINE_NAMES = {"base": "the base model", "prompted": "the base model prompted"}


def _method(cfg: Config, draft: Draft) -> None:
    m = cfg.method
    draft.peft = m.peft
    draft.method = method_of(m)
    draft.kind = draft.method.name


def _max_length(cfg: Config, draft: Draft) -> None:
    """An unset data.max_length adapts to the model: its context, capped at AUTO_MAX_LENGTH."""
    if cfg.data.max_length is not None:
        draft.max_length = cfg.data.max_length
        return
    context = draft.arch_values.get("max_position_embeddings")
    draft.max_length = min(context or AUTO_MAX_LENGTH, AUTO_MAX_LENGTH)
    draft.decisions.append(f"data.max_length={draft.max_length} (null: the model's context of {context} tokens"
                           f"{f', capped at {AUTO_MAX_LENGTH}' if context and context > AUTO_MAX_LENGTH else ''})"
                           if context else f"data.max_length={draft.max_length} (null; the model's context is unknown)")


def _attention(cfg: Config, facts: Facts, draft: Draft) -> None:
    """The kernel the run will use: flash-attention only as asked (rules check it is installed and has a GPU);
    SDPA becomes eager for architectures without an SDPA path (Gemma-2)."""
    asked = cfg.model.attn_implementation
    draft.attention = asked
    d = facts.description
    if d is not None and d.error is None and d.supports_sdpa is not None:
        no_sdpa = not d.supports_sdpa  # the model class's own word (transformers' _supports_sdpa)
    else:
        no_sdpa = draft.family in facts.families.get("_no_sdpa", ())
    if asked == "sdpa" and no_sdpa:
        draft.attention = "eager"
        draft.decisions.append(f"attn_implementation=eager ({draft.family} has no SDPA path in transformers)")


def _environment(cfg: Config, facts: Facts, draft: Draft) -> None:
    """The optional packages of the machine the run happens on, which decide kernels, loggers and the generator:
    hardware.packages as declared; else this machine's when the run happens here (a CPU profile); else, on a GPU
    profile, none: no plan depends on a package the GPU machine may lack (sdpa, the selective loss and no tracker
    need none). The planner's own packages never decide a GPU plan."""
    declared = cfg.hardware.packages
    if declared is not None:
        draft.packages = {name: name in declared for name in OPTIONAL_PACKAGES}
    elif cfg.hardware.accelerator == "cpu":
        draft.packages = dict(facts.packages)
    else:
        draft.packages = dict.fromkeys(OPTIONAL_PACKAGES, False)
        draft.decisions.append("target packages: none assumed "
                               "(hardware.packages=null on a GPU profile: this machine's packages are not the GPU "
                               "machine's; declare flash_attn, liger_kernel, a tracker or vllm if it has them)")


def _report_to(cfg: Config, facts: Facts, draft: Draft) -> None:
    wanted = [r for r in cfg.train.report_to if r != "none"]
    if "auto" in wanted:
        wanted.remove("auto")
        if draft.packages.get("tensorboard") and "tensorboard" not in wanted:
            wanted.append("tensorboard")
        draft.decisions.append(f"report_to={wanted or ['none']} (auto: TensorBoard "
                               f"{'is' if draft.packages.get('tensorboard') else 'is not'} installed where the run "
                               "happens)")
    draft.report_to = tuple(wanted)


def _precision(cfg: Config, draft: Draft) -> None:
    hw, p = cfg.hardware, cfg.train.precision
    if p == "auto":
        p = "fp32" if hw.accelerator == "cpu" else ("bf16" if hw.bf16 else "fp16")
        draft.decisions.append(f"precision={p} ({'CPU' if hw.accelerator == 'cpu' else hw.name}"
                               f"{'' if hw.accelerator == 'cpu' else (' has' if hw.bf16 else ' lacks') + ' bf16'})")
    draft.precision = p if p in est.BYTES else "fp32"  # an unknown name is reported by rules.precision


def _format(cfg: Config) -> Format:
    """The data format's entry; an unknown name is refused by rules.data_format (an error: the plan's figures are not
    shown), and is sized meanwhile as the default format."""
    return FORMATS.get(cfg.data.format) or FORMATS["alpaca"]


def _ray_train(cfg: Config) -> bool:
    """The launcher's kind runs Ray Train workers (an unknown kind is refused by rules.workers)."""
    kind = LAUNCHER_KINDS.get(cfg.launcher.kind)
    return bool(kind and kind.ray_train)


def _local_processes(cfg: Config) -> bool:
    """The local launcher runs a process per device of its one node (torchrun's way): not for an objective that
    generates (GRPO), whose one training process leaves a node's second GPU to vLLM."""
    trainer = TRAINERS.get(cfg.objective.trainer)
    return not _ray_train(cfg) and cfg.hardware.nodes == 1 and not (trainer is not None and trainer.generates)


def _world(cfg: Config, draft: Draft) -> None:
    # Ray Train runs a worker per device unless told otherwise; so does the local launcher on its one node.
    draft.world = (cfg.launcher.num_workers or cfg.hardware.gpus_per_node * cfg.hardware.nodes) \
        if _ray_train(cfg) or _local_processes(cfg) else 1
    strategy, stage = cfg.train.strategy, cfg.train.zero_stage
    if strategy in ("fsdp", "ddp"):
        stage = 0
    elif stage is None:
        stage = 3 if draft.world > 1 and cfg.method.quant_bits is None else 0
        if draft.world > 1 and stage == 3:
            draft.decisions.append(f"strategy=deepspeed, zero_stage=3 ({draft.world} workers; shard weights, "
                                   "gradients and optimizer state)")
    if draft.world <= 1:
        draft.strategy = "none"
    elif strategy == "fsdp":
        draft.strategy = "fsdp"
    else:
        draft.strategy = "deepspeed" if stage > 0 else "ddp"
    draft.zero_stage = stage


def _strategy(cfg: Config, draft: Draft) -> None:
    """QLoRA on several workers with strategy=auto: DDP (each worker holds the whole 4-bit model, no gathers) when
    that fits a device at the band's high end with micro batch 1 and checkpointing, else FSDP, which shards the 4-bit
    weights (bnb_4bit_quant_storage = the compute dtype) and gathers a layer at a time."""
    if draft.world <= 1 or cfg.train.strategy != "auto" or cfg.train.zero_stage is not None or \
            not cfg.method.quant_bits or draft.arch is None:
        return
    whole = _memory_for(cfg, draft, 1, True)
    if safe(whole, cfg.hardware.memory_gb):
        draft.decisions.append(f"strategy=ddp ({draft.world} workers; each holds the whole 4-bit model: "
                               f"{_high_gb(whole):.1f} GB at the band's high end fits "
                               f"{cfg.hardware.memory_gb:g} GB)")
        return
    draft.strategy = "fsdp"
    _loss_under_fsdp(cfg, draft)
    sharded = _memory_for(cfg, draft, 1, True)
    draft.decisions.append(f"strategy=fsdp ({draft.world} workers; the whole 4-bit model on each, "
                           f"{_high_gb(whole):.1f} GB at the band's high end, exceeds {cfg.hardware.memory_gb:g} "
                           f"GB: FSDP shards it, {_high_gb(sharded):.1f} GB)")


def _offload(cfg: Config, draft: Draft) -> None:
    """``train.offload`` as set (rules.offload checks the strategy can), or auto: none unless even the estimate
    exceeds the device at the run's smallest micro batch with checkpointing, then the least that fits: the
    optimizer's state (DeepSpeed's ZeRO-Offload), then the parameters too (FSDP's CPU offload; ZeRO-3's
    offload_param). A run the estimate fits but the band's high end does not (tight) is not offloaded: offload costs
    every step, and published runs in that band ran (Qwen's 7B full fine-tuning at 70-81 GB of 86); the memory rule's
    warning names offload among its fixes."""
    if cfg.train.offload != "auto":
        draft.offload = cfg.train.offload
        return
    if draft.arch is None or draft.world <= 1 or draft.strategy not in ("fsdp", "deepspeed"):
        return
    micro = cfg.train.micro_batch_size or 1
    ckpt = True if cfg.train.gradient_checkpointing is None else cfg.train.gradient_checkpointing
    device_gb = cfg.hardware.memory_gb
    before = _memory_for(cfg, draft, micro, ckpt)
    host_gb = cfg.hardware.host_memory_gb
    if before.total / est.GB <= device_gb or host_gb is None:  # the node's RAM unstated: nothing to check against
        return
    levels = (["optimizer"] if draft.strategy == "deepspeed" else []) + \
        (["params"] if draft.strategy == "fsdp" or draft.zero_stage == 3 else [])
    for level in levels:
        draft.offload = level
        after = _memory_for(cfg, draft, micro, ckpt)
        host_need = draft.host_gb(after, cfg.hardware.gpus_per_node)
        if safe(after, device_gb) and host_need <= est.HOST_SHARE * host_gb:
            draft.decisions.append(
                f"offload={level} (nothing cheaper fits: {_high_gb(before):.1f} GB at the band's high end on "
                f"{device_gb:g} GB; offloaded, {_high_gb(after):.1f} GB on the device and "
                f"{host_need:.1f} GB of CPU memory per node, copied over the host link every step)")
            return
    draft.offload = "none"  # nothing fits even offloaded: the memory rule says so, with its fixes


def _high_gb(mem: est.MemoryEstimate) -> float:
    return band(mem.total / est.GB, mem.floor / est.GB)[1]


def _targets(cfg: Config, facts: Facts, draft: Draft) -> None:
    """What PEFT will wrap: ``all-linear`` = every linear layer but the output head and the MoE routers (and, on
    Mamba-based model types, the modules PEFT refuses there); named targets must each match a module of the model
    (by name or path suffix, as PEFT matches them). The head (``lm_head``) may be named. A mixture of experts'
    fused expert parameters are adapted through ``target_parameters`` (method.target_experts); LoRA dropout is then
    0, which PEFT's parameter wrapper requires."""
    m = cfg.method
    draft.dropout = m.dropout
    if not draft.peft:
        return
    refused = set(draft.routers)
    mamba = facts.families.get("_peft_mamba_refuses", {})
    if draft.family in mamba.get("model_types", ()):
        refused |= set(mamba.get("modules", ()))
    remapped = set(facts.families.get("_peft_moe_remaps", {}).get(moe_pattern(facts.families, draft.family), ())) \
        if draft.expert_parameters else set()
    all_linear = isinstance(m.target_modules, str) and m.target_modules == "all-linear"
    d = facts.description
    described = d is not None and d.error is None
    if described:  # what PEFT itself left out or rewrote on this model, with why
        refused, remapped = set(d.left_out) | set(d.routers), set()
    if all_linear and described:
        draft.targets = tuple(t for t in draft.linear_modules if t not in refused)
        for name, reason in d.left_out.items():
            draft.decisions.append(f"all-linear leaves out {name}: {reason}")
    elif all_linear:
        draft.targets = tuple(t for t in draft.linear_modules if t not in refused | remapped)
        left_out = [t for t in draft.linear_modules if t in refused]
        if left_out:
            draft.decisions.append(f"all-linear leaves out {', '.join(left_out)} (PEFT refuses LoRA on them for "
                                   f"{draft.family})")
        frozen = [t for t in draft.linear_modules if t in remapped]
        if frozen:
            draft.decisions.append(f"all-linear leaves out the linear layers named {', '.join(frozen)} (dense-layer "
                                   f"and shared-expert MLPs): PEFT maps these names to the fused experts on "
                                   f"{draft.family}, so they stay frozen")
    else:
        draft.targets = (m.target_modules,) if isinstance(m.target_modules, str) else tuple(m.target_modules)
    a = facts.adapter
    if a is not None and a.exists:  # the starting adapter keeps its own targets and rank
        draft.targets = a.target_modules
        draft.decisions.append(f"model.adapter: training continues from {a.path} (trained on {a.base_model}; "
                               f"r={a.r}, targets {', '.join(a.target_modules)}: the adapter's own, not method's)")
    why = {**{t: f"PEFT refuses LoRA on it for Mamba-based {draft.family}" for t in refused},
           **(dict(d.left_out) if described else {}),
           **{t: f"PEFT maps this name to the fused experts on {draft.family}: use method.target_experts" for t in
              remapped},
           **{t: "a router is not a linear layer PEFT adapts" for t in draft.routers}}
    draft.refused_targets = {t: why[t] for t in draft.targets if t in why}
    draft.adaptable = tuple(t for t in draft.linear_modules if t not in why)
    if draft.expert_parameters:
        experts = m.target_experts if m.target_experts is not None else all_linear
        if experts and (a is None or not a.exists):
            draft.target_parameters = draft.expert_parameters
            if draft.dropout:
                draft.dropout = 0.0
                draft.decisions.append(f"method.dropout=0 (the experts' fused parameters are adapted, and PEFT's "
                                       f"parameter wrapper takes no dropout; {m.dropout:g} asked)")
        if m.target_experts is None:
            draft.decisions.append(
                f"method.target_experts={str(bool(draft.target_parameters)).lower()} (null: "
                + ("all-linear adapts the experts too: " + ", ".join(draft.target_parameters) if all_linear else
                   "a named list of modules leaves the experts frozen") + ")")
    head = HEAD
    w = facts.weights
    if w is not None:
        def matches(t: str) -> bool:
            return any(p == t or p.endswith("." + t) for p in w.module_paths) or t == head
    else:
        known = set(draft.linear_modules) | {head}

        def matches(t: str) -> bool:
            return not draft.linear_modules or t in known
    draft.unknown_targets = tuple(t for t in draft.targets if not matches(t) and t not in draft.refused_targets)


def _dropout_width(cfg: Config, facts: Facts, draft: Draft) -> int:
    """Elements per token and layer of the dropped-out input copies LoRA keeps for its backward: the input width of
    every targeted decoder module when method.dropout > 0 (PEFT applies no dropout module at 0, and the input itself
    is already saved by the layer)."""
    if not draft.peft or draft.dropout <= 0 or draft.arch is None:
        return 0
    a, w, head = draft.arch, facts.weights, HEAD
    width = 0
    for t in draft.targets:
        if t == head:
            continue
        if w is not None and t in w.linear:
            x = w.linear[t]
            width += (x.in_plus_out - x.out) // max(a.layers, 1)
        else:
            width += a.module_shapes().get(t, (a.hidden, 0))[0]
    return width


# config.json keys by which an architecture transforms its logits before the loss (Gemma-2 soft-capping, Cohere and
# Granite scaling): the selective loss applies the bare head, so these models keep their own loss.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _loss(cfg: Config, facts: Facts, draft: Draft) -> None:
    t, d = cfg.train, cfg.data
    source = facts.model_config or {}
    text = source.get("text_config", source)
    draft.logit_transform = next((k for k in LOGIT_TRANSFORMS if text.get(k) not in (None, 1, 1.0)), None)
    train = facts.data.get("train")
    share = train.completion_share if train and train.completion_share else 0.5  # unreadable: a guess
    draft.loss_share = round(share, 3) if d.completion_only_loss and _format(cfg).has_prompt else 1.0
    trainer = TRAINERS.get(cfg.objective.trainer)
    if trainer is not None and not trainer.selective_loss:
        draft.loss = "trl"
        draft.decisions.append(f"loss=trl ({cfg.objective.name}: {trainer.loss_doc})")
        return
    if t.token_metrics:
        draft.loss = "trl"
        draft.decisions.append("loss=trl (train.token_metrics: TRL's loss with its entropy/accuracy pass over the "
                               "full logits)")
        return
    if t.loss != "auto":
        draft.loss = t.loss  # rules refuse what cannot run
        return
    head_trains = not draft.peft or "lm_head" in draft.targets
    if draft.arch is not None and draft.arch.experts:
        draft.loss = "model"
        draft.decisions.append("loss=model (mixture of experts: the model adds its router load-balancing loss, "
                               "output_router_logits, to the cross-entropy; the selective loss would drop it)")
    elif draft.logit_transform:
        draft.loss = "model"
        draft.decisions.append(f"loss=model ({draft.family} applies {draft.logit_transform} to its logits; the "
                               "selective loss would not)")
    elif cfg.hardware.accelerator == "cuda" and draft.packages.get("liger_kernel") and not head_trains \
            and draft.zero_stage != 3:
        draft.loss = "liger"
        draft.decisions.append("loss=liger (fused linear cross-entropy kernel: no full logits)")
    else:
        draft.loss = "selective"
        draft.decisions.append(f"loss=selective (output head + cross-entropy only at the ~{draft.loss_share:.0%} of "
                               f"positions the loss counts, {t.loss_chunk_tokens} at a time: no full logits)")
    _loss_under_fsdp(cfg, draft)
    if draft.loss == "selective" and draft.zero_stage == 3:
        # ZeRO-3 re-partitions the head's weight after its forward; a chunk recomputed inside the backward would see
        # the empty shard. Keep the counted positions' logits instead (still never the whole batch's).
        draft.loss_recompute = False
        draft.decisions.append("loss chunks kept for the backward, not recomputed (ZeRO-3 shards the output head)")


def _loss_under_fsdp(cfg: Config, draft: Draft) -> None:
    """FSDP2 gathers the root module's parameters in the root's forward: the selective and fused losses, which run the
    decoder and the output head apart, would reach a shard. With FSDP the model computes its own loss."""
    if draft.strategy == "fsdp" and cfg.train.loss == "auto" and draft.loss in ("selective", "liger"):
        draft.loss = "model"
        draft.decisions.append("loss=model (FSDP gathers the model's weights in its own forward: the selective loss "
                               "runs the decoder and the output head apart)")


def _packing(cfg: Config, draft: Draft) -> None:
    """Padding-free packing flattens a batch into one row with position_ids marking the examples. Flash-attention's
    varlen kernel then attends within each example; SDPA/eager build a block mask over the whole row, which is
    quadratic in the batch's total tokens (measured 47% slower than padding on the tiny model, docs/BENCHMARKS.md)."""
    varlen = cfg.hardware.accelerator == "cuda" and draft.attention.startswith("flash")
    trainer = TRAINERS.get(cfg.objective.trainer)
    if trainer is not None and not trainer.packs:
        draft.packing = False  # TRL's preference trainers pad pairs (DPO's padding-free mode is off since its refactor)
        return
    if cfg.data.packing is None:
        draft.packing = varlen
        draft.decisions.append("packing=on (flash-attention varlen: no padding computed)" if varlen else
                               f"packing=off ({draft.attention} attention has no varlen kernel: batches are padded "
                               "to their longest example)")
    else:
        draft.packing = cfg.data.packing


def _generation(cfg: Config, facts: Facts, draft: Draft) -> None:
    """GRPO's generation, priced: each optimizer step samples the global batch's completions (num_generations per
    prompt), generated at once on each worker (TRL's generation_batch_size = the global batch) for
    max_completion_length decode steps (``est.decode_step_s``, the model evaluation and serving share); the prompts'
    prefill is a forward pass. Memory: the batch's KV cache over prompt + completion and the sampling logits, held
    while generating (not at the same time as the backward's activations). vLLM colocated on the training GPU when
    the run is on CUDA and vLLM is installed, else transformers' generate."""
    trainer = TRAINERS.get(cfg.objective.trainer)
    if trainer is None or not trainer.generates or draft.arch is None:
        return
    o, hw, a = cfg.objective, cfg.hardware, draft.arch
    # The local launcher trains in one process: on a node of two GPUs the second is vLLM's own.
    spare = not _ray_train(cfg) and hw.gpus_per_node * hw.nodes == 2
    if o.generation == "auto":
        vllm = hw.accelerator == "cuda" and draft.packages.get("vllm", False)
        draft.generation = ("vllm_server" if spare else "vllm") if vllm else "transformers"
        draft.decisions.append(
            "generation=vllm_server (vLLM on GPU 1, the node's second: the local launcher trains on GPU 0, so no "
            "memory is shared with training; trl vllm-serve on 127.0.0.1, the adapter's merged weights synced each "
            "step)"
            if draft.generation == "vllm_server" else
            "generation=vllm (colocated on the training GPU: vLLM is installed, the run is on CUDA and the node has no "
            "spare GPU; its weights and KV cache are counted beside training's)" if vllm else
            f"generation=transformers (generate(); vLLM needs CUDA"
            f"{' and is not installed' if not draft.packages.get('vllm') else ''})")
    else:
        draft.generation = o.generation
    dtype = weight_dtype(cfg, draft)
    batch = max(cfg.train.global_batch_size // max(draft.world, 1), 1)
    prompt = max(int(draft.tokens_per_example * (1 - draft.loss_share)), 1) if draft.loss_share < 1 \
        else draft.tokens_per_example
    seq = prompt + o.max_completion_length
    kv = batch * seq * a.attn_layers * 2 * a.kv_dim * est.BYTES[dtype]
    state = batch * a.ssm_layers * a.ssm_inner * max(a.ssm_state, 1) * est.BYTES[dtype]
    draft.generation_bytes = kv + state + batch * a.vocab * 4
    weights = est.weight_bytes(a, draft.method.memory_terms, dtype, cfg.method.double_quant)
    per_token = est.decode_flops_per_token(a)
    step = est.decode_step_s(weights, batch, per_token, peak_tflops=hw.peak_tflops,
                             bandwidth_gbs=hw.memory_bandwidth_gbs, decode_gbs=hw.decode_gbs)
    prefill = batch * prompt * per_token / (hw.peak_tflops * 1e12 * hw.mfu)
    draft.generation_s = o.max_completion_length * step + prefill
    if draft.generation in ("vllm", "vllm_server"):
        # vLLM holds its own 16-bit copy of the weights (TRL syncs the merged adapter into it each step) and
        # pre-allocates the KV cache; with a server the copy is sent over the interconnect every step.
        copy = est.weight_bytes(a, "lora", "bf16", False)
        draft.vllm_bytes = copy + draft.generation_bytes + est.VLLM_OVERHEAD_GB * est.GB
        draft.vllm_share = est.VLLM_SERVER_SHARE if draft.generation == "vllm_server" else \
            min(max(math.ceil(draft.vllm_bytes / (hw.memory_gb * est.GB) * 20) / 20, 0.1), 0.95)
        draft.generation_bytes = 0.0  # generated by vLLM, not by the training process's generate()
        if draft.generation == "vllm_server":
            draft.generation_s += copy / (est.WEIGHT_SYNC_GBS * 1e9)
    draft.decisions.append(
        f"GRPO: {cfg.train.global_batch_size} completions a step ({cfg.train.global_batch_size // o.num_generations} "
        f"prompts x {o.num_generations}), {o.max_completion_length} decode steps each, in batches of {batch}: "
        + (f"~{draft.generation_s:.2f} s a step; vLLM holds {draft.vllm_bytes / est.GB:.2f} GB (16-bit weights, KV "
           f"cache, runtime) at vllm_gpu_memory_utilization={draft.vllm_share:g} of the "
           f"{'training' if draft.generation == 'vllm' else 'generation'} GPU" if draft.vllm_bytes else
           f"~{draft.generation_s:.2f} s and {draft.generation_bytes / est.GB:.2f} GB (KV cache + logits) per step"))


UNCHECKED_DATA = DataQuality(checked=False, compared_on="", near_groups=0, near_shown=(), leaked=0, leaked_shown=(),
                             moved=0, moved_shown=(), pii={}, pii_shown=(), languages={},
                             languages_sampled=0)
"""The quality of data ftc cannot read before launch (a remote URI): nothing is known."""


def split_counts(cfg: Config, facts: Facts) -> tuple[dict[str, int], dict[str, int]]:
    """Examples per split and rows dropped by reason: the data selection's (facts.selection, the function
    ``ftc train`` runs). Without it (a remote URI, or a file refused for its rows) the counts come from the rows read,
    or data.num_rows, split by the held-out fractions, and nothing is known dropped but empty rows."""
    d = cfg.data
    if facts.selection is not None:
        return dict(facts.selection.examples), dict(facts.selection.dropped)
    files = {role: facts.data.get(role) for role in ("train", "validation", "test")}
    read = {role: f for role, f in files.items() if f is not None and f.rows is not None}
    dropped = {"empty": sum(f.empty_rows for f in read.values())}
    kept = {role: f.rows - f.empty_rows for role, f in read.items()}
    n = kept.get("train", d.num_rows or 0)
    counts = {"train": n}
    for role, fraction in (("test", d.test_fraction), ("validation", d.validation_fraction)):
        path = d.test_path if role == "test" else d.validation_path
        if path:
            counts[role] = kept.get(role, 0)
        else:
            counts[role] = held_out_size(n, fraction, d.max_held_out)  # both of the same set, as the pipeline splits
            counts["train"] -= counts[role]
    counts["train"] = max(counts["train"], 0)
    if d.max_samples:
        counts["train"] = min(counts["train"], d.max_samples)
    return counts, dropped


def _prompt_style(cfg: Config, facts: Facts, draft: Draft) -> None:
    """The prompt style training formats with and the tuned model is asked in (``formats.FORMATS``); for preference
    pairs, read from the selected rows (string prompts: alpaca, message lists: chat)."""
    fmt = FORMATS.get(cfg.data.format)
    seen = facts.selection.prompt_styles if facts.selection is not None else ()
    draft.prompt_styles_seen = seen
    if fmt is None:
        return
    if fmt.prompt != BY_ROW:
        draft.prompt_style = fmt.prompt
    elif seen:
        draft.prompt_style = seen[0]
    else:  # rows not readable before launch: the runtime checks each row against this decision
        draft.prompt_style = "alpaca"
        draft.decisions.append("prompt style: alpaca, assumed (the pairs' rows were not read before launch; "
                               "training refuses message-list prompts under it)")
    draft.system_prompt = facts.selection.system_prompt if facts.selection is not None else None


def _data(cfg: Config, facts: Facts, draft: Draft) -> None:
    _prompt_style(cfg, facts, draft)
    d = cfg.data
    train = facts.data.get("train")
    draft.split_examples, draft.dropped_rows = split_counts(cfg, facts)
    lengths = facts.selection.lengths if facts.selection is not None else {}
    if lengths.get("train"):  # every selected example tokenized as training will: exact counts
        counted = {role: split_tokens(rows, d.format, draft.max_length, draft.max_prompt_length)
                   for role, rows in lengths.items() if rows}
        draft.split_examples = {role: counted[role][0] if role in counted else n
                                for role, n in draft.split_examples.items()}
        draft.split_tokens = {role: c[1] for role, c in counted.items()}
        draft.truncated = sum(c[2] for c in counted.values())
        sequences = [p + c for p, c, *_ in lengths["train"]]  # one sequence (a pair's chosen one) per example
        tokens, longest = int(round(sum(sequences) / len(sequences))), max(sequences)
        dropped = sum(len(rows) for rows in lengths.values()) - sum(draft.split_examples[r] for r in counted)
        # named as the run's data report names it: a row whose completion max_length cuts away entirely
        draft.dropped_rows = {**draft.dropped_rows, "no_completion_after_truncation": dropped}
        draft.decisions.append(
            f"tokens: {draft.split_tokens['train']} in {draft.split_examples['train']} training examples, {tokens} "
            f"mean, {longest} longest (every selected example tokenized with the model's tokenizer, as training "
            f"will: {facts.tokenizer}); {draft.truncated} cut to max_length={draft.max_length}"
            + (f", {dropped} dropped with no completion left" if dropped else ""))
    elif train and train.tokens_mean:  # counted with the model's tokenizer
        tokens, longest = int(round(train.tokens_mean)), train.tokens_max
        draft.decisions.append(f"tokens per example: {tokens} mean, {longest} longest (counted with the model's "
                               f"tokenizer on {train.tokens_rows} rows)")
    else:
        chars = train.mean_chars if train and train.mean_chars else 600.0  # typical instruction row when unreadable
        overhead = FORMATS[d.format].template_tokens if d.format in FORMATS else 1
        tokens = d.tokens_per_example or int(chars / cfg.model.chars_per_token) + overhead
        longest = int(train.max_chars / cfg.model.chars_per_token) + overhead if train and train.max_chars \
            else draft.max_length
        if d.tokens_per_example:
            draft.decisions.append(f"tokens per example: {tokens} mean, as data.tokens_per_example sets")
    draft.train_examples = draft.split_examples["train"]
    draft.tokens_per_example = max(1, min(tokens, draft.max_length))
    draft.longest_example = max(draft.tokens_per_example, min(longest, draft.max_length))
    if draft.packing:
        total = draft.train_examples * draft.tokens_per_example
        draft.sequences_per_epoch = math.ceil(total / draft.seq_tokens) if total else 0
    else:
        trainer = TRAINERS.get(cfg.objective.trainer)
        draft.sequences_per_epoch = draft.train_examples * draft.examples_per_row
        if trainer is not None and trainer.generates:
            draft.decisions.append(f"{draft.sequences_per_epoch} completions an epoch ({cfg.objective.num_generations} "
                                   f"sampled for each of the {draft.train_examples} prompts; each is a training "
                                   "example of the global batch)")
        elif draft.examples_per_row > 1:
            draft.decisions.append(f"{draft.sequences_per_epoch} training examples an epoch ({cfg.objective.name} "
                                   f"unpairs each of the {draft.train_examples} pairs into a desirable and an "
                                   "undesirable example)")


def _memory_for(cfg: Config, draft: Draft, micro: int, checkpointing: bool, *, seq: Optional[int] = None,
                kind: Optional[str] = None) -> est.MemoryEstimate:
    """Peak memory at a micro batch and checkpointing choice; ``seq`` and ``kind`` try another sequence length or
    method (the rules check that each fix they suggest makes the plan fit)."""
    m = cfg.method
    method = METHODS[kind or draft.kind].memory_terms
    dtype = weight_dtype(cfg, draft)
    # Peak memory is set by the largest batch: packed rows are max_length long; unpacked batches are padded to
    # their longest example (worst case: the file's longest, capped at max_length).
    if seq is None:
        seq = _peak_seq(draft)
    return est.memory(
        draft.arch, method=method, dtype=dtype, optim=cfg.train.optim, double_quant=m.double_quant,
        trainable_params=draft.trainable, micro=micro * draft.sequences_per_example, seq=seq,
        checkpointing=checkpointing, logit_tokens=_logit_tokens(cfg, draft, micro * draft.sequences_per_example * seq),
        dropout_width=draft.dropout_width, world=draft.world, zero_stage=draft.zero_stage, strategy=draft.strategy,
        offload=draft.offload,
        cuda=cfg.hardware.accelerator == "cuda", expert_adapters=bool(draft.target_parameters),
        generation=draft.generation_bytes, eager_attention=draft.attention == "eager",
        colocated=draft.vllm_share * cfg.hardware.memory_gb * est.GB if draft.generation == "vllm" else 0.0,
    )


def _peak_seq(draft: Draft) -> int:
    return draft.max_length if draft.packing else draft.longest_example


def _traced(cfg: Config, trace: Any, draft: Draft) -> tuple[TracedMemory, TracedTime]:
    """A traced step beside the analytic terms at its shape: saved activations (with LoRA's folded expert copies,
    which the trace sees among them) and the decoder's FLOPs per token."""
    micro = max(trace.micro // max(draft.sequences_per_example, 1), 1)
    at = _memory_for(cfg, draft, micro, draft.checkpointing, seq=trace.seq)
    analytic = at.activations + at.expert_adapters
    fpt = est.train_flops_per_token(draft.arch, method=draft.method.flops_terms, context=trace.seq,
                                    checkpointing=draft.checkpointing, head_share=0.0)
    traced_fpt = trace.flops / max(trace.micro * trace.seq, 1)
    return (TracedMemory(micro=trace.micro, seq=trace.seq, activations_gb=round(trace.activations_bytes / est.GB, 4),
                         analytic_gb=round(analytic / est.GB, 4),
                         ratio=round(trace.activations_bytes / analytic, 3) if analytic else 0.0,
                         seconds=trace.seconds),
            TracedTime(flops_per_token=round(traced_fpt), analytic_flops_per_token=round(fpt),
                       ratio=round(traced_fpt / fpt, 3) if fpt else 0.0))


def _logit_tokens(cfg: Config, draft: Draft, tokens: int) -> int:
    """Positions whose fp32 logits (and their gradient) exist at once: all of the micro batch with the model's own
    loss; one chunk (at most the positions the loss counts) with the selective or fused loss."""
    if draft.loss in ("model", "trl"):
        return tokens
    counted = max(1, math.ceil(tokens * draft.loss_share))
    return min(cfg.train.loss_chunk_tokens, counted) if draft.loss_recompute else counted


def _full_weights_decision(cfg: Config, draft: Draft) -> None:
    if draft.method.full and cfg.method.compute_dtype == "auto":
        dtype = weight_dtype(cfg, draft)
        draft.decisions.append(
            f"full fine-tuning weights in {dtype}" + (" (pure bf16: weights, gradients and optimizer states; "
                                                       "method.compute_dtype=fp32 keeps fp32 master weights)"
                                                       if dtype == "bf16" else ""))


def _trainable(cfg: Config, facts: Facts, draft: Draft) -> int:
    """Trainable parameters: every one for full fine-tuning; else r x (in + out) per wrapped module (+ out for
    DoRA), from the header's shapes when on disk, else from the architecture numbers."""
    if not draft.peft:
        return draft.arch.total_params
    m, a, w = cfg.method, draft.arch, facts.weights
    if facts.adapter is not None and facts.adapter.exists and facts.adapter.r:
        import dataclasses

        m = dataclasses.replace(m, r=facts.adapter.r)
    total = 0
    head = HEAD
    for t in draft.targets:
        if t == head:  # the output head: hidden -> vocab
            total += m.r * (a.hidden + a.vocab) + (a.vocab if m.use_dora else 0)
        elif w is not None and t in w.linear:
            x = w.linear[t]
            total += m.r * x.in_plus_out + (x.out if m.use_dora else 0)
        elif w is None and t in a.module_shapes():
            total += est.lora_params(a, (t,), m.r, m.use_dora)
    for p in draft.target_parameters:  # each expert its own A (r x in) and B (out x r)
        if w is not None and p in w.experts:
            x = w.experts[p]
            total += m.r * x.experts * x.in_plus_out
        elif w is None:
            total += est.lora_params(a, (), m.r, False, (p,))
    d = facts.description
    if d is not None and d.error is None and d.trainable_r1 and not m.use_dora and facts.adapter is None \
            and set(draft.targets) == set(d.linear) and set(draft.target_parameters) == set(d.experts):
        # all-linear as PEFT resolved it: PEFT's own count (it may adapt more than the names say, e.g. names it
        # rewrites to the fused experts), r times its count at rank 1
        if m.r * d.trainable_r1 != total:
            draft.decisions.append(f"trainable parameters: PEFT's own count at r={m.r}, {m.r * d.trainable_r1:,} "
                                   f"({m.r * d.trainable_r1 - total:+,} against the modules' shapes: PEFT adapts "
                                   "beyond the names it was given on this model type)")
        total = m.r * d.trainable_r1
    return total


def _count(n: float) -> str:
    return f"{n / 1e9:.1f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _expert_weights(cfg: Config, draft: Draft) -> str:
    """What the fused experts are held in: bitsandbytes' 4-bit quantization replaces nn.Linear layers only
    (transformers' replace_with_bnb_linear), and transformers 5 loads experts as 3-D parameters, so under QLoRA they
    stay in the compute dtype (measured: a 4-bit Mixtral load keeps experts.gate_up_proj in bf16)."""
    dtype = weight_dtype(cfg, draft)
    a = draft.arch
    if draft.method.quantized and a is not None and a.experts:
        share = a.expert_params / max(a.total_params, 1)
        draft.decisions.append(f"QLoRA on a mixture of experts: 4-bit applies to the linear layers only; the fused "
                               f"experts ({_count(a.expert_params)} parameters, {share:.0%} of the model) stay "
                               f"in {dtype}, and the memory estimate counts them so")
    return dtype


def _batch(cfg: Config, draft: Draft) -> None:
    """Largest micro batch (power of two dividing global/world) that fits; checkpointing only if needed."""
    t, device_gb = cfg.train, cfg.hardware.memory_gb
    per_worker = max(t.global_batch_size // draft.world, 1)
    ckpt_options = [t.gradient_checkpointing] if t.gradient_checkpointing is not None else [False, True]
    if t.micro_batch_size is not None:
        draft.micro = t.micro_batch_size
        if t.gradient_checkpointing is not None:
            draft.checkpointing = t.gradient_checkpointing
        else:
            draft.checkpointing = draft.arch is not None and \
                not safe(_memory_for(cfg, draft, draft.micro, False), device_gb)
    else:
        candidates = [2 ** k for k in range(int(math.log2(per_worker)), -1, -1) if per_worker % (2 ** k) == 0]
        chosen = None
        for ckpt in ckpt_options:
            for micro in candidates:
                if draft.arch is None or safe(_memory_for(cfg, draft, micro, ckpt), device_gb):
                    chosen = (micro, ckpt)
                    break
            if chosen:
                break
        draft.micro, draft.checkpointing = chosen or (1, ckpt_options[-1])
        draft.decisions.append(f"micro_batch_size={draft.micro} (largest that fits even at the band's high end,"
                               f"{' with' if draft.checkpointing else ' without'} gradient checkpointing)")
    if t.gradient_checkpointing is None and draft.checkpointing:
        draft.decisions.append("gradient_checkpointing=on (needed to fit memory; costs ~1 extra forward)")
    draft.grad_accum = max(t.global_batch_size // max(draft.micro * draft.world, 1), 1)


def _schedule(cfg: Config, draft: Draft) -> None:
    t = cfg.train
    per_epoch = draft.sequences_per_epoch
    if t.max_steps:
        draft.steps = t.max_steps
        draft.epochs = draft.steps * t.global_batch_size / per_epoch if per_epoch else 0.0
    elif t.epochs:
        draft.steps = max(1, math.ceil(t.epochs * per_epoch / max(t.global_batch_size, 1))) if per_epoch else 0
        draft.epochs = float(t.epochs)


def _deepspeed(cfg: Config, draft: Draft) -> Optional[dict[str, Any]]:
    if draft.zero_stage == 0:
        return None
    zero: dict[str, Any] = {"stage": draft.zero_stage, "overlap_comm": True, "contiguous_gradients": True}
    if draft.zero_stage == 3:
        # Gather the sharded 16-bit weights on save so the adapter/model files are complete, not empty shards.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if draft.offload in ("optimizer", "params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if draft.offload == "params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": cfg.train.global_batch_size,
        "train_micro_batch_size_per_gpu": draft.micro,
        "gradient_accumulation_steps": draft.grad_accum,
        "gradient_clipping": cfg.train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": draft.precision == "bf16"},
        "fp16": {"enabled": draft.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
    }


def _fsdp(draft: Draft) -> Optional[dict[str, Any]]:
    """TrainingArguments' FSDP settings: FSDP2 (per-parameter sharding: 4-bit weights stored in the compute dtype
    shard as they are), each of the model's no-split modules (its decoder layers) a unit, resharded after the
    forward, offloaded to the CPU with offload=params; checkpoints as sharded state (torch.distributed.checkpoint),
    the final weights gathered by ftc."""
    if draft.strategy != "fsdp":
        return None
    return {"fsdp": True,
            "fsdp_config": {"version": 2, "reshard_after_forward": True, "cpu_offload": draft.offload == "params",
                            "state_dict_type": "SHARDED_STATE_DICT", "cpu_ram_efficient_loading": False}}


def spec_from(spec: type, section: Any, **decided: Any) -> Any:
    """A Plan spec from its config section: each field is the compiler's decision when named in ``decided``, else
    the section's field of the same name, copied. A spec field that is neither is a bug (a decision forgotten, a
    field renamed): it raises here, on every compile, so no field is ever dropped or defaulted silently."""
    values = {}
    for f in dataclasses.fields(spec):
        if f.name in decided:
            values[f.name] = decided.pop(f.name)
        elif hasattr(section, f.name):
            values[f.name] = getattr(section, f.name)
        else:
            raise TypeError(f"{spec.__name__}.{f.name} is neither decided by the compiler nor a field of "
                            f"{type(section).__name__}")
    if decided:
        raise TypeError(f"{spec.__name__} has no field {sorted(decided)}")
    return spec(**values)


def compile(cfg: Config, facts: Facts, hardware_choice: Optional[tuple[str, tuple[dict[str, Any], ...]]] = None
            ) -> Plan:  # noqa: A001 - the domain word
    """Compiles a typed experiment into a Plan; problems land in ``plan.errors`` / ``plan.warnings``.
    ``hardware_choice``: how ``hardware=auto`` chose this profile (its decision line and the ranked table of every
    profile, ``ftc.advisor``), recorded first among the decisions and as ``hardware_table``."""
    value_problems, cfg = rules.value_problems(cfg)  # out-of-range values: refused, and compiled as their defaults
    draft = Draft()
    if value_problems:
        draft.decisions.append("values outside what their field accepts are refused; the rest of this plan is "
                               f"compiled with their defaults: {', '.join(p.key for p in value_problems)}")
    _method(cfg, draft)
    _arch(cfg, facts, draft)
    _max_length(cfg, draft)
    _objective(cfg, draft)
    _baselines(cfg, draft)
    _environment(cfg, facts, draft)
    _attention(cfg, facts, draft)
    _report_to(cfg, facts, draft)
    _precision(cfg, draft)
    _full_weights_decision(cfg, draft)
    _world(cfg, draft)
    _targets(cfg, facts, draft)
    _packing(cfg, draft)
    _data(cfg, facts, draft)
    _loss(cfg, facts, draft)
    _generation(cfg, facts, draft)
    if draft.arch is not None:
        draft.trainable = _trainable(cfg, facts, draft)
        draft.dropout_width = _dropout_width(cfg, facts, draft)
        draft.memory_at = functools.partial(_memory_for, cfg, draft)
        _strategy(cfg, draft)
        _offload(cfg, draft)
        _batch(cfg, draft)
    _schedule(cfg, draft)

    t, hw, m, d = cfg.train, cfg.hardware, cfg.method, cfg.data
    tokens_per_step = int(t.global_batch_size * draft.seq_tokens * draft.sequences_per_example)
    tokens = draft.steps * tokens_per_step
    devices = hw.gpus_per_node * hw.nodes

    if draft.arch is not None:
        mem = _memory_for(cfg, draft, draft.micro, draft.checkpointing)
        fpt, tps, train_h, eval_h, hours = time_and_cost(cfg, facts, draft)
        params, trainable = draft.arch.total_params, draft.trainable
    else:
        mem = est.MemoryEstimate(0, 0, 0, 0, 0, 0)
        draft.offload_s = 0.0
        fpt = tps = train_h = eval_h = hours = 0.0
        params = trainable = 0
    draft.memory, draft.hours = mem, hours
    draft.step_s = train_h * 3600 / draft.steps if draft.steps else 0.0
    billed = max(draft.world, 1)  # a device a worker, on either launcher
    draft.device_hours = hours * billed
    price = hw.spot_usd_per_hour if hw.spot and hw.spot_usd_per_hour is not None else hw.usd_per_hour
    draft.usd = draft.device_hours * price
    save_steps = spot_checkpoints(cfg, draft, train_h, billed, price) if hw.spot else None

    if facts.trace is not None and draft.arch is not None:
        draft.traced = _traced(cfg, facts.trace, draft)
    problems = value_problems + rules.check(cfg, facts, draft)
    quant = None
    if m.quant_bits:
        compute = weight_dtype(cfg, draft)
        quant = QuantSpec(bits=m.quant_bits, quant_type=m.quant_type, double_quant=m.double_quant,
                          compute_dtype=compute,
                          storage_dtype=compute if draft.zero_stage == 3 or draft.strategy == "fsdp" else "uint8")
    av = draft.arch_values
    every = eval_steps(cfg, draft)
    moe = _moe_spec(cfg, draft)
    per_device = mem.total / est.GB
    low, high = band(per_device, mem.floor / est.GB)
    said = verdict(per_device, hw.memory_gb, mem.floor / est.GB)
    part = _part(cfg, facts, draft, train_h, price * billed)  # adds its decision line
    return Plan(
        name=cfg.name,
        # Each spec copies its config section's fields of the same name; the compiler's decisions are named here.
        model=spec_from(
            ModelSpec, cfg.model, family=draft.family, attn_implementation=draft.attention,
            **{k: av[k] or 0 for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                                       "intermediate_size", "vocab_size", "max_position_embeddings")},
            tie_word_embeddings=bool(av["tie_word_embeddings"]), params=params, linear_modules=draft.linear_modules,
            adapter=facts.adapter.path if facts.adapter is not None else None, moe=moe,
            stored_quantization=draft.stored_quantization, ssm_layers=draft.arch.ssm_layers if draft.arch else 0,
            attention_layers=draft.arch.attn_layers if draft.arch else 0,
        ),
        objective=spec_from(ObjectiveSpec, cfg.objective, sequences_per_example=draft.sequences_per_example,
                            reference_forwards=draft.reference_forwards, loss_type=draft.loss_type,
                            rewards=tuple(dict(r) for r in cfg.objective.rewards), generation=draft.generation,
                            generation_gb=round((draft.generation_bytes or draft.vllm_bytes) / est.GB, 3),
                            vllm_gpu_memory_utilization=draft.vllm_share,
                            generation_hours=round(draft.steps * draft.generation_s / 3600, 4)),
        method=spec_from(
            MethodSpec, m, peft=draft.peft, dropout=draft.dropout, target_modules=draft.targets,
            target_parameters=draft.target_parameters, trainable_params=trainable,
            trainable_percent=round(100 * trainable / params, 4) if params else 0.0,
            weight_dtype=weight_dtype(cfg, draft), quantization=quant,
        ),
        data=spec_from(
            DataSpec, d, fields=dict(d.fields), max_length=draft.max_length, max_prompt_length=draft.max_prompt_length,
            prompt_style=draft.prompt_style, system_prompt=draft.system_prompt,
            packing=draft.packing, train_examples=draft.train_examples, examples=dict(draft.split_examples),
            dropped=dict(draft.dropped_rows), tokens_per_example=draft.tokens_per_example, loss_share=draft.loss_share,
            tokens=dict(draft.split_tokens), truncated=draft.truncated,
            languages=tuple(d.languages or ()),
            quality=facts.selection.quality if facts.selection else UNCHECKED_DATA,
            part=part,
        ),
        precision=draft.precision,
        world_size=draft.world,
        hardware=spec_from(HardwareSpec, hw, devices=devices, device_gb=hw.memory_gb,
                           packages=tuple(sorted(n for n, present in draft.packages.items() if present))),
        batch=BatchSpec(
            micro=draft.micro, grad_accum=draft.grad_accum, world=draft.world, global_=t.global_batch_size,
            derivation=f"{t.global_batch_size} = {draft.micro} micro x {draft.grad_accum} accum x "
                       f"{draft.world} worker{'s' if draft.world > 1 else ''}",
        ),
        schedule=ScheduleSpec(
            steps=draft.steps, epochs=round(draft.epochs, 3), tokens=int(tokens), tokens_per_step=tokens_per_step,
            sequences_per_epoch=draft.sequences_per_epoch,
            warmup_steps=math.ceil(draft.steps * t.warmup_ratio), eval_steps=every,
            save_steps=t.save_steps or save_steps or every,
        ),
        train=spec_from(
            TrainSpec, t, gradient_checkpointing=draft.checkpointing, zero_stage=draft.zero_stage,
            strategy=draft.strategy, offload=draft.offload, loss=draft.loss,
            loss_recompute=draft.loss_recompute, report_to=draft.report_to, trainer_kwargs=dict(t.trainer_kwargs),
        ),
        eval=spec_from(EvalSpec, cfg.eval, baselines=draft.baselines),
        memory=MemorySpec(per_device_gb=round(per_device, 2), live_gb=round(mem.live / est.GB, 2),
                          reserved_gb=round(mem.reserved / est.GB, 2), device_gb=hw.memory_gb,
                          fits=said != "does_not_fit", verdict=said, low_gb=round(low, 2), high_gb=round(high, 2),
                          headroom_gb=round(hw.memory_gb - per_device, 2),
                          host_gb=round(draft.host_gb(mem, hw.gpus_per_node), 2), breakdown=mem.breakdown_gb(),
                          seq=_peak_seq(draft), traced=draft.traced[0] if draft.traced else None),
        time=TimeSpec(hours=round(hours, 4), tokens_per_s=round(tps, 1), train_flops_per_token=fpt,
                      train_hours=round(train_h, 4), eval_hours=round(eval_h, 4),
                      traced=draft.traced[1] if draft.traced else None,
                      offload_s=round(draft.offload_s, 3), baseline_hours=round(draft.baseline_hours, 4)),
        cost=CostSpec(usd=round(draft.usd, 2), usd_per_hour=round(price * billed, 3),
                      device_hours=round(draft.device_hours, 3),
                      on_demand_usd=round(draft.device_hours * hw.usd_per_hour, 2),
                      spot_usd=round(draft.device_hours * hw.spot_usd_per_hour, 2)
                      if hw.spot_usd_per_hour is not None else None),
        serving=serving_estimate(cfg, draft),
        launcher=_launcher(cfg, draft),
        deepspeed=_deepspeed(cfg, draft),
        fsdp=_fsdp(draft),
        budget=spec_from(BudgetSpec, cfg.budget),
        output_dir=cfg.output_dir,
        findings=tuple(problems),  # Plan.errors / Plan.warnings select by severity
        decisions=((hardware_choice[0],) if hardware_choice else ()) + tuple(draft.decisions),
        hardware_table=hardware_choice[1] if hardware_choice else (),
    )


def _part(cfg: Config, facts: Facts, draft: Draft, train_h: float, usd_per_hour: float) -> Optional[PartSpec]:
    """data.max_rows: the rows read of the hub split and an epoch over the whole of it, scaled from this plan: the
    rows kept as examples in the same share, the held-out splits as this plan takes them, the training hours in
    proportion to the training examples."""
    train = facts.data.get("train")
    part = train.part if train is not None else None
    if part is None:
        return None
    whole = hours = usd = None
    if part.total and part.rows and draft.train_examples:
        own_file = {role for role in draft.split_examples if getattr(cfg.data, f"{role}_path", None)}
        held = sum(n for role, n in draft.split_examples.items() if role != "train" and role not in own_file)
        kept = sum(n for role, n in draft.split_examples.items() if role not in own_file)  # from the part's rows
        whole = max(round(part.total * kept / part.rows) - held, draft.train_examples)
        if draft.epochs:
            hours = train_h / draft.epochs * whole / draft.train_examples
            usd = round(hours * usd_per_hour, 2)
            hours = round(hours, 4)
    draft.decisions.append(
        f"data: the first {part.rows:,} rows of the split (data.max_rows={cfg.data.max_rows}), from {part.shards_read} "
        f"of its {part.shards} file{'s' if part.shards > 1 else ''}; the whole split holds "
        + (f"{'~' if part.total_from == 'the shard count' else ''}{part.total:,} rows ({part.total_from})"
           if part.total else "an unknown number of rows")
        + (f": an epoch over all of it, scaled from these rows (as if the rest were like them), would be ~{whole:,} "
           f"training examples, ~{hours:.3g} h and ~${usd:,.2f} of training at this plan's rate"
           if hours is not None else ""))
    return PartSpec(rows=part.rows, total=part.total, total_from=part.total_from, shards_read=part.shards_read,
                    shards=part.shards, whole_train_examples=whole, whole_epoch_hours=hours, whole_epoch_usd=usd)


def _moe_spec(cfg: Config, draft: Draft) -> Optional[MoeSpec]:
    a = draft.arch
    if a is None or not a.experts:
        return None
    return MoeSpec(experts=a.experts, experts_per_token=a.top_k, expert_intermediate_size=a.expert_intermediate,
                   moe_layers=a.moe_layers, shared_expert_intermediate_size=a.shared_intermediate,
                   expert_params=int(a.expert_params), active_params=int(a.active_params),
                   expert_parameters=draft.expert_parameters, routers=draft.routers,
                   expert_weights=_expert_weights(cfg, draft))


def _launcher(cfg: Config, draft: Draft) -> LauncherSpec:
    hw, la = cfg.hardware, cfg.launcher
    gpu = hw.accelerator == "cuda"
    resources = {"CPU": float(hw.cpus_per_worker)}
    if gpu:
        resources["GPU"] = 1.0
    return LauncherSpec(
        kind=la.kind, num_workers=draft.world, use_gpu=gpu, resources_per_worker=resources, address=la.address,
        max_failures=la.max_failures, storage_path=la.storage_path, dashboard_host=la.dashboard_host,
        include_dashboard=la.include_dashboard, resource_wait_s=la.resource_wait_s,
    )
