"""The Plan: everything a run needs, every derived number worked out. Executors read only this.

Frozen dataclasses, serialized to JSON (``plan.json`` in every run dir, ``ftc plan --json``) and read back by
``Plan.from_dict`` for ``ftc eval/generate/merge`` and by Ray workers.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, Optional

from ftc import secrets


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    family: str
    revision: Optional[str]
    trust_remote_code: bool
    attn_implementation: str
    chat_template: Optional[str]
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    adapter: Optional[str]
    """An existing adapter training starts from (model.adapter, resolved to its directory), or null."""
    params: int
    """Total parameters computed from the architecture numbers."""
    linear_modules: tuple[str, ...]
    moe: Optional["MoeSpec"]
    """Mixture-of-experts facts (null for a dense model)."""
    stored_quantization: Optional[str]
    """The checkpoint's own quantization (``mxfp4``: loaded dequantized for training), or null."""
    ssm_layers: int
    """Layers with a state-space (Mamba) mixer."""
    attention_layers: int
    """Layers with attention."""


@dataclass(frozen=True)
class MoeSpec:
    experts: int
    """Routed experts per MoE layer."""
    experts_per_token: int
    expert_intermediate_size: int
    moe_layers: int
    shared_expert_intermediate_size: int
    expert_params: int
    """Parameters of all routed experts: all resident in memory."""
    active_params: int
    """Parameters a token runs through (FLOPs): dense parts, routers and its top-k experts, head excluded."""
    expert_parameters: tuple[str, ...]
    """The fused expert parameters as transformers loads them (``mlp.experts.gate_up_proj``)."""
    routers: tuple[str, ...]
    """Router modules: never adapted."""
    expert_weights: str
    """What the experts are held in during training (``bf16``; 4-bit QLoRA quantizes linear layers only)."""


@dataclass(frozen=True)
class QuantSpec:
    bits: int
    quant_type: str
    double_quant: bool
    compute_dtype: str
    storage_dtype: str
    """bnb_4bit_quant_storage: uint8, or the compute dtype when parameters must be sharded (ZeRO-3)."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    peft: bool
    r: int
    alpha: float
    dropout: float
    use_dora: bool
    target_modules: tuple[str, ...]
    target_parameters: tuple[str, ...]
    """Fused MoE expert parameters PEFT adapts (``LoraConfig.target_parameters``); empty when none."""
    trainable_params: int
    trainable_percent: float
    weight_dtype: str
    """dtype the model's weights load in (the trained ones for full fine-tuning; the non-quantized ones for QLoRA)."""
    quantization: Optional[QuantSpec]


@dataclass(frozen=True)
class DataSpec:
    name: str
    path: str
    validation_path: Optional[str]
    test_path: Optional[str]
    format: str
    fields: dict[str, str]
    template: str
    prompt_style: str
    """How a prompt becomes the text before a completion, in training and whenever the tuned model is asked
    (``ftc generate``, export, serve): alpaca (the instruction template), chat (the tokenizer's chat template) or raw;
    preference pairs: chat when their prompts are message lists."""
    system_prompt: Optional[str]
    """The system message every chat-style training example opens with (None: they differ, or have none):
    ``ftc generate``, the exported template and ``ftc serve`` use it when a request brings none."""
    max_length: int
    max_prompt_length: int
    """Preference pairs: prompt tokens kept (0 for other formats)."""
    packing: bool
    group_by_length: bool
    completion_only_loss: bool
    dedup: bool
    near_dup_threshold: Optional[float]
    pii: str
    languages: tuple[str, ...]
    validation_fraction: float
    test_fraction: float
    max_held_out: Optional[int]
    """Examples at most in a split cut off the training file (validation, test)."""
    max_samples: Optional[int]
    max_rows: Optional[int]
    """data=hub: only the split's first rows are read (``part`` says how many, of how many)."""
    engine: str
    """Where the selection's per-row work runs (local | ray): the same selection either way."""
    ray_address: Optional[str]
    train_examples: int
    """Training examples: counted from the files before launch (after empty rows, duplicates and the held-out
    splits), else estimated from data.num_rows."""
    examples: dict[str, int]
    """Examples per split (train, validation, test) as the run's data pipeline will make them."""
    dropped: dict[str, int]
    """Rows the data pipeline will drop, by reason: before splitting empty, pii, language, duplicates (exact or
    case/whitespace), near_duplicates (MinHash at near_dup_threshold); after tokenizing (when the plan counted
    tokens) no_completion_after_truncation (max_length cut the whole completion away)."""
    quality: "DataQuality"
    """What the data holds besides its shape, found by the selection ``ftc train`` repeats (ftc.data.select)."""
    tokens_per_example: int
    """Mean tokens per example (of a pair: the chosen sequence), capped at max_length: counted over every selected
    training example when the model's tokenizer.json is at hand, else estimated (the first rows' tokens, or
    characters / model.chars_per_token + template)."""
    tokens: dict[str, int]
    """Tokens per split after truncation, as the run's data report counts them (a pair's prompt twice): exact, from
    every selected example tokenized as training will; empty when estimated."""
    truncated: int
    """Examples cut to max_length (with ``tokens``; 0 when estimated)."""
    loss_share: float
    """Estimated share of positions the loss counts (completion-only loss on the data's completions; 1 otherwise):
    where the selective loss runs the output head."""
    part: Optional["PartSpec"]
    """data.max_rows: the rows read of the split, what the whole split holds and an epoch over all of it."""


