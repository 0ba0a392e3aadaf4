"""Typed schemas for every config group.

Each dataclass is stored in Hydra's ConfigStore as ``base_<group>``; every YAML option in ``conf/<group>/``
starts with ``defaults: [base_<group>, _self_]`` so it is type-checked against the schema, and an unknown key
is an error. Attribute docstrings are the field documentation (``ftc plan --help`` and docs/CONFIG.md).

A default lives here and nowhere else: runtime code reads the Plan, never ``cfg.get(key, default)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

# Check.shape: (how a message says it, the test)
SHAPES = {
    "names": ("a name or a list of names (strings)",
              lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))),
    "mappings": ("a list of mappings ({kind: ..., ...})",
                 lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, dict) for x in v)),
}


@dataclass(frozen=True)
class Check:
    """The values a field accepts, declared once beside the field: bounds or choices. ``ftc plan`` refuses any
    other value naming the key, the allowed range and a fix (``fix``, else the field's default); null is always
    allowed for an Optional field (it means "decide for me")."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: tuple[Any, ...] = ()
    what: str = ""
    """How the message names the field ("LoRA rank"); empty: "must be ..."."""
    fix: Any = None
    shape: str = ""
    """For a field typed Any or a list: ``names`` (a name or a list of names), ``mappings`` (a list of mappings)."""

    def allowed(self) -> str:
        if self.shape:
            return SHAPES[self.shape][0]
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lower = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        upper = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(x for x in (lower, upper) if x) or "a finite number"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if self.shape:
            return SHAPES[self.shape][1](value)
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False  # inf passes every lower bound and NaN compares false: neither is a setting
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))


# Trainer names ftc passes to transformers (TrainingArguments.optim / lr_scheduler_type), as transformers 5.24 names
# them: ftc's lists may hold only names the installed transformers accepts (tests/drift.py checks; a name it has and
# ftc lacks is only reported). Schedulers that cannot run without extra arguments ftc does not pass
# (cosine_with_min_lr needs min_lr, reduce_lr_on_plateau and greedy an eval metric, warmup_stable_decay its phases)
# are left out on purpose.
# How several workers share the model (train.strategy; compile._strategy decides auto).
STRATEGIES = ("auto", "ddp", "deepspeed", "fsdp")
OFFLOADS = ("auto", "none", "optimizer", "params")
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise",
    "stable_adamw",
)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
SCHEDULERS_LEFT_OUT = ("cosine_with_min_lr", "cosine_warmup_with_min_lr", "reduce_lr_on_plateau",
                       "warmup_stable_decay", "greedy")  # need arguments or a metric ftc does not pass
LOSSES = ("auto", "selective", "liger", "model")


def checked(default: Any = MISSING, **check: Any) -> Any:
    """A dataclass field with its ``Check``: ``r: int = checked(16, ge=1, what="LoRA rank", fix=8)``."""
    return field(default=default, metadata={"check": Check(**check)})


def field_check(f: Any) -> Optional[Check]:
    return f.metadata.get("check")


