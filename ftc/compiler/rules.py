"""Rules: every check that can refuse or warn before anything expensive happens.

Each rule reads the typed config, the facts and the compiler's draft, and yields ``Finding``s naming the override
key and a fix. ``check`` runs them all, so a user sees every problem at once. docs/RULES.md lists them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator, Optional

from ftc import secrets
from ftc.compiler import estimate as est
from ftc.compiler.draft import Draft, band, safe, uncertain_room, verdict
from ftc.compiler.estimate import OPTIMIZER_MOMENTS
from ftc.compiler.facts import Facts
from ftc.config.launchers import LAUNCHER_KINDS
from ftc.config.objectives import TRAINERS
from ftc.config.schema import BASELINES, Check, Config, field_check
from ftc.data.formats import FORMATS
from ftc.plan import Finding

# SFTConfig / TrainingArguments fields removed or renamed in TRL 1.x / transformers 5, and where ftc sets them.
RENAMED_TRL_FIELDS = {
    "max_seq_length": "data.max_length (TRL renamed max_seq_length to max_length)",
    "tokenizer": "nothing: ftc passes the tokenizer as processing_class",
    "evaluation_strategy": "train.eval_steps (transformers renamed it eval_strategy)",
    "dataset_text_field": "data.format=text with data.fields.text=<column>",
    "packing": "data.packing",
    "max_length": "data.max_length",
    "per_device_train_batch_size": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.global_batch_size (grad_accum is derived)",
    "deepspeed": "train.zero_stage (the plan generates the DeepSpeed config)",
    "fp16": "train.precision", "bf16": "train.precision",
    "learning_rate": "train.lr",
    "num_train_epochs": "train.epochs",
    "output_dir": "output_dir",
    "use_cpu": "hardware=cpu",
    "no_cuda": "hardware=cpu (no_cuda was removed from transformers)",
}


Rule = Callable[[Config, Facts, Draft], Iterator[Finding]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def error(key: str, message: str, fix: str = "", rule: str = "") -> Finding:
    """A rule's error (``check`` names the rule that yielded it)."""
    return Finding("error", key, message, fix, rule)


def warning(key: str, message: str, fix: str = "", rule: str = "") -> Finding:
    return Finding("warning", key, message, fix, rule)


def check(cfg: Config, facts: Facts, draft: Draft) -> list[Finding]:
    """Every rule's problems; a secret a message would echo (a path holding credentials) is masked."""
    problems: list[Finding] = []
    for r in RULES:
        problems.extend(Finding(p.severity, p.key, secrets.mask(p.message), secrets.mask(p.fix), r.__name__)
                        for p in r(cfg, facts, draft))
    return problems


def budget_problems(max_usd: Optional[float], max_gpu_hours: Optional[float], usd: float, device_hours: float,
                    what: str = "the run", max_hours: Optional[float] = None, hours: float = 0.0) -> list[Finding]:
    """The one budget check, for a run, a sweep (its total) or a search (n_trials x one trial)."""
    found = []
    if max_hours is not None and hours > max_hours:
        found.append(error("budget.max_hours", f"predicted {hours:.2f} h of wall clock for {what}, past the deadline "
                           f"of {max_hours:g} h", "more GPUs (launcher=ray), a faster hardware profile, fewer "
                           "train.epochs, or raise budget.max_hours"))
    if max_usd is not None and usd > max_usd:
        found.append(error("budget.max_usd", f"predicted ${usd:.2f} for {what}, over the budget of ${max_usd:.2f}",
                           "method=qlora, fewer train.epochs or trials, a cheaper hardware "
                           "profile, or raise budget.max_usd"))
    if max_gpu_hours is not None and device_hours > max_gpu_hours:
        found.append(error("budget.max_gpu_hours", f"predicted {device_hours:.2f} device-hours for {what}, over the "
                           f"cap of {max_gpu_hours:g}", "fewer train.epochs, train.max_steps or trials, "
                           "or raise budget.max_gpu_hours"))
    return [dataclasses.replace(f, rule="budget") for f in found]  # a sweep checks its total outside check()


# --- declared ranges and choices ------------------------------------------------------------------------------
DECLARED = "declared_values"  # the rule name of a value outside its field's declared range or choices