@dataclass(frozen=True)
class PartSpec:
    """The first rows of a hub split that the plan and the run read (data.max_rows), and the whole split's epoch
    extrapolated from them."""

    rows: int
    """Rows read: the first data.max_rows of the split, or all of it when it holds fewer."""
    total: Optional[int]
    """Rows in the whole split (None: unknown)."""
    total_from: str
    """every shard read | the dataset card (its dataset_info) | the shards' parquet footers | the shard count (an
    estimate: the shards read, scaled to all)."""
    shards_read: int
    shards: int
    whole_train_examples: Optional[int]
    """Training examples an epoch over the whole split would have: this plan's, scaled by total / rows."""
    whole_epoch_hours: Optional[float]
    """Training hours of one epoch over the whole split at this plan's rate (its training hours per epoch, scaled
    by total / rows)."""
    whole_epoch_usd: Optional[float]


@dataclass(frozen=True)
class DataQuality:
    """Findings of the data selection (empty when the files cannot be read before launch). ``*_shown`` hold the first
    few as ``file:line`` lines, personal data masked."""

    checked: bool
    """The rows were read before launch (false for a remote URI: nothing below is known)."""
    compared_on: str
    """What near-duplicates are compared on."""
    near_groups: int
    """Groups of two or more near-duplicate examples (one of each is kept)."""
    near_shown: tuple[str, ...]
    leaked: int
    """Training rows dropped because they (nearly) duplicate a test or validation row: the verdict is measured on a
    test set the model never saw a copy of."""
    leaked_shown: tuple[str, ...]
    moved: int
    """Held-out examples moved back to training because their near-duplicates train (data.dedup=false)."""
    moved_shown: tuple[str, ...]
    pii: dict[str, int]
    """Personal data and secrets found, by kind (email, phone, iban, card, ip, credential)."""
    pii_shown: tuple[str, ...]
    languages: dict[str, int]
    """Detected language of the examples read (ISO 639-1; 'unsure' for short or mixed text), most frequent first."""
    languages_sampled: int
    """0 when every example read was classified; else how many were, evenly spaced (data.languages unset and more
    than ``select.LANGUAGE_SAMPLE`` examples: the shares are a report, and classifying a million rows costs minutes).
    With data.languages set every example is classified, as the filter needs."""


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    trainer: str
    """sft | dpo | orpo | kto: its entry in ftc/config/objectives.py (costs, data formats, loss, evaluation)."""
    beta: float
    loss_type: str
    reference: str
    sequences_per_example: int
    """1 for SFT; 2 for preference pairs (chosen and rejected run through the model together)."""
    reference_forwards: int
    """Extra forward passes per sequence without gradient (DPO's reference log-probabilities)."""
    num_generations: int
    max_completion_length: int
    temperature: float
    rewards: tuple[dict[str, Any], ...]
    """GRPO's rewards as declared (objective.rewards), checked at plan time."""
    generation: str
    """GRPO: who generates (transformers | vllm colocated | vllm_server on the node's second GPU), decided from the
    target."""
    generation_gb: float
    """GRPO: memory of generation: with transformers a generation batch's KV cache and sampling logits; with vLLM what
    vLLM holds (its 16-bit weights, KV cache, runtime), in the memory total when colocated."""
    vllm_gpu_memory_utilization: float
    """GRPO with vLLM: the share of its GPU vLLM pre-allocates (colocated: sized to what it holds; 0 without
    vLLM)."""
    generation_hours: float
    """GRPO: time spent generating completions, in the time total."""