@dataclass
class ModelConfig:
    name: str = MISSING
    """Short name shown in plans and reports."""
    path: str = MISSING
    """Hub id (``mistralai/Mistral-7B-v0.3``) or local directory; ``ftc:tiny`` builds the offline demo model."""
    family: str = "llama"
    """Architecture family: decides default LoRA targets and module names (llama, mistral, qwen2, gemma2, phi3,
    gpt2)."""
    revision: Optional[str] = None
    """Hub revision (branch, tag or commit) to pin."""
    trust_remote_code: bool = False
    """Run code shipped with the model repository. Off unless you trust the repository."""
    attn_implementation: str = checked("sdpa", choices=("sdpa", "eager", "flash_attention_2", "flash_attention_3"))
    """sdpa | eager | flash_attention_2 (used only when flash-attn is installed and the GPU supports it)."""
    chat_template: Optional[str] = None
    """Jinja chat template overriding the tokenizer's (chat data only); ``null`` keeps the tokenizer's own."""
    # Architecture numbers; null means "read config.json" (local path or Hugging Face cache).
    hidden_size: Optional[int] = checked(None, ge=1)
    """Architecture (config.json ``hidden_size``); null = read from config.json."""
    num_layers: Optional[int] = checked(None, ge=1)
    """Decoder layers (``num_hidden_layers``); null = read from config.json."""
    num_heads: Optional[int] = checked(None, ge=1)
    """Attention heads; null = read from config.json."""
    num_kv_heads: Optional[int] = checked(None, ge=1)
    """Key/value heads (GQA); null = read from config.json, else num_heads."""
    head_dim: Optional[int] = checked(None, ge=1)
    """Per-head dimension; null = hidden_size / num_heads."""
    intermediate_size: Optional[int] = checked(None, ge=1)
    """MLP width; null = read from config.json."""
    vocab_size: Optional[int] = checked(None, ge=1)
    """Vocabulary size (the logits' width: a large term of activation memory)."""
    max_position_embeddings: Optional[int] = checked(None, ge=1)
    """Context length the model was trained for; data.max_length may not exceed it."""
    # Mixture-of-experts and state-space numbers (null: read config.json; absent there: a dense attention model).
    num_experts: Optional[int] = checked(None, ge=0)
    """Routed experts per MoE layer (config.json ``num_local_experts`` / ``num_experts`` / ``n_routed_experts``)."""
    experts_per_token: Optional[int] = checked(None, ge=1)
    """Experts each token is routed to (``num_experts_per_tok``)."""
    expert_intermediate_size: Optional[int] = checked(None, ge=1)
    """One routed expert's MLP width (``moe_intermediate_size``, else ``intermediate_size``)."""
    dense_layers: Optional[int] = checked(None, ge=0)
    """Layers of an MoE model whose MLP is dense (``first_k_dense_replace``, ``mlp_only_layers``)."""
    shared_expert_intermediate_size: Optional[int] = checked(None, ge=0)
    """Summed width of an MoE layer's shared experts (``n_shared_experts`` x ``moe_intermediate_size``)."""
    ssm_layers: Optional[int] = checked(None, ge=0)
    """Layers with a state-space (Mamba) mixer; null = from config.json (``layer_types``, a Mamba model type)."""
    attention_layers: Optional[int] = checked(None, ge=0)
    """Layers with attention; null = every layer that is not state-space only."""
    stored_quantization: Optional[str] = None
    """The checkpoint's own quantization (config.json ``quantization_config.quant_method``: gpt-oss ships
    ``mxfp4``); null = read config.json. MXFP4 weights load dequantized for training; QLoRA cannot re-quantize a
    quantized checkpoint."""
    adapter: Optional[str] = None
    """Start from an existing adapter: a run directory (its adapter/) or a PEFT adapter directory, e.g. the SFT run
    before DPO. It keeps its own rank and targets; the plan records the lineage."""
    tie_word_embeddings: Optional[bool] = None
    """Output head shares the embedding matrix."""
    chars_per_token: float = checked(3.8, gt=0)
    """Average characters per token of this tokenizer on English text, used to estimate tokens from file sizes."""