def value_problems(cfg: Config) -> tuple[list[Finding], Config]:
    """Every field whose value is outside the range or choices its schema declares (``schema.checked``), and the
    config with those fields set to their fix or default, so that the rest of the compile runs on sane numbers and
    every other problem is still found. The plan keeps the errors: nothing runs."""
    problems: list[Finding] = []
    sections = {}
    for section in dataclasses.fields(cfg):
        node = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(node):
            continue
        sane = {}
        for f in dataclasses.fields(node):
            check = field_check(f)
            value = getattr(node, f.name)
            if check is None and _non_finite(value):  # every float the schema takes, bounded or not
                check = Check()
            if check is None or check.accepts(value):
                continue
            fix = check.fix if check.fix is not None else f.default
            fix_text = "null" if fix is None else fix
            label = f"{check.what} must be" if check.what else "must be"
            finite = " (a finite number)" if _non_finite(value) and check.allowed() != "a finite number" else ""
            problems.append(error(f"{section.name}.{f.name}", f"{label} {check.allowed()}{finite}, got {value!r}",
                                  f"{section.name}.{f.name}={fix_text}", rule=DECLARED))
            if f.default is not dataclasses.MISSING and f.default != "???":
                sane[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                sane[f.name] = f.default_factory()
            elif isinstance(fix, (int, float)):
                sane[f.name] = fix
            else:  # a required number: any value inside its range keeps the arithmetic finite
                sane[f.name] = check.ge if check.ge is not None else (check.gt or 0) + 1
        if sane:
            sections[section.name] = dataclasses.replace(node, **sane)
    return problems, dataclasses.replace(cfg, **sections) if sections else cfg


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


# --- secrets ----------------------------------------------------------------------------------------------------
def _values(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of the config."""
    if dataclasses.is_dataclass(node):
        node = {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _values(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _values(v, f"{key}[{i}]")
    else:
        yield key, node


@rule
def secrets_in_config(cfg, facts, draft):
    """Keys: the key holding it

    any value holding a credential: userinfo in a URI (`s3://KEY:SECRET@bucket`), a signed URL's query token,
    AWS/Hugging Face/GitHub/Google key shapes, or a secret-named field (`hub_token`); the message masks it, and
    plans and configs are masked too (`ftc/secrets.py`)

    A credential in any value would be written to plan.json and config.yaml and shown by ``ftc plan``: refused.
    Storage and hub credentials come from the environment or a credentials file, which every library reads."""
    for key, value in _values(cfg):
        if not isinstance(value, str) or not value:
            continue
        kinds = secrets.find(value)
        if not kinds and secrets.SECRET_KEY.search(key.rsplit(".", 1)[-1]):
            kinds = ["a secret (by its name)"]
        if kinds:
            yield error(key, f"holds {', '.join(kinds)}: secrets are never stored in plans, configs or logs "
                        f"(value {secrets.mask(value) if secrets.find(value) else secrets.MASK})",
                        "remove it and give credentials by the environment (AWS_ACCESS_KEY_ID / "
                        "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, HF_TOKEN, "
                        "WANDB_API_KEY) or the tool's credentials file (~/.aws/credentials)")


# --- method -----------------------------------------------------------------------------------------------------
@rule
def lora_rank(cfg, facts, draft):
    """warns r > 256"""
    if draft.peft and cfg.method.r > 256:
        yield warning("method.r", f"rank {cfg.method.r} is unusually high; gains flatten beyond 64", "method.r=64")


@rule
def target_modules(cfg, facts, draft):
    """empty, or modules not in the architecture (lists its linear modules; e.g. Phi-3's fused `qkv_proj`); a module
    this model cannot have adapted, with why and the adaptable ones: a MoE router (not a linear layer),
    `out_proj`/`conv1d` of Mamba-based models (PEFT refuses them), a name PEFT remaps to the fused experts
    (`gate_proj` on DeepSeek-V3)"""
    if not draft.peft:
        return
    if not draft.targets and facts.weights is None and draft.family not in facts.families:
        yield error("method.target_modules", f"all-linear cannot be resolved: the weights of '{cfg.model.path}' are "
                    f"not on disk and ftc's module table has no '{draft.family}'",
                    "download the model first (its safetensors header names the modules), or "
                    "method.target_modules=[<module names>]")
    elif not draft.targets:
        yield error("method.target_modules", "no modules to adapt", "method.target_modules=all-linear")
    elif draft.refused_targets:
        allowed = list(draft.adaptable)
        why = "; ".join(f"{t}: {reason}" for t, reason in draft.refused_targets.items())
        yield error("method.target_modules", f"{list(draft.refused_targets)} cannot be adapted ({why}); this model's "
                    f"adaptable modules: {allowed}",
                    "method.target_modules=all-linear, or a list of the modules above")
    elif draft.unknown_targets:
        where = "its weights" if facts.weights is not None else f"the {draft.family} module table"
        yield error("method.target_modules",
                    f"{list(draft.unknown_targets)} match no module of this model (by {where}: linear modules "
                    f"{list(draft.linear_modules)}, output head lm_head)",
                    "method.target_modules=all-linear, or a list of the modules above")


@rule
def experts(cfg, facts, draft):
    """DoRA with adapted fused experts (PEFT's parameter wrapper is plain LoRA); warns `target_experts` on a dense
    model, and per-expert weights of a family whose load-time layout ftc does not know (`conf/families.yaml _moe`)"""
    m = cfg.method
    if not draft.peft:
        return
    if draft.target_parameters and m.use_dora:
        yield error("method.use_dora", "DoRA cannot adapt fused expert parameters (PEFT's parameter wrapper "
                    "supports plain LoRA only)", "method=lora, or method.target_experts=false")
    if m.target_experts and not draft.expert_parameters and draft.arch is not None:
        yield warning("method.target_experts", f"{draft.family} has no fused experts to adapt: the setting does "
                      "nothing here", "method.target_experts=null")
    w = facts.weights
    if w is not None and w.unconverted_experts:
        yield warning("model.path", f"{w.unconverted_experts} per-expert linear layers of '{draft.family}' are "
                      "planned as stored; ftc does not know whether transformers fuses them on load, so targets and "
                      "memory may differ from the run", "add the family to conf/families.yaml _moe, or "
                      "method.target_modules=[<attention modules>]")


@rule
def stored_quantization(cfg, facts, draft):
    """QLoRA on a checkpoint stored quantized (gpt-oss's MXFP4: transformers refuses a second quantization config);
    a stored quantization other than MXFP4 (ftc dequantizes only that)"""
    q = draft.stored_quantization
    if not q:
        return
    if cfg.method.quant_bits:
        yield error("method.quant_bits", f"the checkpoint is stored quantized ({q}): bitsandbytes cannot quantize it "
                    "again (transformers refuses a second quantization config at load)",
                    "method=lora" + (" (its MXFP4 weights load dequantized to 16-bit)" if q == "mxfp4" else
                                     ", on the model's 16-bit checkpoint"))
    elif q != "mxfp4":
        yield error("model.path", f"the checkpoint is stored quantized ({q}): ftc trains 16-bit weights and "
                    "dequantizes only MXFP4 checkpoints on load", "model.path=<the model's 16-bit checkpoint>")


@rule
def quantization(cfg, facts, draft):
    """4-bit full fine-tuning"""
    m = cfg.method
    if m.quant_bits and not m.peft:
        yield error("method.quant_bits", "4-bit weights cannot be fully fine-tuned", "method=qlora")


@rule
def qlora_with_zero3(cfg, facts, draft):
    """QLoRA + ZeRO-3 (refused: 4-bit weights shard with FSDP, train.strategy=fsdp)"""
    # Decision: ftc shards 4-bit weights with FSDP2 (per-parameter sharding of bitsandbytes' weights stored in the
    # compute dtype), the path PEFT documents and tests, not with DeepSpeed's zero.Init around a 4-bit load.
    if cfg.method.quant_bits and draft.zero_stage == 3:
        yield error("train.zero_stage", "QLoRA with ZeRO-3 is not supported by ftc (4-bit weights shard with FSDP)",
                    "train.strategy=fsdp (shards the 4-bit weights), train.zero_stage=0 (DDP: each GPU holds the "
                    "4-bit model) or method=lora with ZeRO-3")


@rule
def strategy(cfg, facts, draft):
    """a distributed strategy with one worker; train.zero_stage with a strategy other than DeepSpeed"""
    t = cfg.train
    if t.strategy in ("fsdp", "ddp") and t.zero_stage:
        yield error("train.zero_stage", f"ZeRO stages are DeepSpeed's; train.strategy={t.strategy} has none",
                    "train.zero_stage=null, or train.strategy=deepspeed")
    if draft.strategy == "fsdp" and t.loss in ("selective", "liger"):
        yield error("train.loss", f"loss={t.loss} runs the decoder and the output head apart, and FSDP gathers the "
                    "model's weights in its own forward", "train.loss=auto (the model's own loss under FSDP)")
    if t.strategy in ("fsdp", "ddp", "deepspeed") and draft.world == 1:
        yield warning("train.strategy", f"strategy={t.strategy} with one worker shards nothing: the run is a single "
                      "process", "train.strategy=auto, or multi-GPU hardware (hardware.gpus_per_node > 1)")


@rule
def offload(cfg, facts, draft):
    """offload a strategy cannot do (optimizer-only with FSDP, parameters below ZeRO-3, anything without sharding);
    offloaded state beyond the node's CPU memory, or a node whose memory the profile does not state"""
    where, mem = draft.offload, draft.memory
    if where == "none":
        return
    if draft.world <= 1 or draft.strategy not in ("fsdp", "deepspeed"):
        yield error("train.offload", f"offload={where} needs a sharded strategy over several workers (this run: "
                    f"{draft.strategy}, {draft.world} worker{'s' if draft.world > 1 else ''})",
                    "multi-GPU hardware with train.strategy=fsdp or deepspeed, or train.offload=none")
        return
    if draft.strategy == "fsdp" and where == "optimizer":
        yield error("train.offload", "FSDP offloads the parameters and the optimizer state together, not the "
                    "optimizer's alone", "train.offload=params, or train.strategy=deepspeed")
    if draft.strategy == "deepspeed" and where == "params" and draft.zero_stage != 3:
        yield error("train.offload", "DeepSpeed offloads parameters at ZeRO-3 only (this run: "
                    f"ZeRO-{draft.zero_stage})", "train.zero_stage=3, or train.offload=optimizer")
    if draft.strategy == "deepspeed" and draft.zero_stage == 0:
        yield error("train.offload", "ZeRO-Offload needs ZeRO-2 or 3", "train.zero_stage=2")
    if mem is None or not mem.host:
        return
    if draft.memory_at is not None:
        draft.offload = "none"
        try:
            kept = draft.memory_at(draft.micro, draft.checkpointing)
        finally:
            draft.offload = where
        if kept.total <= mem.total:
            yield warning("train.offload", f"offload={where} saves nothing on the device here "
                          f"({mem.total / est.GB:.1f} GB with it, {kept.total / est.GB:.1f} GB without: the staging "
                          "it keeps outweighs the shard it moves) and pays for copies every step", "train.offload=none")
    per_node = draft.host_gb(mem, cfg.hardware.gpus_per_node)
    host = cfg.hardware.host_memory_gb
    if host is None:
        yield warning("hardware.host_memory_gb", f"offload={where} keeps {per_node:.1f} GB per node in CPU memory, "
                      f"and {cfg.hardware.name} does not state how much a node has",
                      f"hardware.host_memory_gb=<the node's RAM in GB> (at least {per_node * 1.25:.0f}, with room "
                      "for the process and pinned buffers)")
    elif per_node > host * est.HOST_SHARE:
        yield error("hardware.host_memory_gb", f"offload={where} keeps {per_node:.1f} GB per node in CPU memory, "
                    f"more than {est.HOST_SHARE:.0%} of the {host:g} GB {cfg.hardware.name} has",
                    "a node with more memory (hardware.host_memory_gb), or more workers: more shards" + (
                        ", or train.offload=optimizer" if where == "params" and draft.strategy == "deepspeed" else ""))


@rule
def zero_stage_values(cfg, facts, draft):
    """warns ZeRO with one worker"""
    if draft.zero_stage in (2, 3) and draft.world == 1:
        yield warning("train.zero_stage", f"ZeRO-{draft.zero_stage} with one worker shards nothing and only adds "
                      "overhead", "train.zero_stage=0, or multi-GPU hardware")


# --- objective ----------------------------------------------------------------------------------------------------
@rule
def objective(cfg, facts, draft):
    """an unknown trainer; data of a format the objective's trainer does not take (preference pairs with SFT: key
    `objective`); a loss name TRL does not have for that trainer (`ftc/config/objectives.py`)"""
    o, d = cfg.objective, cfg.data
    trainer = TRAINERS.get(o.trainer)
    if trainer is None:
        yield error("objective.trainer", f"unknown trainer '{o.trainer}'", f"objective.trainer={' | '.join(TRAINERS)}")
        return
    if d.format not in trainer.formats:
        takers = [t.name for t in TRAINERS.values() if d.format in t.formats]
        message = f"{o.name} ({trainer.trl}) trains on {' | '.join(trainer.formats)} data, not {d.format} rows" + \
            (f" (those train with objective={' | '.join(takers)})" if takers else "")
        if takers and trainer.evaluation == "generation":  # preference data with SFT: the objective is what's off
            yield error("objective", message, f"objective={takers[0]}")
        else:
            yield error("data.format", message, trainer.format_fix)
    if trainer.losses and draft.loss_type not in trainer.losses:
        yield error("objective.loss_type", f"unknown {trainer.trl} loss '{draft.loss_type}' (TRL's: "
                    f"{', '.join(trainer.losses)})", f"objective.loss_type={trainer.default_loss}")
    elif not trainer.losses and o.loss_type is not None:
        yield warning("objective.loss_type", f"{trainer.trl} has one loss: loss_type={o.loss_type} is not used",
                      "objective.loss_type=null")
    if o.max_prompt_length is not None and o.max_prompt_length >= draft.max_length:
        yield error("objective.max_prompt_length", f"{o.max_prompt_length} leaves no room for the completion within "
                    f"data.max_length={draft.max_length}", f"objective.max_prompt_length={draft.max_length // 2}")


@rule
def generation(cfg, facts, draft):
    """GRPO without rewards; a reward that cannot run (a user function not importable or without `(completions,
    **kwargs)`, a pattern that does not compile); a global batch that is not whole groups of `num_generations`; a
    generation batch whose KV cache does not fit beside the weights (the fix is a batch that fits)

    GRPO: rewards that can run, a global batch of whole groups, and a generation batch that fits."""
    o, trainer = cfg.objective, TRAINERS.get(cfg.objective.trainer)
    if trainer is None or not trainer.generates:
        return
    if not o.rewards:
        yield error("objective.rewards", f"{o.name} learns from rewards and none is declared",
                    "objective.rewards=[{kind: exact_match}]")
    for i, problem in sorted(facts.reward_problems.items()):
        yield error(f"objective.rewards[{i}]", problem, "see docs/CONFIG.md (objective.rewards) for the kinds")
    g, n = o.num_generations, cfg.train.global_batch_size
    if n % g:
        yield error("train.global_batch_size", f"{n} completions a step is not a whole number of groups of "
                    f"objective.num_generations={g} (TRL samples every prompt's group in the same step)",
                    f"train.global_batch_size={max(g, n - n % g)}")
    yield from _vllm(cfg, draft)
    if draft.arch is not None and draft.generation_bytes:
        room = uncertain_room(cfg.hardware.memory_gb, draft.memory.floor / est.GB) * est.GB
        if draft.generation_bytes > room:
            per_completion = draft.generation_bytes / max(n // max(draft.world, 1), 1)
            fitting = int(max(room, 0) // per_completion) // g * g
            yield error("objective.num_generations", f"generating a step's {n} completions needs "
                        f"{draft.generation_bytes / est.GB:.1f} GB (KV cache over prompt + "
                        f"{o.max_completion_length} tokens) beside the weights: more than the "
                        f"{cfg.hardware.memory_gb:g} GB card holds",
                        f"train.global_batch_size={fitting}" if fitting >= g else
                        f"objective.max_completion_length={max(o.max_completion_length // 2, 1)}")


def _vllm(cfg, draft) -> Iterator[Finding]:
    """vLLM generates where the plan says: CUDA, installed on the machine that trains, and for a server a GPU of
    the node that no training process uses (the local launcher's second GPU) with room for its weights and KV
    cache at TRL's server share."""
    if draft.generation not in ("vllm", "vllm_server"):
        return
    hw, devices = cfg.hardware, cfg.hardware.gpus_per_node * cfg.hardware.nodes
    if hw.accelerator != "cuda":
        yield error("objective.generation", f"vLLM generates on CUDA only; {hw.name} is {hw.accelerator}",
                    "objective.generation=transformers")
        return
    if not draft.packages.get("vllm"):
        yield error("objective.generation", f"vLLM is not among the packages of the machine that trains "
                    f"(hardware.packages of {hw.name})", "hardware.packages=[vllm] if the image has it, else "
                    "objective.generation=transformers")
    if draft.generation == "vllm_server":
        kind = LAUNCHER_KINDS.get(cfg.launcher.kind)
        if kind is not None and kind.ray_train:
            yield error("objective.generation", "vllm_server runs beside the local launcher's one training process; "
                        "Ray workers take every GPU of the node", "objective.generation=vllm (colocated)")
        elif devices != 2:
            yield error("objective.generation", f"vllm_server needs a node of 2 GPUs (one trains, one generates); "
                        f"{hw.name} has {devices}", "objective.generation=vllm (colocated), or "
                        "hardware.gpus_per_node=2")
        elif draft.vllm_bytes > hw.memory_gb * est.GB * est.VLLM_SERVER_SHARE:
            yield error("objective.generation", f"vLLM's 16-bit weights and KV cache ({draft.vllm_bytes / est.GB:.1f} "
                        f"GB) exceed {est.VLLM_SERVER_SHARE:g} of the generation GPU's {hw.memory_gb:g} GB",
                        f"objective.max_completion_length={max(cfg.objective.max_completion_length // 2, 1)}")


@rule
def start_adapter(cfg, facts, draft):
    """a `model.adapter` to start from that is not an adapter directory, under full fine-tuning, or trained on
    another base model"""
    a = facts.adapter
    if a is None:
        return
    if not a.exists:
        yield error("model.adapter", f"no adapter at {a.path} (adapter_config.json not found)",
                    "a run directory with adapter/ (e.g. model.adapter=runs/sft) or a PEFT adapter directory")
    elif not draft.peft:
        yield error("model.adapter", "full fine-tuning cannot start from an adapter", "method=lora")
    elif a.base_model and a.base_model != cfg.model.path:
        yield error("model.adapter", f"the adapter was trained on {a.base_model}, not {cfg.model.path}",
                    f"model.path={a.base_model}, or an adapter trained on this model")


# --- model ------------------------------------------------------------------------------------------------------
@rule
def architecture_known(cfg, facts, draft):
    """no config.json (a local directory, the Hugging Face cache's snapshot, the copy ftc ships for a catalog id, or
    fetched from the hub without weights) and no numbers in the YAML; the message says why a hub id could not be
    read (offline, gated, no such repository)"""
    if draft.arch is None:
        from ftc import hub

        path = str(cfg.model.path)
        why = hub.fetch_config(path, cfg.model.revision)[1] if hub.is_hub_id(path) else "no config.json there"
        yield error("model.path", f"architecture of '{path}' unknown: {why}", "download the model first (`hf "
                    "download <id>`), give a local directory, or pick a catalog model (model=llama3_8b ...)")


@rule
def attention_heads(cfg, facts, draft):
    """Head counts the attention layers can be built with: query heads a whole multiple of key/value heads, and
    (without an explicit head_dim) the hidden size a whole multiple of the heads; transformers would refuse the
    model only when it loads."""
    v = draft.arch_values
    heads, kv, hidden, head_dim = (v.get(k) or 0 for k in ("num_heads", "num_kv_heads", "hidden_size", "head_dim"))
    if heads and kv and heads % kv:
        yield error("model.num_kv_heads", f"{heads} attention heads are not a multiple of {kv} key/value heads",
                    f"model.num_kv_heads={math.gcd(heads, kv)}")
    if heads and hidden and hidden % heads and head_dim == hidden // heads:  # head_dim derived, not given
        divisors = [d for d in range(heads, 0, -1) if hidden % d == 0]
        yield error("model.num_heads", f"hidden size {hidden} is not a multiple of {heads} attention heads",
                    f"model.num_heads={divisors[0]}")


@rule
def context_length(cfg, facts, draft):
    """a value you set beyond the model's context, or shorter than 16 (unset = the model's context capped at 2048,
    recorded in `decisions`: a default never errors)"""
    limit, length = draft.arch_values.get("max_position_embeddings"), cfg.data.max_length
    if length is None:  # unset: the compiler chose a length that fits the model
        return
    if limit and length > limit:
        yield error("data.max_length", f"{length} exceeds the model's context of {limit} tokens",
                    f"data.max_length={limit} or data.max_length=null (the model's context)")
    if length < 16:
        yield error("data.max_length", f"{length} tokens is too short for any example", "data.max_length=null")


@rule
def chat_template(cfg, facts, draft):
    """model.chat_template must be a Jinja template (transformers and llama.cpp render it with Jinja): a broken one
    would fail only when training formats its first chat row, and the plan could not count tokens with it."""
    template = cfg.model.chat_template
    if not template:
        return
    try:
        from jinja2 import Environment, TemplateSyntaxError
    except ImportError:  # the plan-only install: training's own load checks it
        return
    try:
        Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except TemplateSyntaxError as e:
        yield error("model.chat_template", f"not a valid Jinja template ({e.message}, line {e.lineno})",
                    "fix the template, or model.chat_template=null to keep the tokenizer's own")


@rule
def remote_code(cfg, facts, draft):
    """warns when enabled"""
    if cfg.model.trust_remote_code:
        yield warning("model.trust_remote_code", "the model repository's Python code will run on your machine",
                      "pin model.revision to a commit you reviewed")


@rule
def attention(cfg, facts, draft):
    """flash attention on CPU, or without flash-attn among the target's packages (`hardware.packages`; never this
    machine's for a GPU plan)"""
    if cfg.model.attn_implementation.startswith("flash") and cfg.hardware.accelerator == "cpu":
        yield error("model.attn_implementation", "flash attention needs a CUDA GPU", "model.attn_implementation=sdpa")
    elif cfg.model.attn_implementation.startswith("flash") and not draft.packages.get("flash_attn"):
        yield error("model.attn_implementation", f"flash-attn is not among the target's packages "
                    f"({_packages(draft)}), so the run could only fall back to another kernel (and packing would lose "
                    "its point)", "hardware.packages=[flash_attn,...] if the GPU machine has it, or "
                    "model.attn_implementation=sdpa")


REPORTERS = ("auto", "none", "tensorboard", "wandb", "mlflow")


def _packages(draft: Draft) -> str:
    present = [n for n, ok in draft.packages.items() if ok]
    return "hardware.packages: " + (", ".join(present) if present else "none")


@rule
def reporting(cfg, facts, draft):
    """an unknown logger, or one not among the target's packages"""
    for name in cfg.train.report_to:
        if name not in REPORTERS:
            yield error("train.report_to", f"unknown logger '{name}'", f"train.report_to=[{' | '.join(REPORTERS)}]")
        elif name not in ("auto", "none") and not draft.packages.get(name):
            yield error("train.report_to", f"{name} is not among the target's packages ({_packages(draft)})",
                        f"hardware.packages=[{name},...] if the machine that trains has it, or "
                        "train.report_to=[none]")


@rule
def baselines(cfg, facts, draft):
    """an unknown eval.baselines entry"""
    for name in cfg.eval.baselines:
        if name not in BASELINES:
            yield error("eval.baselines", f"unknown baseline '{name}'",
                        f"eval.baselines=[{','.join(BASELINES)}], [base] or []")


# --- precision and hardware --------------------------------------------------------------------------------------
@rule
def precision(cfg, facts, draft):
    """bf16 on a GPU without bf16 (T4); fp16 on CPU"""
    if draft.precision == "bf16" and not cfg.hardware.bf16:
        yield error("train.precision", f"{cfg.hardware.name} has no bfloat16 support", "train.precision=fp16")
    elif draft.precision == "fp16" and cfg.hardware.accelerator == "cpu":
        yield error("train.precision", "fp16 mixed precision is not supported on the CPU",
                    "train.precision=fp32 (or bf16)")


def _memory_fixes(cfg, draft, have: float, only_safe: bool = True) -> list[str]:
    """Changes that make the plan fit, each checked with the estimator; the smallest step of each kind (the largest
    micro batch, the longest max_length) that does. ``only_safe``: the band's high end within the device (verdict
    ``fits``); else within it as estimated (not refused)."""
    at, fixes = draft.memory_at, []
    if at is None:
        return fixes

    def ok(mem) -> bool:
        return safe(mem, have) or (not only_safe and verdict(mem.total / est.GB, have, mem.floor / est.GB) == "tight")

    def largest_micro(ckpt: bool) -> int:
        micro = draft.micro // 2 if ckpt == draft.checkpointing else draft.micro
        while micro >= 1 and not ok(at(micro, ckpt)):
            micro //= 2
        return micro

    if not draft.checkpointing:
        micro = largest_micro(True)
        if micro == draft.micro:
            fixes.append("train.gradient_checkpointing=true")
        elif micro >= 1:
            fixes.append(f"train.gradient_checkpointing=true train.micro_batch_size={micro}")
    micro = largest_micro(draft.checkpointing)
    if micro >= 1:
        fixes.append(f"train.micro_batch_size={micro}")
    seq = draft.max_length // 2
    while seq >= 256 and not ok(at(draft.micro, draft.checkpointing, seq=seq)):
        seq //= 2
    if seq >= 256:
        fixes.append(f"data.max_length={seq}")
    if not draft.method.full and not draft.method.quantized and ok(at(draft.micro, draft.checkpointing,
                                                                        kind="qlora")):
        fixes.append("method=qlora")
    if draft.method.full and ok(at(draft.micro, draft.checkpointing, kind="lora")):
        fixes.append("method=lora")
    for field, value, fix in (("strategy", "fsdp", "train.strategy=fsdp (shards the weights, 4-bit ones included)"),
                              ("offload", "optimizer", "train.offload=optimizer"),
                              ("offload", "params", "train.offload=params")):
        possible = draft.world > 1 and (
            (field == "strategy" and draft.strategy in ("ddp", "deepspeed") and draft.zero_stage < 3) or
            (field == "offload" and draft.offload == "none" and (
                (value == "optimizer" and draft.strategy == "deepspeed") or
                (value == "params" and (draft.strategy == "fsdp" or draft.zero_stage == 3)))))
        if possible:
            before = getattr(draft, field)
            setattr(draft, field, value)
            try:
                mem = at(draft.micro, draft.checkpointing)
                host = draft.host_gb(mem, cfg.hardware.gpus_per_node)
                room = cfg.hardware.host_memory_gb
                if ok(mem) and (room is None or host <= est.HOST_SHARE * room):
                    fixes.append(fix + (f" (with {host:.0f} GB of CPU memory per node: state the node's, "
                                        "hardware.host_memory_gb=...)" if field == "offload" and room is None else ""))
            finally:
                setattr(draft, field, before)
    mem = at(draft.micro, draft.checkpointing)
    if mem.colocated and ok(dataclasses.replace(mem, colocated=0.0)):
        fixes.append("objective.generation=transformers (vLLM's copy and KV cache leave the training GPU)")
        if cfg.hardware.gpus_per_node * cfg.hardware.nodes == 1:
            fixes.append("a 2-GPU profile with objective.generation=vllm_server")
    return fixes


@rule
def memory_fits(cfg, facts, draft):
    """the predicted peak's band (docs/ESTIMATES.md, "Fit and uncertainty") against the device: tight (fits only if
    the estimate holds) is a warning naming the fixes that make it safe, does not fit (even the band's low end
    exceeds the device) an error with fixes checked by the estimator"""
    mem = draft.memory
    if mem is None or draft.arch is None or not mem.total:
        return
    need, have = mem.total / 1e9, cfg.hardware.memory_gb
    detail = (f"weights {mem.weights / 1e9:.1f}, activations {mem.activations / 1e9:.1f}, logits "
              f"{mem.logits / 1e9:.1f}" + (f", colocated vLLM {mem.colocated / 1e9:.1f}" if mem.colocated else "")
              + " GB")
    low, high = band(need, mem.floor / est.GB)
    said = verdict(need, have, mem.floor / est.GB)
    if said == "fits":
        return
    spread = f"{low:.1f}-{high:.1f} GB: published runs' spread around what the parameter counts do not fix, " \
             "docs/ESTIMATES.md"
    fixes = _memory_fixes(cfg, draft, have)
    if said == "tight":
        verdict_text = "it fits only if the estimate holds" if need <= have else \
            "it fits only if the estimate is high, as it was on some published runs"
        yield warning("hardware", f"predicted peak {need:.1f} GB per device ({spread}) against the {have:g} GB of "
                      f"{cfg.hardware.name}: {verdict_text} ({detail})",
                      "to make it safe: " + (", ".join(fixes) or "a larger GPU"))
        return
    fixes = fixes or _memory_fixes(cfg, draft, have, only_safe=False)
    fixes.append("more GPUs (ZeRO-3, or FSDP with QLoRA, shards the weights), or a larger GPU")
    yield error("hardware", f"predicted peak {need:.1f} GB per device ({spread}) exceeds the {have:g} GB of "
                f"{cfg.hardware.name} even at the band's low end ({detail})", "any of: " + "; ".join(fixes))


@rule
def traced_step(cfg, facts, draft):
    """``ftc plan --trace``: the analytic activations against the traced step's (the real model code's)."""
    if draft.traced is None:
        return
    mem = draft.traced[0]
    if mem.analytic_gb and abs(mem.ratio - 1) > 0.10:
        yield warning("memory", f"the traced step saves {mem.activations_gb:.3g} GB of activations at micro "
                      f"{mem.micro} x {mem.seq} tokens, the analytic model {mem.analytic_gb:.3g} GB "
                      f"({mem.ratio - 1:+.0%}); the plan's figures are the analytic model's (they are evaluated at "
                      "every micro batch and fix the compiler tries, the trace at this one)",
                      "size by the larger: check memory.traced against the headroom, or a smaller "
                      "train.micro_batch_size if it is tight")


@rule
def workers(cfg, facts, draft):
    """an unknown launcher kind; the local launcher on several nodes, or on several devices for an objective that
    trains in one process (GRPO); more workers than devices; warns idle devices"""
    devices = cfg.hardware.gpus_per_node * cfg.hardware.nodes
    la = cfg.launcher
    kind = LAUNCHER_KINDS.get(la.kind)
    if kind is None:
        yield error("launcher.kind", f"unknown launcher kind '{la.kind}' (launcher={la.name})",
                    f"launcher.kind={' or launcher.kind='.join(LAUNCHER_KINDS)}")
        return
    trainer = TRAINERS.get(cfg.objective.trainer)
    if not kind.ray_train and cfg.hardware.nodes > 1:
        yield error("launcher", f"the local launcher starts its processes on this machine but {cfg.hardware.name} "
                    f"has {cfg.hardware.nodes} nodes", "launcher=ray (one worker per device on every node)")
    elif (not kind.ray_train and devices > 1 and trainer is not None and trainer.generates
          and not (devices == 2 and draft.generation == "vllm_server")):
        yield error("launcher", f"{cfg.objective.trainer} with the local launcher trains in one process (a node's "
                    f"second GPU generates) but {cfg.hardware.name} has {devices} devices",
                    "launcher=ray (one worker per device)")
    if la.num_workers is not None:
        if la.num_workers > devices:
            yield error("launcher.num_workers", f"{la.num_workers} workers but {cfg.hardware.name} has only {devices} "
                        "devices", f"launcher.num_workers={devices} or hardware=<a larger profile>")
        elif la.num_workers < devices:
            yield warning("launcher.num_workers", f"{devices - la.num_workers} of {devices} devices stay idle "
                          "(and are paid for)", f"launcher.num_workers={devices}")
    if la.storage_path and uri_problem(la.storage_path):
        yield error("launcher.storage_path", uri_problem(la.storage_path), "launcher.storage_path=s3://<bucket>/<prefix>"
                    " (or a local or shared filesystem path)")
    if kind.ray_train and la.address and not la.storage_path:
        yield error("launcher.storage_path", "a cluster's nodes do not share this machine's run directory: checkpoints "
                    "and results need storage every node reaches", "launcher.storage_path=s3://<bucket>/<prefix> (or "
                    "a shared filesystem path)")


def uri_problem(path: str) -> Optional[str]:
    """What is wrong with a URI-shaped path (``s3://`` with no bucket, ``s3:/bucket`` with one slash), or None."""
    import re
    from urllib.parse import urlsplit

    scheme = re.match(r"^([a-z][a-z0-9+.-]{1,31}):(/*)", path, re.I)
    if not scheme or scheme.group(1) in ("ftc", "hub"):  # ftc:sample/... a built-in set; hub:org/set a hub dataset
        return None
    if scheme.group(2) != "//":
        return f"'{path}' is not a URI: its scheme needs two slashes ({scheme.group(1)}://<bucket>/<prefix>)"
    if not urlsplit(path).netloc:
        return f"'{path}' names no bucket or host"
    return None


@rule
def preemption_grace(cfg, facts, draft):
    """A preemption notice is honoured at the end of the step in progress: a step longer than the grace period
    would be killed before its checkpoint."""
    grace = cfg.train.preemption_grace_s
    if cfg.hardware.spot and draft.step_s > grace:
        yield warning("train.preemption_grace_s", f"one optimizer step is predicted to take {draft.step_s:.0f} s, "
                      f"longer than the {grace:g} s between a preemption notice and the kill: that step's work "
                      "would be lost", "a smaller train.global_batch_size, or train.preemption_grace_s=<your "
                      "provider's notice> if it gives more")


@rule
def spot_price(cfg, facts, draft):
    """spot pricing (`hardware.spot=true`) on a profile with no spot price (`hardware.spot_usd_per_hour` unset)"""
    hw = cfg.hardware
    if hw.spot and hw.spot_usd_per_hour is None:
        yield error("hardware.spot", f"no spot price is known for {hw.name}",
                    "hardware.spot_usd_per_hour=<your provider's price> or hardware.spot=false")


@rule
def dashboard_binding(cfg, facts, draft):
    """warns a dashboard bound beyond localhost"""
    if cfg.launcher.include_dashboard and cfg.launcher.dashboard_host not in ("127.0.0.1", "localhost"):
        yield warning("launcher.dashboard_host", f"Ray dashboard exposed on {cfg.launcher.dashboard_host}",
                      "launcher.dashboard_host=127.0.0.1 and an SSH tunnel")


# --- batch and schedule -------------------------------------------------------------------------------------------
@rule
def batch_sizes(cfg, facts, draft):
    """global not a multiple of micro x workers (suggests the nearest)"""
    t = cfg.train
    unit = draft.micro * draft.world
    if t.global_batch_size % unit:
        near = max(unit, round(t.global_batch_size / unit) * unit)
        yield error("train.global_batch_size", f"{t.global_batch_size} is not a multiple of micro batch x workers "
                    f"= {draft.micro} x {draft.world}", f"train.global_batch_size={near}")


@rule
def schedule_length(cfg, facts, draft):
    """neither set; an epoch (after duplicates and splits) smaller than one batch; warns both set"""
    t = cfg.train
    if not t.epochs and not t.max_steps:
        yield error("train.epochs", "neither train.epochs nor train.max_steps is set", "train.epochs=3")
    elif t.epochs and t.max_steps:
        yield warning("train.max_steps", f"both set: max_steps={t.max_steps} wins over epochs={t.epochs}",
                      "train.epochs=null or train.max_steps=null")
    if draft.train_examples and draft.sequences_per_epoch and draft.sequences_per_epoch < t.global_batch_size:
        fit = 1 << (max(1, draft.sequences_per_epoch).bit_length() - 1)  # the largest power of two that fits
        yield error("train.global_batch_size", f"one epoch is only {draft.sequences_per_epoch} sequences, fewer "
                    f"than one batch of {t.global_batch_size}", f"train.global_batch_size={fit}, or more examples")


@rule
def optimizer(cfg, facts, draft):
    """fp16 full fine-tuning; warns very high lr, an optimizer whose state size ftc does not know"""
    t = cfg.train
    if t.lr > 1e-2:
        yield warning("train.lr", f"{t.lr} is very high: expect divergence", "train.lr=2e-4")
    elif draft.method.full and t.lr > 1e-4:
        yield warning("train.lr", f"{t.lr} is high for full fine-tuning (LoRA rates do not transfer)", "train.lr=1e-5")
    if t.optim not in OPTIMIZER_MOMENTS:  # a transformers optimizer (schema.OPTIMIZERS) ftc has no state size for
        yield warning("train.optim", f"ftc does not know the state size of '{t.optim}': memory assumes AdamW's",
                      f"one of {', '.join(sorted(OPTIMIZER_MOMENTS))} for an exact estimate")
    if draft.method.full and cfg.method.compute_dtype == "fp16":
        yield error("method.compute_dtype", "full fine-tuning cannot train fp16 weights (their gradients cannot be "
                    "unscaled)", "method.compute_dtype=auto (fp32 master weights under fp16 precision)")


@rule
def loss_implementation(cfg, facts, draft):
    """`train.token_metrics` with a loss other than TRL's full-logits one; the selective loss on a model that
    transforms its logits; Liger's fused loss without CUDA and liger-kernel, or with a trainable or sharded output
    head"""
    t = cfg.train
    if t.token_metrics and t.loss != "auto":
        yield error("train.loss", "train.token_metrics needs TRL's loss over the full logits",
                    "train.loss=auto or train.token_metrics=false")
    elif t.loss == "selective" and draft.logit_transform:
        yield error("train.loss", f"{draft.family} applies {draft.logit_transform} to its logits, which the "
                    "selective loss does not", "train.loss=model (or auto)")
    elif t.loss == "liger":
        if cfg.hardware.accelerator != "cuda" or not draft.packages.get("liger_kernel"):
            yield error("train.loss", "Liger's fused loss needs a CUDA device and liger-kernel installed",
                        "pip install 'ftc[gpu]' on the GPU machine, or train.loss=selective")
        elif not draft.peft or "lm_head" in draft.targets or draft.zero_stage == 3:
            yield error("train.loss", "ftc runs Liger's fused loss only with a frozen, unsharded output head "
                        "(no full fine-tuning, LoRA on lm_head or ZeRO-3)", "train.loss=selective")
    if t.loss_chunk_tokens < 1:
        yield error("train.loss_chunk_tokens", "must be >= 1", "train.loss_chunk_tokens=1024")


@rule
def trl_fields(cfg, facts, draft):
    """removed/renamed TRL 1.x / transformers 5 fields (`max_seq_length`, `evaluation_strategy`, `tokenizer`,
    `no_cuda`...) and fields ftc sets itself

    Trainer keywords must be fields of the objective's TRL config class as installed (read from its source),
    or the run would fail when the trainer is built."""
    import difflib

    for key in cfg.train.trainer_kwargs:
        if key in RENAMED_TRL_FIELDS:
            yield error(f"train.trainer_kwargs.{key}", "removed/renamed in TRL 1.x or set by ftc itself",
                        f"use {RENAMED_TRL_FIELDS[key]}")
        elif facts.trainer_fields is not None and key not in facts.trainer_fields:
            trl = TRAINERS[cfg.objective.trainer].trl if cfg.objective.trainer in TRAINERS else "TRL"
            near = difflib.get_close_matches(key, sorted(facts.trainer_fields), n=1)
            yield error(f"train.trainer_kwargs.{key}", f"not a field of {trl}'s config class (installed TRL)",
                        f"+train.trainer_kwargs.{near[0]}=..." if near else f"~train.trainer_kwargs.{key}")


# --- data ----------------------------------------------------------------------------------------------------------
@rule
def data_files(cfg, facts, draft):
    """missing, unreadable (non-UTF-8 names its line), unsupported or empty file; **every malformed row of a local
    file** as `file:line: what` (invalid JSON, a missing field, a chat role other than system/user/assistant...),
    the first 10 listed and the rest counted: the same checks `ftc train` runs (`ftc/data/load.py`); rows that lack
    the format's names but have columns that map (`question`/`answer`), one finding with the override that reads
    them (key `data.fields.<name>` or `data.format`), counted; a hub dataset (`data=hub`) that cannot be had, with
    its fix; warns remote files that can't be checked

    Keys: `data.path`, `data.validation_path`, `data.test_path`, `data.fields.<name>`, `data.format`"""
    for role, key in (("train", "data.path"), ("validation", "data.validation_path"), ("test", "data.test_path")):
        f = facts.data.get(role)
        if f is None:
            continue
        malformed = uri_problem(getattr(cfg.data, key.split(".")[1]) or "")
        if malformed:
            yield error(key, malformed, f"{key}=s3://<bucket>/<file> (or a local file)")
            continue
        if f.remote and f.error:
            assumed = (f"estimates assume data.num_rows={cfg.data.num_rows}" if cfg.data.num_rows
                       else "steps, time and cost are unknown (0) until you give the row count")
            yield warning(key, f"cannot check {f.path} before launch ({f.error}); {assumed}",
                          "data.num_rows=<rows in the file>")
        elif not f.exists and f.path.startswith("hub:") and f.error and "; fix: " in f.error:
            said, fix = f.error.rsplit("; fix: ", 1)  # a hub dataset: the fix is the one its reader names
            yield error(key, f"{f.path}: {said}", fix)
        elif not f.exists:
            yield error(key, f"{f.path}: {f.error or 'not found'}", f"{key}=<an existing jsonl/json/csv/parquet file>")
        elif f.error:
            yield error(key, f"{f.path}: {f.error}", "a UTF-8 jsonl/json/csv/parquet file")
        elif f.rows == 0:
            yield error(key, f"{f.path} has no rows", "a file with examples")
        if f.mapping:  # the file names the format's fields otherwise: one override, as printed, reads them
            yield error(f.mapping[0][0], f.mapping_line, " ".join(f"{k}={v}" for k, v in f.mapping))
        fmt = FORMATS.get(cfg.data.format)
        expects = f"format={cfg.data.format} rows have {', '.join(fmt.required)}" if fmt else ""
        for line in f.problems:  # the same row checks `ftc train` runs: every bad row, capped, with a count
            yield error(key, line, f"fix or drop the row ({expects}; other column names map with "
                        "data.fields.<name>=<column>)")
        if f.rows and f.empty_rows == f.rows:
            yield error(key, f"{f.path}: all {f.rows} rows are empty (nothing to learn from)", "a file with examples")


@rule
def max_rows(cfg, facts, draft):
    """`data.max_rows` without `data=hub`: the first rows of a hub split are fetched shard by shard; a file of yours
    is cut with `head` (or data.max_samples caps the training examples after the selection)

    Keys: `data.max_rows`"""
    if cfg.data.max_rows and not (cfg.data.path or "").startswith("hub:"):
        yield error("data.max_rows", f"reads the first rows of a hub split (data=hub); data.path is the file "
                    f"{cfg.data.path}", f"data.max_rows=null, and `head -n {cfg.data.max_rows}` of a JSONL file, or "
                    f"data.max_samples={cfg.data.max_rows} to cap the training examples")


@rule
def split_sizes(cfg, facts, draft):
    """no training example, or an empty test split, once empty rows, duplicates and near-duplicates (the selection
    `ftc train` runs, at plan time) are gone and the held-out fractions taken; warns an empty validation split

    After empty rows and duplicates are dropped and the held-out splits taken, every split the run uses must
    hold examples (a test set of 0 makes every metric NaN; an empty training set trains nothing)."""
    train = facts.data.get("train")
    if train is None or train.rows is None or not train.rows or train.rows == train.empty_rows:
        return  # unread, empty or unreadable: data_files says so
    counts, dropped = draft.split_examples, draft.dropped_rows
    gone = ", ".join(f"{n} {k.replace('_', '-')}" for k, n in dropped.items() if n) or "none"
    left = f"{train.rows} rows, dropped {gone}: {counts}"
    if counts.get("train", 0) < 1:
        yield error("data.path", f"no training examples left ({left})", "more distinct examples, or smaller "
                    "data.test_fraction / data.validation_fraction")
    if cfg.eval.enabled and not cfg.data.test_path and cfg.data.test_fraction > 0 and counts.get("test", 0) < 1:
        need = math.ceil(1 / cfg.data.test_fraction)
        yield error("data.test_fraction", f"the test split would be empty ({left}; data.test_fraction="
                    f"{cfg.data.test_fraction:g} of them rounds down to 0)", f"at least {need} distinct examples, "
                    "data.test_path=<file>, or eval.enabled=false")
    if not cfg.data.validation_path and cfg.data.validation_fraction > 0 and counts.get("validation", 0) < 1:
        yield warning("data.validation_fraction", f"the validation split would be empty ({left}): no validation "
                      "loss during training", "more distinct examples or data.validation_path=<file>")


@rule
def data_quality(cfg, facts, draft):
    """personal data or secrets in rows under `data.pii=refuse`; an unknown language code (lists the detector's);
    warns personal data under `data.pii=report` (counts per kind, `file:line`, the value masked), training rows that
    (nearly) copy rows of a given test/validation file (dropped from training; the pairs named), and data in several
    languages (each >= 5%) without `data.languages`. The findings come from the selection `ftc train` runs
    (`ftc/data/select.py`)

    What the data selection found (facts.selection): personal data, training copies of a given test file,
    several languages, unknown language codes.

    Keys: `data.pii`, `data.languages`, `data.test_path`, `data.validation_path`"""
    d, sel = cfg.data, facts.selection
    if d.languages and facts.language_codes:
        unknown = sorted(set(d.languages) - set(facts.language_codes))
        if unknown:
            yield error("data.languages", f"unknown language code(s) {unknown}: the detector (py3langid) knows "
                        f"{', '.join(sorted(facts.language_codes))}", "ISO 639-1 codes, e.g. data.languages=[en]")
    if sel is None:
        return
    q = sel.quality
    if q.pii:
        found = ", ".join(f"{n} {k}" for k, n in q.pii.items())
        shown = "; ".join(q.pii_shown[:3])
        if d.pii == "refuse":
            yield error("data.pii", f"personal data or secrets in the rows ({found}; first: {shown})",
                        "remove them from the file, or data.pii=mask (replaced by [EMAIL], [PHONE], ...) or "
                        "data.pii=drop (the rows)")
        elif d.pii == "report":
            yield warning("data.pii", f"personal data or secrets in the rows, trained as they are and possibly "
                          f"generated back ({found}; first: {shown})", "data.pii=mask (replaced by [EMAIL], "
                          "[PHONE], ...), data.pii=drop (the rows), or remove them from the file")
    given = [key for key in ("test_path", "validation_path") if getattr(d, key, None)]
    if q.leaked and given:
        yield warning(f"data.{given[0]}", f"{q.leaked} training rows (nearly) duplicate rows of the held-out "
                      f"file(s): dropped from training so the verdict is measured on a clean test set (first: "
                      f"{'; '.join(q.leaked_shown[:3])})", "remove them from the training file (they are dropped "
                      "either way), or data.near_dup_threshold=<higher> if they are distinct examples")
    detected = {k: n for k, n in q.languages.items() if k not in ("unsure", "none")}
    total = sum(q.languages.values())
    several = {k: n for k, n in detected.items() if total and n / total >= 0.05}
    if len(several) > 1 and not d.languages:
        mix = ", ".join(f"{k} {100 * n / total:.0f}%" for k, n in several.items())
        yield warning("data.languages", f"the data is in several languages ({mix})",
                      f"data.languages=[{next(iter(several))}] to keep only some, or leave it if that is intended")


@rule
def data_format(cfg, facts, draft):
    """unknown format/template, mapping of a field the format lacks; warns packing without a varlen kernel; warns
    text + completion-only loss"""
    d = cfg.data
    if d.format not in FORMATS:
        yield error("data.format", f"unknown format '{d.format}'", f"data.format={' | '.join(FORMATS)}")
        return
    known = set(FORMATS[d.format].required) | set(FORMATS[d.format].optional)
    for name in d.fields:
        if name not in known:
            yield error(f"data.fields.{name}", f"'{name}' is not a field of the {d.format} format "
                        f"(fields: {sorted(known)})", f"~data.fields.{name}")
    if d.template not in ("alpaca", "plain"):
        yield error("data.template", f"unknown template '{d.template}'", "data.template=alpaca")
    if draft.packing and not (cfg.hardware.accelerator == "cuda" and cfg.model.attn_implementation.startswith("flash")):
        yield warning("data.packing", "padding-free packing without flash-attention attends over the whole flattened "
                      "batch (quadratic): slower than padding here", "data.packing=null (auto)")
    if not FORMATS[d.format].has_prompt and d.completion_only_loss:
        yield warning("data.completion_only_loss", "plain text has no completion: loss covers every token",
                      "data.completion_only_loss=false")
    if len(draft.prompt_styles_seen) > 1:
        yield error("data.path", "the pairs mix string prompts (trained in the alpaca template) and message-list "
                    "prompts (the chat template): no one prompt format can ask the tuned model as it was trained",
                    "give every pair's prompt the same shape (all strings, or all chosen/rejected message lists)")


@rule
def splits(cfg, facts, draft):
    """eval without a test split; early stopping without validation"""
    d = cfg.data
    if cfg.eval.enabled and not d.test_path and d.test_fraction == 0:
        yield error("data.test_fraction", "eval is on but there is no test split",
                    "data.test_fraction=0.1 or eval.enabled=false")
    if cfg.train.early_stopping_patience and not d.validation_path and d.validation_fraction == 0:
        yield error("data.validation_fraction", "early stopping needs a validation split",
                    "data.validation_fraction=0.1")


# --- budget --------------------------------------------------------------------------------------------------------
@rule
def budget(cfg, facts, draft):
    """predicted cost, device-hours or wall clock above the cap; one check (`rules.budget_problems`) for a run, a
    sweep (summed over trials) and a search (n_trials x one trial)

    Keys: `budget.max_usd`, `budget.max_gpu_hours`, `budget.max_hours`"""
    b = cfg.budget
    yield from budget_problems(b.max_usd, b.max_gpu_hours, draft.usd, draft.device_hours, max_hours=b.max_hours,
                               hours=draft.hours)