@dataclass(frozen=True)
class BatchSpec:
    micro: int
    grad_accum: int
    world: int
    global_: int
    derivation: str


@dataclass(frozen=True)
class ScheduleSpec:
    steps: int
    epochs: float
    tokens: int
    """Real (non-padding) training tokens over the whole run."""
    tokens_per_step: int
    sequences_per_epoch: int
    warmup_steps: int
    eval_steps: int
    save_steps: int


@dataclass(frozen=True)
class TrainSpec:
    max_steps: Optional[int]
    """Set by the experiment (wins over epochs); null = run schedule.epochs over the loaded data."""
    lr: float
    scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    optim: str
    gradient_checkpointing: bool
    zero_stage: int
    strategy: str
    """none (one worker) | ddp | deepspeed | fsdp: how the workers share the model (`train.strategy`, decided)"""
    offload: str
    """none | optimizer | params: state kept in CPU memory instead of the device (`train.offload`, decided)"""
    save_total_limit: int
    early_stopping_patience: Optional[int]
    preemption_grace_s: float
    """Seconds a preemption notice leaves for the save (train.preemption_grace_s): a slower save is said at run
    time."""
    resume: bool
    """Resume from the run directory's newest intact checkpoint (train.resume); false starts from step 0."""
    logging_steps: int
    loss: str
    """selective | liger | model | trl: how the training loss is computed (decided; runtime/loss.py)."""
    loss_chunk_tokens: int
    loss_recompute: bool
    """The selective loss recomputes each chunk in the backward (one chunk's logits at a time); off under ZeRO-3."""
    token_metrics: bool
    seed: int
    report_to: tuple[str, ...]
    trainer_kwargs: dict[str, Any]


@dataclass(frozen=True)
class EvalSpec:
    enabled: bool
    baselines: tuple[str, ...]
    """What the tuned model is scored against (eval.baselines, those this objective and data allow)."""
    shots: int
    max_new_tokens: int
    max_samples: int
    num_examples_in_report: int


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    accelerator: str
    gpus_per_node: int
    nodes: int
    devices: int
    """gpus_per_node x nodes."""
    device_gb: float
    """hardware.memory_gb: memory per device."""
    bf16: bool
    peak_tflops: float
    mfu: float
    mfu_basis: str
    usd_per_hour: float
    cpus_per_worker: int
    step_overhead_s: float
    decode_gbs: Optional[float]
    memory_bandwidth_gbs: Optional[float]
    spot: bool
    spot_usd_per_hour: Optional[float]
    preemptions_per_hour: float
    host_memory_gb: Optional[float]
    host_link_gbs: float
    packages: tuple[str, ...]
    """Optional packages of the machine the run happens on (hardware.packages, decided): ``ftc train`` checks the
    ones the plan depends on before loading weights."""