@dataclass
class MethodConfig:
    name: str = MISSING
    """Short name shown in plans and reports (the built-in options: lora | qlora | dora | full)."""
    peft: bool = True
    """Train adapters (the LoRA family); false trains every weight (method=full)."""
    r: int = checked(16, ge=1, what="LoRA rank", fix=8)
    """LoRA rank."""
    alpha: float = checked(32.0, gt=0, what="LoRA alpha")
    """LoRA scaling numerator: the update is scaled by alpha / r."""
    dropout: float = checked(0.05, ge=0, lt=1, what="LoRA dropout")
    """Dropout on the LoRA input."""
    target_modules: Any = checked("all-linear", shape="names")
    """``all-linear`` or a list of module names of the architecture (e.g. ``[q_proj,v_proj]``). Never a MoE
    router (not a linear layer); experts are method.target_experts."""
    target_experts: Optional[bool] = None
    """Mixture-of-experts models: adapt the fused expert parameters too (PEFT ``target_parameters``; LoRA dropout
    is then 0, as PEFT requires). null = yes with all-linear, no with a named list of modules."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    quant_bits: Optional[int] = checked(None, choices=(4,), what="quantization bits (only 4-bit NF4/FP4 QLoRA)")
    """4 for QLoRA (bitsandbytes NF4), null for none."""
    quant_type: str = checked("nf4", choices=("nf4", "fp4"))
    """nf4 | fp4"""
    double_quant: bool = True
    """Quantize the quantization constants too (saves ~0.4 bit/parameter)."""
    compute_dtype: str = checked("auto", choices=("auto", "bf16", "fp16", "fp32"))
    """auto | bf16 | fp16 | fp32: dtype of the 4-bit matmuls and of the frozen base weights."""


@dataclass
class ObjectiveConfig:
    name: str = MISSING
    """sft | dpo | ipo | orpo | kto: what is trained for, orthogonal to method (which parameters train)."""
    trainer: str = "sft"
    """The trainer that implements it (ftc/config/objectives.py): sft (TRL SFTTrainer) | dpo (DPOTrainer) | orpo
    (ORPOTrainer) | kto (KTOTrainer). A new objective on one of them is a YAML file alone (conf/objective/ipo.yaml)."""
    beta: float = checked(0.1, gt=0)
    """DPO/KTO: how far the policy may move from the reference (higher = closer); ORPO: the odds-ratio term's
    weight (TRL's lambda)."""
    loss_type: Optional[str] = None
    """The trainer's loss variant: DPO sigmoid | ipo | hinge | robust | ... (DPOConfig.loss_type), KTO kto |
    apo_zero_unpaired; null = the trainer's default."""
    max_prompt_length: Optional[int] = checked(None, ge=1)
    """Preference data: prompt tokens kept (the end of longer prompts); null = half of data.max_length."""
    reference: str = checked("start", choices=("start",))
    """DPO reference model: start = the model as training starts (the base with the new adapter disabled, or a
    frozen copy of model.adapter); no second copy of the base weights is loaded."""
    # GRPO (online RL with verifiable rewards)
    num_generations: int = checked(4, ge=2, what="completions sampled per prompt")
    """GRPO: completions sampled per prompt; their rewards' spread is the learning signal."""
    max_completion_length: int = checked(32, ge=1)
    """GRPO: tokens generated per completion at most (decode steps per generation)."""
    temperature: float = checked(1.0, gt=0)
    """GRPO: sampling temperature of the generations."""
    rewards: List[Any] = field(default_factory=list, metadata={"check": Check(shape="mappings",
                                                                                fix="[{kind: exact_match}]")})
    """GRPO: the rewards, summed with their weights: ``{kind: exact_match}`` (the row's completion is the answer),
    ``{kind: regex, pattern: ...}``, ``{kind: json, keys: [...]}``, ``{kind: length, max_chars: N}``, ``{kind:
    python, function: "pkg.module:name"}``; each may set ``weight`` (default 1). Checked at plan time."""
    generation: str = checked("auto", choices=("auto", "transformers", "vllm", "vllm_server"))
    """GRPO: who generates: transformers' generate; ``vllm``, vLLM colocated on the training GPU (its weights and KV
    cache beside training's); ``vllm_server``, vLLM on a GPU of its own (TRL's ``vllm-serve``, started and stopped by
    ``ftc train`` on 127.0.0.1; the local launcher, a node with a GPU the run does not train on). auto = on CUDA
    with vLLM installed, a spare GPU of the node if there is one, else colocated when both fit; else
    transformers."""


@dataclass
class DataConfig:
    name: str = MISSING
    """Short name shown in plans and reports; with ``data=hub``, the Hugging Face dataset id (``org/name``)."""
    path: str = MISSING
    """File (jsonl/json/csv/parquet), local or fsspec URI (s3://, gs://...). ``ftc:sample`` is the built-in set.
    ``hub`` (what ``data=hub`` sets): the split ``data.split`` of the hub dataset ``data.name``, read through
    huggingface_hub (``hub:org/name?split=train``, which may also be given directly)."""
    subset: Optional[str] = None
    """data=hub: the dataset's subset (its card's config name, else a folder of the repository); null: the default."""
    split: str = "train"
    """data=hub: the split trained on (its held-out splits: validation_split, test_split)."""
    validation_split: Optional[str] = None
    """data=hub: a split used as the validation set; null: split off the training split (validation_fraction)."""
    test_split: Optional[str] = None
    """data=hub: a split used as the test set; null: split off the training split (test_fraction)."""
    revision: Optional[str] = None
    """data=hub: the dataset's revision (branch, tag or commit) to pin."""
    max_rows: Optional[int] = checked(None, ge=1)
    """data=hub: train on the first N rows of the split only: its shards are fetched in order until they hold N
    rows, the later ones neither downloaded nor read, and the plan states the rows read, the whole split's count
    and the time and cost of an epoch over all of it. null: the whole split. (data.max_samples instead caps the
    training examples after the selection, which reads every row.)"""
    validation_path: Optional[str] = None
    """Optional separate validation file; otherwise split from ``path``."""
    test_path: Optional[str] = None
    """Optional separate test file; otherwise split from ``path``."""
    format: str = "alpaca"
    """alpaca | chat | prompt_completion | text | preference ({prompt, chosen, rejected}, or chosen/rejected message
    lists) | kto ({prompt, completion, label}): the entries of ``ftc.data.formats.FORMATS``"""
    fields: Dict[str, str] = field(default_factory=dict)
    """Field mapping from the format's names to your file's column names: ``data.fields.output=answer`` (no ``+``
    needed). When rows lack the format's names, ``ftc plan`` proposes the mapping from the file's columns."""
    template: str = checked("alpaca", choices=("alpaca", "plain"))
    """Prompt template for alpaca data: alpaca | plain."""
    max_length: Optional[int] = checked(None, ge=1)
    """Maximum tokens per example (longer examples are truncated and counted); null = the model's context, capped
    at 2048 (recorded in the plan's decisions)."""
    packing: Optional[bool] = None
    """Padding-free packing (TRL best-fit decreasing): no compute on padding, but efficient only with a varlen
    attention kernel (flash-attention on CUDA); null = on exactly there, off elsewhere (SDPA would attend over the
    whole flattened batch)."""
    group_by_length: bool = False
    """Without packing: batch examples of similar length together (less padding) at the price of less random
    batches: on the sample set it cut exact match from 92% to 5% and was not faster (docs/BENCHMARKS.md)."""
    completion_only_loss: bool = True
    """Loss only on response / assistant tokens; false trains on the prompt too."""
    dedup: bool = True
    """Keep one example of each group of duplicates (exact, case/whitespace, or near-duplicates at
    ``near_dup_threshold``), the rest dropped and counted; false keeps training duplicates (held-out sets are always
    deduplicated, and a training row that duplicates a held-out one is always dropped)."""
    near_dup_threshold: Optional[float] = checked(0.8, gt=0, le=1, fix=0.8)
    """Jaccard similarity (character 5-grams, MinHash LSH) at which two examples are near-duplicates: the same
    ticket with another greeting or order number. Text every row shares is left out of the comparison; null = only
    exact and case/whitespace duplicates."""
    pii: str = checked("report", choices=("report", "mask", "drop", "refuse"))
    """Personal data and secrets in rows (emails, phone numbers, IBANs, card numbers, IP addresses, credentials):
    report (counted in the plan with file:line, trained as they are) | mask (replaced by [EMAIL], [PHONE], ...) |
    drop (the row) | refuse (a plan error)."""
    languages: Optional[List[str]] = None
    """Keep only examples detected in these languages (ISO 639-1 codes, e.g. [en, de]); rows the detector is unsure
    of are kept. null = keep every language (the plan shows the mix)."""
    validation_fraction: float = checked(0.1, ge=0, lt=0.5)
    """Fraction split off for validation when no validation_path is given."""
    test_fraction: float = checked(0.1, ge=0, lt=0.5)
    """Fraction split off for the test set when no test_path is given."""
    max_held_out: Optional[int] = checked(2000, ge=1)
    """At most this many examples in each split cut off the training file (validation and test, by their
    fractions); the rest train. A loss over 2,000 examples holds to about a percent, while a tenth of a million rows
    would make every validation pass and each model's test loss longer than a short run's training. null = the
    fractions alone. Files given as validation_path / test_path are used whole."""
    max_samples: Optional[int] = checked(None, ge=1)
    """Use only the first N training examples (quick experiments)."""
    engine: str = checked("local", choices=("local", "ray"))
    """Where the selection's per-row work runs (reading and checking rows, personal data, language, MinHash
    signatures): local (this process, and up to 4 cores for a large set's signatures) | ray (Ray tasks on
    ``ray_address``'s cluster). The result is the same row for row, and so is its cache entry; the decisions that
    need every row (groups, splits) are made in the planning process either way (docs/BENCHMARKS.md, "Data at
    scale")."""
    ray_address: Optional[str] = None
    """The Ray cluster data.engine=ray runs on (``ray://head:10001``, or ``auto`` for the one ``ray start`` runs on
    this machine); null = a private Ray instance on this machine's cores. ``ftc train`` selects again only where
    the plan's selection is not in its machine's cache, on the same engine."""
    num_rows: Optional[int] = checked(None, ge=1)
    """Rows in the training file, when ftc cannot read the file before launch (remote URI); used by estimates."""
    tokens_per_example: Optional[int] = checked(None, ge=1)
    """Mean tokens per example (template and EOS included), when ftc cannot count them with the model's tokenizer
    (a remote file, a hub model not on disk); used by estimates instead of the characters-per-token guess."""

    def __post_init__(self) -> None:
        """``data=hub``: the paths are the hub dataset's splits (``hub_path``), so every reader takes them as files."""
        if self.path == "hub" and isinstance(self.name, str) and self.name != MISSING:
            self.path = hub_path(self.name, self.split, self.subset, self.revision, self.max_rows)
            if self.validation_split and not self.validation_path:
                self.validation_path = hub_path(self.name, self.validation_split, self.subset, self.revision)
            if self.test_split and not self.test_path:
                self.test_path = hub_path(self.name, self.test_split, self.subset, self.revision)


HUB_SCHEME = "hub:"


def hub_path(name: str, split: str, subset: Optional[str] = None, revision: Optional[str] = None,
             rows: Optional[int] = None) -> str:
    """The data path of one split of a Hugging Face dataset, or of its first ``rows`` rows:
    ``hub:org/name?split=train[&subset=..][&revision=..][&rows=..]`` (read by ``ftc.data.hub_data``)."""
    from urllib.parse import urlencode

    query = urlencode([(k, v) for k, v in (("split", split), ("subset", subset), ("revision", revision),
                                           ("rows", rows)) if v])
    return f"{HUB_SCHEME}{name}?{query}"


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = checked("cuda", choices=("cuda", "cpu"))
    """cuda | cpu"""
    gpus_per_node: int = checked(1, ge=1)
    """Devices per node (CPU profiles: worker processes)."""
    nodes: int = checked(1, ge=1)
    memory_gb: float = checked(MISSING, gt=0, fix="<the device's memory in GB>")
    """Memory per device in GB (CPU: RAM available to one worker)."""
    rated_gb: Optional[float] = checked(None, gt=0)
    """The capacity the card is sold as (an "A100 80GB": 80), shown beside ``memory_gb`` (what the driver reports,
    in 10^9 bytes: 85.9 there) so a table names the card as its buyer knows it; null: memory_gb."""
    bf16: bool = MISSING
    """Device supports bfloat16 (a fact of the device: every profile states it)."""
    peak_tflops: float = checked(MISSING, gt=0, fix="<the datasheet's dense bf16 TFLOP/s>")
    """Dense bf16/fp16 tensor TFLOP/s per device from the vendor sheet (CPU: measured, see docs)."""
    mfu: float = checked(0.35, gt=0, le=1)
    """Model-FLOPs utilization the time estimate assumes (fraction of peak reached in practice)."""
    mfu_basis: str = "assumed"
    """Where ``mfu`` comes from, shown on the plan's time line: ``assumed`` (no measured run on this card), or the
    measurement it was fitted on (docs/ESTIMATES.md, Evidence) or ``ftc calibrate``."""
    usd_per_hour: float = checked(0.0, ge=0)
    """On-demand price per device-hour (source and date in the YAML)."""
    spot_usd_per_hour: Optional[float] = checked(None, ge=0)
    """Spot / preemptible price per device-hour (source and date in the YAML); null = no spot offer known."""
    spot: bool = False
    """Rent preemptible (spot) devices: the cost uses spot_usd_per_hour, and checkpoints are spaced for the
    preemption rate below (Young's rule) unless train.save_steps is set."""
    preemptions_per_hour: float = checked(0.1, ge=0)
    """Assumed preemptions per device-hour on spot (a stated assumption, not a measurement: providers publish
    none; 0.1 = one per 10 device-hours)."""
    memory_bandwidth_gbs: Optional[float] = checked(None, gt=0)
    """Device memory bandwidth (GB/s, datasheet): generation reads every weight per step, so it bounds decoding
    speed (the plan's serving estimate); null = no serving estimate unless decode_gbs is measured."""
    step_overhead_s: float = checked(0.0, ge=0)
    """Fixed seconds per forward/backward micro-step besides the FLOPs (kernel launches, optimizer, Python):
    measured by ``ftc calibrate``; 0 in datasheet profiles."""
    decode_gbs: Optional[float] = checked(None, gt=0)
    """Weight bytes read per second while generating (GB/s achieved; decoding is memory-bound): measured by
    ``ftc calibrate``; null = the slower of memory_bandwidth_gbs x 0.7 and 2% of peak FLOP/s
    (``estimate.decode_step_s``)."""
    host_memory_gb: Optional[float] = checked(None, gt=0)
    """CPU memory per node in GB: what offloaded state must fit in (``train.offload``); null = not stated, and a
    plan that offloads warns that it cannot check it."""
    host_link_gbs: float = checked(25.0, gt=0)
    """Host-device copy rate per device in GB/s, what offloaded state crosses each step: 25 assumed (PCIe 4.0 x16
    achieves ~25 of its 32), not measured here."""
    packages: Optional[List[str]] = None
    """Optional packages installed where the run happens, any of flash_attn, liger_kernel, tensorboard, wandb,
    mlflow, vllm: the kernels, loggers and generator the plan may choose. null = this machine's when the run happens
    here (a CPU profile), else none assumed on a GPU profile (sdpa, ftc's selective loss, no tracker: a plan that
    needs no optional package). The packages of the machine making the plan never decide a GPU plan; ``ftc train``
    checks the live ones the plan depends on before loading weights."""
    cpus_per_worker: int = checked(1, ge=1)
    """CPU cores reserved per worker (Ray)."""


@dataclass
class LauncherConfig:
    name: str = MISSING
    """The option's name (shown in plans): local, ray, or your own preset's."""
    kind: str = "local"
    """local (this machine: one process, or one a device on a multi-device node) | ray (Ray Train workers): what
    runs the plan. A preset of your own (``launcher=my_cluster``) names its kind."""
    address: Optional[str] = None
    """Ray: null starts a local instance; ``auto`` or ``ray://host:10001`` connects to a cluster."""
    num_workers: Optional[int] = checked(None, ge=1)
    """Training workers (Ray's, or the local launcher's processes); null = one per device of the hardware profile."""
    max_failures: int = checked(2, ge=0)
    """Times the worker group (Ray's, or the local launcher's processes) is started again from the last checkpoint
    after a failure."""
    storage_path: Optional[str] = None
    """Ray: where checkpoints and the final results persist (Ray Train storage): a local or shared path, or an
    object store (s3://bucket/prefix, gs://...; credentials from the environment only). Workers then need no shared
    disk: a restarted group restores from it. null = the run directory on this machine (refused for a cluster)."""
    dashboard_host: str = "127.0.0.1"
    """Ray dashboard bind address (localhost by default)."""
    include_dashboard: bool = False
    """Start Ray's dashboard with a local instance."""
    resource_wait_s: float = checked(30.0, ge=0)
    """Ray: seconds to wait for a cluster's autoscaler to offer the requested resources before failing."""


@dataclass
class TrainConfig:
    epochs: Optional[float] = checked(3.0, gt=0)
    """Passes over the training set (null when max_steps is set)."""
    max_steps: Optional[int] = checked(None, ge=1, fix=100)
    """Optimizer steps; wins over epochs when both are set."""
    global_batch_size: int = checked(16, ge=1)
    """Sequences per optimizer step over all devices; kept fixed when hardware changes (grad_accum is re-derived)."""
    micro_batch_size: Optional[int] = checked(None, ge=1, fix="null (auto)")
    """Sequences per device per forward pass; null = the largest power of two that fits memory."""
    lr: float = checked(2.0e-4, gt=0, what="learning rate")
    scheduler: str = checked("cosine", choices=SCHEDULERS)
    """linear | cosine | cosine_with_restarts | polynomial | constant | constant_with_warmup | inverse_sqrt"""
    warmup_ratio: float = checked(0.03, ge=0, lt=1)
    """Fraction of the optimizer steps over which the learning rate rises linearly from 0 (in [0, 1))."""
    weight_decay: float = checked(0.0, ge=0)
    max_grad_norm: float = checked(1.0, ge=0, what="max_grad_norm (0 disables clipping)")
    optim: str = checked("adamw_torch", choices=OPTIMIZERS)
    """Any Trainer optimizer name (adamw_torch, paged_adamw_8bit, adamw_bnb_8bit...)."""
    precision: str = checked("auto", choices=("auto", "bf16", "fp16", "fp32"))
    """auto | bf16 | fp16 | fp32; auto = bf16 where supported, else fp16 on GPU, fp32 on CPU."""
    gradient_checkpointing: Optional[bool] = None
    """null = on when it is needed to fit memory."""
    strategy: str = checked("auto", choices=STRATEGIES, what="distributed strategy")
    """How several workers share the model: ddp (each holds all of it) | deepspeed (ZeRO, ``zero_stage``; fp32 master
    weights, gradients and moments) | fsdp (PyTorch FSDP2: weights, 4-bit ones included, gradients and optimizer
    state sharded in the weights' own dtype); auto = DeepSpeed ZeRO-3 for LoRA/full, and for QLoRA DDP when the whole
    4-bit model fits a device, else FSDP. One worker: none of them."""
    offload: str = checked("auto", choices=OFFLOADS, what="offload")
    """Keep state in the node's CPU memory instead of the device: optimizer (ZeRO-Offload: master weights and
    moments step on the CPU) | params (the weight shard and all trainable state too: FSDP's CPU offload, ZeRO-3's
    offload_param) | none; auto = none unless nothing else fits, then the least that does. Host memory
    (``hardware.host_memory_gb``) and the host-device copies each step (``hardware.host_link_gbs``) are planned."""
    zero_stage: Optional[int] = checked(None, choices=(0, 2, 3), what="ZeRO stage", fix=3)
    """DeepSpeed ZeRO stage 0 (DDP) | 2 | 3; null = 3 for multi-worker LoRA/full, 0 for QLoRA or one worker."""
    eval_steps: Optional[int] = checked(None, ge=1)
    """Validate every N steps; null = about 5 times per run."""
    save_steps: Optional[int] = checked(None, ge=1)
    """Checkpoint every N steps; null = same as eval_steps."""
    save_total_limit: int = checked(2, ge=1)
    """Checkpoints kept (the last K)."""
    preemption_grace_s: float = checked(30.0, gt=0)
    """Seconds between a preemption notice (SIGTERM) and the kill: ftc saves a checkpoint at the end of the step in
    progress and stops, so the plan warns when one step takes longer (GCP spot 30 s, AWS spot 120 s, Kubernetes:
    the pod's terminationGracePeriodSeconds)."""
    resume: bool = True
    """Re-running into a run directory resumes from its newest intact checkpoint, and refuses a completed run;
    false starts again from step 0 in the same directory (its checkpoints are overwritten as training reaches them)."""
    early_stopping_patience: Optional[int] = checked(None, ge=1)
    """Stop after N validations without improvement of validation loss; null = off."""
    logging_steps: int = checked(5, ge=1)
    seed: int = checked(42, ge=0, le=2**32 - 1)  # numpy's seeds are 32-bit
    loss: str = checked("auto", choices=LOSSES)
    """auto | selective | liger | model. selective: the output head and cross-entropy run only at positions whose
    label counts, a chunk at a time (the batch x sequence x vocabulary logits never exist); liger: Liger's fused
    kernel (CUDA with liger-kernel installed); model: the model's own loss. auto = liger where it can run, else
    selective, else model (the plan's decisions say which and why)."""
    loss_chunk_tokens: int = checked(1024, ge=1)
    """Positions per chunk of the selective loss: one chunk's fp32 logits (chunk x vocabulary) exist at a time."""
    token_metrics: bool = False
    """Log TRL's per-step entropy and token accuracy (an extra fused pass over the logits: -26% throughput here)."""
    report_to: List[str] = field(default_factory=lambda: ["auto"])
    """auto (TensorBoard when installed) | none | tensorboard | wandb | mlflow: each run named after ``name`` and its
    directory, holding the plan's parameters, the curves, the evaluation and report.md (README, Trackers)"""
    trainer_kwargs: Dict[str, Any] = field(default_factory=dict)
    """Extra TRL SFTConfig fields passed through unchanged (checked for removed/renamed names)."""


BASELINES = ("base", "prompted")
"""eval.baselines: the untuned model, and the untuned model shown eval.shots training examples first."""


@dataclass
class EvalConfig:
    enabled: bool = True
    """Evaluate the tuned model (and the baselines) on the test split after training."""
    baselines: List[str] = field(default_factory=lambda: ["base", "prompted"])
    """What the tuned model is compared with on the same test prompts: ``base`` (the untuned model) and
    ``prompted`` (the untuned model shown ``eval.shots`` examples from the training split before each prompt, for
    prompt/completion evaluation); ``[]`` for none."""
    shots: int = checked(3, ge=1, le=64)
    """Training examples before each test prompt for the ``prompted`` baseline (drawn once by train.seed)."""
    max_new_tokens: int = checked(64, ge=1)
    max_samples: int = checked(200, ge=1)
    """Test examples used for generation metrics."""
    num_examples_in_report: int = checked(5, ge=0)


@dataclass
class BudgetConfig:
    max_usd: Optional[float] = checked(None, ge=0)
    """Refuse runs (and sweeps) predicted to cost more than this."""
    max_gpu_hours: Optional[float] = checked(None, gt=0)
    """Refuse runs predicted to use more device-hours than this."""
    max_hours: Optional[float] = checked(None, gt=0)
    """Deadline: refuse runs predicted to take longer than this (wall clock, training + evaluation)."""


@dataclass
class Config:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    data: DataConfig = MISSING
    hardware: HardwareConfig = MISSING
    launcher: LauncherConfig = MISSING
    objective: ObjectiveConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    name: str = "default"
    """Experiment name (recipes set it); shown in plans and reports."""
    output_dir: str = MISSING
    """Run directory: every artifact lands here; re-running with the same directory resumes."""


GROUPS = {
    "model": ModelConfig,
    "method": MethodConfig,
    "data": DataConfig,
    "hardware": HardwareConfig,
    "launcher": LauncherConfig,
    "objective": ObjectiveConfig,
}


_REGISTERED: list[Any] = []  # what register() stored last: the ConfigStore and the user presets' stamp


def register() -> None:
    """Stores the schemas and the user's presets in Hydra's ConfigStore (idempotent). Storing converts every schema
    (~0.1 s): it is done again only when the user presets changed (``ftc calibrate`` writing a profile)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    stamp = (id(cs), _user_presets_stamp())
    if _REGISTERED == [stamp]:
        return
    cs.store(name="base_config", node=Config)
    for group, schema in GROUPS.items():
        cs.store(group=group, name=f"base_{group}", node=schema)
    _register_user_presets(cs)
    _REGISTERED[:] = [stamp]


def _user_presets_stamp() -> tuple:
    found = []
    for group in USER_GROUPS:
        for path in sorted((user_config_dir() / group).glob("*.yaml")):
            try:
                found.append((str(path), path.stat().st_mtime_ns))
            except OSError:
                continue
    return (str(user_config_dir()), tuple(found))


USER_GROUPS = ("hardware", "launcher")  # groups whose options a user may add in the ftc config dir


def user_config_dir() -> Path:
    """$FTC_CONFIG_DIR, default ~/.config/ftc (XDG): where ``ftc calibrate`` writes hardware profiles and where a
    user keeps presets of their own (``hardware/<name>.yaml``, ``launcher/<name>.yaml``)."""
    import os

    root = os.environ.get("FTC_CONFIG_DIR") or Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "ftc"
    return Path(root).expanduser()


def _register_user_presets(cs) -> None:
    """Options of ``USER_GROUPS`` from the user config dir, usable as ``hardware=<name>`` / ``launcher=<name>`` next
    to the shipped ones. A file that is not valid YAML, or has keys or values the schema refuses, is skipped with one
    line naming the file and the problem: it must not stop the commands that do not use it."""
    import sys

    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for group in USER_GROUPS:
        schema = GROUPS[group]
        for path in sorted((user_config_dir() / group).glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text()) or {}
                if not isinstance(data, dict):
                    raise ValueError(f"expected a mapping of {group} fields, got {type(data).__name__}")
                data.pop("defaults", None)
                node = OmegaConf.merge(OmegaConf.structured(schema), data)
            except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as e:
                reason = " ".join(str(e).split())[:300]
                print(f"ftc: skipping {path} ({group}={path.stem} unavailable): {reason}", file=sys.stderr)
                continue
            cs.store(group=group, name=path.stem, node=node)