@dataclass(frozen=True)
class MemorySpec:
    per_device_gb: float
    """Process peak on one device (what nvidia-smi shows): reserved + CUDA context; decides ``fits``."""
    live_gb: float
    """Live tensors at the peak (torch.cuda.max_memory_allocated)."""
    reserved_gb: float
    """Live tensors + caching-allocator slack (torch.cuda.max_memory_reserved)."""
    device_gb: float
    fits: bool
    """Not refused: the verdict is ``fits`` or ``tight``."""
    verdict: str
    """fits (the band's high end is within the device) | tight (the band straddles the device: it fits only if the
    estimate holds, or, with the estimate above the device, only if the estimate is high) | does_not_fit (even the
    band's low end exceeds it)."""
    low_gb: float
    """The band's low end: the floor the parameter counts fix (weights, trainable state, runtime) plus the rest of
    per_device_gb x est.MEMORY_BAND[0], the lowest measured/predicted ratio of that rest among the published runs
    held out from the fit (docs/ESTIMATES.md, "Fit and uncertainty")."""
    high_gb: float
    """The band's high end: the floor plus the rest x est.MEMORY_BAND[1]."""
    headroom_gb: float
    host_gb: float
    """CPU memory per node the offloaded state takes (every worker of the node's share; 0 without offload)"""
    breakdown: dict[str, float]
    seq: int
    """Tokens per sequence the peak is computed at: max_length when packed, else the longest example (capped)."""
    traced: Optional["TracedMemory"]
    """``ftc plan --trace``: a traced step's saved activations beside the analytic term at the same shape."""


@dataclass(frozen=True)
class TracedMemory:
    """Saved activations of one traced training step (ftc.runtime.trace: the real model code under fake tensors) and
    the analytic model's at the same micro batch, sequence length and checkpointing. The plan's figures stay
    analytic: the estimator is evaluated at every micro batch, checkpointing and fix the compiler tries, the trace
    at one shape; a disagreement over 10% is a warning."""

    micro: int
    seq: int
    activations_gb: float
    analytic_gb: float
    """The ``activations`` (+ ``expert_adapter_copies``) terms at the traced shape."""
    ratio: float
    """traced / analytic."""
    seconds: float


@dataclass(frozen=True)
class TimeSpec:
    hours: float
    tokens_per_s: float
    train_flops_per_token: float
    train_hours: float
    eval_hours: float
    offload_s: float
    """Seconds per optimizer step the offload adds: the state's copies over the host link and the CPU's optimizer
    step (0 without offload); in ``train_hours``"""
    baseline_hours: float
    """Of ``eval_hours``, the baselines' (the base model, prompted or not, eval.baselines): computed once and reused
    by runs that share the base model, the test examples and the eval settings, so a sweep pays it once."""
    traced: Optional["TracedTime"]
    """``ftc plan --trace``: the traced step's FLOPs beside the time model's."""


@dataclass(frozen=True)
class TracedTime:
    """FLOPs per token of the decoder's forward and backward (recomputation included) in the traced step, beside the
    time model's at the same sequence length (the output head left out of both)."""

    flops_per_token: float
    analytic_flops_per_token: float
    ratio: float


@dataclass(frozen=True)
class ServingSpec:
    """Generation with the tuned model on one device of the profile, by the engine ``ftc serve`` picks there.
    Decode-bound estimate: every weight read once per decode step, over the memory bandwidth."""

    engine: str
    """vllm on a CUDA profile, llama.cpp on a CPU one (``ftc serve`` decides again on the machine it runs on)."""
    format: str
    """What that engine loads: the merged model in 16 bits (and the base + adapter), or the GGUF f16 export."""
    stream_tokens_per_s: float
    """One sequence decoding alone (what ``ftc serve`` measures at start)."""
    merged_tokens_per_s: float
    """At a batch of 32 sequences (vLLM); llama.cpp's server decodes one request at a time: the stream rate."""
    merged_usd_per_m_tokens: float
    adapter_tokens_per_s: Optional[float]
    """vLLM with ``--enable-lora``: the adapter's bytes read too (null for llama.cpp: ftc exports merged GGUFs)."""
    adapter_usd_per_m_tokens: Optional[float]


@dataclass(frozen=True)
class CostSpec:
    usd: float
    """At the price the run pays: spot when hardware.spot, else on-demand."""
    usd_per_hour: float
    device_hours: float
    on_demand_usd: float
    spot_usd: Optional[float]
    """The same run at the profile's spot price (null when it has none)."""


@dataclass(frozen=True)
class LauncherSpec:
    kind: str
    num_workers: int
    use_gpu: bool
    resources_per_worker: dict[str, float]
    address: Optional[str]
    max_failures: int
    storage_path: Optional[str]
    dashboard_host: str
    include_dashboard: bool
    resource_wait_s: float


@dataclass(frozen=True)
class BudgetSpec:
    max_usd: Optional[float]
    max_gpu_hours: Optional[float]
    max_hours: Optional[float]


@dataclass(frozen=True)
class Finding:
    """A rule's finding, kept structured from the rule to plan.json: which key, what is wrong, the override that
    fixes it. ``str()`` is the line ``ftc plan`` prints: ``method.r: LoRA rank must be >= 1, got 0 (fix: ...)``."""

    severity: str
    """error (nothing runs) | warning."""
    key: str
    """The override key the finding is about (``method.r``, ``data.path``, ``hardware``)."""
    message: str
    fix: str
    rule: str
    """The rule that found it (``ftc.compiler.rules.RULES``, docs/RULES.md; ``declared_values`` for a value outside
    its field's declared range or choices)."""

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass(frozen=True)
class Plan:
    name: str
    """experiment name (recipes set it)"""
    model: ModelSpec
    """name, path (hub id / local / `ftc:tiny`), family, revision, `trust_remote_code`, attention, architecture
    numbers, `params`, `linear_modules`"""
    method: MethodSpec
    """`name`, `peft`, `r`, `alpha`, `dropout`, `use_dora`, resolved `target_modules`, `trainable_params`,
    `trainable_percent`, `quantization` {`bits`, `quant_type`, `double_quant`, `compute_dtype`, `storage_dtype`} or
    null"""
    objective: ObjectiveSpec
    """the objective (what is trained for): its trainer, DPO's beta, loss type and reference, the sequences and
    reference forwards each example costs"""
    data: DataSpec
    """paths, format, field mapping, template, `max_length` (decided when unset), `packing` (decided),
    `group_by_length`, `completion_only_loss`, `dedup`, split fractions, `train_examples`, `examples` per split and
    `dropped` rows (empty, duplicates) as training will see them, `tokens_per_example` (estimated)"""
    precision: str
    """`bf16` / `fp16` / `fp32` (decided from hardware when `auto`)"""
    world_size: int
    """training processes (1 locally; Ray: workers)"""
    hardware: HardwareSpec
    """profile name, accelerator, devices, `device_gb`, bf16, `peak_tflops`, `mfu`, `usd_per_hour`,
    `cpus_per_worker`"""
    batch: BatchSpec
    """`micro`, `grad_accum`, `world`, `global` and the `derivation` string `16 = 8 micro x 1 accum x 2 workers`"""
    schedule: ScheduleSpec
    """`steps`, `epochs`, `tokens` (real training tokens), `tokens_per_step`, `sequences_per_epoch`, `warmup_steps`,
    `eval_steps`, `save_steps`"""
    train: TrainSpec
    """optimizer, scheduler, lr, clipping, `gradient_checkpointing` (decided), `zero_stage` (decided), checkpoints
    kept, early stopping, seed, loggers, TRL pass-through kwargs"""
    eval: EvalSpec
    """base-vs-tuned evaluation settings"""
    memory: MemorySpec
    """`per_device_gb` (process peak: reserved + CUDA context; decides `fits`), `live_gb` (live tensors, as
    `max_memory_allocated`), `reserved_gb` (as `max_memory_reserved`), `device_gb` (capacity as nvidia-smi reports
    it, in 10^9 B), `fits`, `headroom_gb`, `breakdown` {weights, adapters_grads_optimizer, activations, logits,
    zero3_gather_buffer, allocator_slack, runtime}"""
    time: TimeSpec
    """`hours`, `tokens_per_s`, `train_flops_per_token`, `train_hours`, `eval_hours`"""
    cost: CostSpec
    """`usd`, `usd_per_hour` (all billed devices), `device_hours`"""
    serving: Optional[ServingSpec]
    """decode-bound serving estimate of the tuned model on the profile, by the engine `ftc serve` picks there
    (vLLM on CUDA: merged, and adapter on the 16-bit base; llama.cpp on a CPU: the GGUF f16 export, one stream);
    null when the profile has no memory bandwidth"""
    launcher: LauncherSpec
    """`kind`, `num_workers`, `use_gpu`, `resources_per_worker` (Ray ScalingConfig), `address`, `max_failures`,
    `storage_path`, dashboard settings, `resource_wait_s`"""
    deepspeed: Optional[dict[str, Any]]
    """the generated DeepSpeed config (ZeRO stage, micro/accum/global batch consistent with `batch`, precision,
    clipping, 16-bit gather on save) or null"""
    fsdp: Optional[dict[str, Any]]
    """the generated FSDP settings (TrainingArguments' `fsdp` and `fsdp_config`: FSDP2, a decoder layer per unit,
    sharded checkpoints) with `strategy=fsdp`, else null"""
    budget: BudgetSpec
    """`max_usd`, `max_gpu_hours`, `max_hours` (deadline)"""
    output_dir: str
    """the run directory (absolute once a run starts)"""
    findings: tuple[Finding, ...]
    """Every rule's errors and warnings, structured; ``errors`` / ``warnings`` are their printed lines."""
    decisions: tuple[str, ...]
    """Choices the compiler made for you (auto values), one line each."""
    hardware_table: tuple[dict[str, Any], ...]
    """hardware=auto: every GPU profile compiled and ranked (empty otherwise)."""

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(str(f) for f in self.findings if f.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def relocated(self, output_dir: str) -> "Plan":
        """The same plan run in another directory (the absolute run dir, a Ray worker's node-local one): where a
        run lives is the one field bound after compile; every decision stays the compiler's."""
        return dataclasses.replace(self, output_dir=output_dir)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with any secret masked (the compiler refuses configs holding one: defence in depth).
        ``errors`` and ``warnings`` are added as printed lines for readers of plan.json; ``findings`` is the data."""
        data = _to_jsonable(self)
        data["errors"], data["warnings"] = list(self.errors), list(self.warnings)
        return secrets.mask_all(data, by_key=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        return _from_jsonable(cls, data)

    @classmethod
    def load(cls, path: str) -> "Plan":
        """A saved plan.json; one written by an older ftc, lacking fields this one needs, is a clear error."""
        from ftc.errors import UserError

        with open(path) as f:
            data = json.load(f)
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise UserError(f"ftc: {path} was written by another version of ftc ({e}); compile it again with "
                            "`ftc plan` / re-run `ftc train`") from None


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name.rstrip("_"): _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    return obj


def _from_jsonable(tp: Any, data: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            key = f.name.rstrip("_")
            if key in data:
                kwargs[f.name] = _from_jsonable(hints[f.name], data[key])
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _from_jsonable(inner[0], data)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[Finding, ...]: each element of its type
            return tuple(_from_jsonable(args[0], v) for v in data)
        return tuple(data)
    return data


def baseline_key(plan: Plan) -> str:
    """What makes two runs' baselines the same evaluation (the plan's side of the key
    ``ftc.runtime.evaluate.base_once`` reuses a result under): the base model and its loading, the data and its
    split, the eval settings and the objective's scoring."""
    d, m = plan.data, plan.method
    return json.dumps([plan.model.path, plan.model.revision, repr(m.quantization), plan.precision, m.weight_dtype,
                       plan.model.attn_implementation, repr(plan.eval), d.path, d.validation_path, d.test_path,
                       d.max_length, d.format, d.test_fraction, d.validation_fraction, d.max_held_out, d.max_samples,
                       plan.train.seed, plan.objective.trainer, plan.objective.beta], default=str)


def runs_total(plans: list[Plan], of: Any) -> float:
    """``of(plan)`` (hours, device-hours, dollars) summed over runs made one after another: each run's own share,
    plus each distinct baseline evaluation once (the first run computes it, the others reuse it)."""
    total, shared = 0.0, {}
    for p in plans:
        share = p.time.baseline_hours / p.time.hours if p.time.hours else 0.0
        total += of(p) * (1 - share)
        key = baseline_key(p)
        shared[key] = max(shared.get(key, 0.0), of(p) * share)
    return total + sum(shared.values())
