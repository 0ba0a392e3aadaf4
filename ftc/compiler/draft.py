"""The compiler's working state: decisions and derived numbers filled step by step by ``compile`` and read by the
rules. Shared constants of both live here so that neither imports the other's module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from ftc.compiler import estimate as est
from ftc.config.methods import METHODS, Method

if TYPE_CHECKING:
    from ftc.config.schema import Config

# Against published runs it was not fitted to (docs/ESTIMATES.md, "Fit and uncertainty"), the part of a measured
# peak beyond what the parameter counts fix lay between est.MEMORY_BAND[0] and est.MEMORY_BAND[1] times the
# estimate's. Three verdicts follow (``verdict``): a plan fits when even the band's high end is within the device;
# it does not fit when even its low end is not; in between it fits only if the estimate holds (a warning naming the
# fix). The compiler's own choices (micro batch, gradient checkpointing) keep to "fits".
PACKING_FILL = 0.97  # best-fit-decreasing packing fills ~97% of each row on instruction data
AUTO_MAX_LENGTH = 2048  # data.max_length=null: the model's context, capped here (TRL's default is 1024, Axolotl's 2048)


def band(need_gb: float, floor_gb: float = 0.0) -> tuple[float, float]:
    """(low, high) GB around a process-peak estimate: ``floor_gb`` (what the parameter counts alone make certain:
    weights, optimizer state, runtime) as it is, the rest spread by est.MEMORY_BAND."""
    low, high = est.MEMORY_BAND
    floor = min(max(floor_gb, 0.0), need_gb)
    return floor + (need_gb - floor) * low, floor + (need_gb - floor) * high


def uncertain_room(device_gb: float, floor_gb: float) -> float:
    """GB of the estimate's uncertain part that a device holds beside ``floor_gb`` even at the band's high end."""
    return max(device_gb - floor_gb, 0.0) / est.MEMORY_BAND[1]


def verdict(need_gb: float, device_gb: float, floor_gb: float = 0.0) -> str:
    """fits | tight | does_not_fit: the estimate's band against the device. fits: even its high end is within the
    device; does_not_fit: even its low end is not; tight in between (fits only if the estimate holds)."""
    low, high = band(need_gb, floor_gb)
    if high <= device_gb:
        return "fits"
    if low > device_gb:
        return "does_not_fit"
    return "tight"


def safe(mem: est.MemoryEstimate, device_gb: float) -> bool:
    """A memory estimate whose verdict is "fits": what the compiler's own choices and the fixes it offers keep to."""
    return verdict(mem.total / est.GB, device_gb, mem.floor / est.GB) == "fits"


@dataclass
class Draft:
    """Decisions and derived numbers, filled step by step; rules read it."""

    arch: Optional[est.Arch] = None
    arch_values: dict[str, Any] = field(default_factory=dict)
    family: str = "llama"
    peft: bool = True
    """Adapters train (LoRA family); false = every weight trains (method.peft)."""
    method: Method = METHODS["lora"]
    """The method (``config.methods``: what it trains, how the estimators price it), from the method's flags."""
    kind: str = "lora"
    """The method's name (full | lora | qlora | dora): ``memory_at(kind=...)`` tries another."""
    linear_modules: tuple[str, ...] = ()
    prompt_style: str = "raw"
    """How prompts are formatted in training and inference (formats.PROMPT_STYLES)."""
    prompt_styles_seen: tuple[str, ...] = ()
    """The styles of the selected training rows (a rule refuses a mix)."""
    system_prompt: Optional[str] = None
    packages: dict[str, bool] = field(default_factory=dict)
    """Optional packages of the machine the run happens on (hardware.packages, decided): kernels, loggers."""
    examples_per_row: int = 1
    """Training examples a data row gives (KTO: 2 a pair; GRPO: objective.num_generations completions a prompt)."""
    generation: str = ""
    """GRPO: who generates (transformers | vllm | vllm_server)."""
    generation_bytes: float = 0.0
    """GRPO: memory of one generation batch (KV cache + sampling logits)."""
    generation_s: float = 0.0
    """GRPO: seconds of generation per optimizer step."""
    traced: Optional[tuple[Any, Any]] = None
    """``ftc plan --trace``: (TracedMemory, TracedTime) of the traced step beside the analytic terms."""
    vllm_bytes: float = 0.0
    """GRPO with vLLM: what vLLM holds on its GPU (16-bit weights, KV cache, runtime)."""
    vllm_share: float = 0.0
    """GRPO with vLLM: its gpu_memory_utilization (share of its GPU it pre-allocates)."""
    loss_type: str = ""
    """objective.loss_type, or the trainer's default when unset."""
    baselines: tuple[str, ...] = ()
    """What the evaluation scores beside the tuned model (eval.baselines, those this objective and data allow)."""
    stored_quantization: Optional[str] = None
    """The checkpoint's own quantization (config.json quantization_config.quant_method)."""
    expert_parameters: tuple[str, ...] = ()
    """The model's fused MoE expert parameters (``mlp.experts.gate_up_proj``), as transformers loads them."""
    routers: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    target_parameters: tuple[str, ...] = ()
    """Fused expert parameters PEFT adapts (target_parameters)."""
    dropout: float = 0.0
    """LoRA dropout as the run applies it (0 when experts are adapted: PEFT's ParamWrapper takes none)."""
    adaptable: tuple[str, ...] = ()
    """Linear modules LoRA can be put on by name (the refused ones left out)."""
    refused_targets: dict[str, str] = field(default_factory=dict)
    """Named targets this model cannot have adapted, with why (routers; out_proj/conv1d of Mamba-based models;
    names PEFT remaps to the experts)."""
    unknown_targets: tuple[str, ...] = ()
    trainable: int = 0
    dropout_width: int = 0
    """Elements per token and layer of LoRA's dropped-out input copies (0 without dropout)."""
    attention: str = "sdpa"
    """The attention kernel the run uses (model.attn_implementation, decided)."""
    report_to: tuple[str, ...] = ()
    precision: str = "fp32"
    max_length: int = 0
    """data.max_length, or the value chosen for null."""
    packing: bool = False
    world: int = 1
    zero_stage: int = 0
    strategy: str = "none"
    """none (one worker) | ddp | deepspeed | fsdp: how the workers share the model (compile._world, _strategy)."""
    offload: str = "none"
    """none | optimizer | params (compile._offload)."""
    offload_s: float = 0.0
    """Seconds per optimizer step the offload adds (costing.offload_seconds)."""

    @property
    def weights_sharded(self) -> bool:
        """ZeRO-3 or FSDP over several workers: each holds a shard of the weights and gathers a layer at a time."""
        return self.world > 1 and (self.zero_stage == 3 or self.strategy == "fsdp")

    @property
    def state_shards(self) -> int:
        """Over how many workers the trainable state (gradients, optimizer) is split: ZeRO-2/3 and FSDP shard it."""
        return self.world if self.world > 1 and (self.zero_stage or self.strategy == "fsdp") else 1

    def host_gb(self, mem: "est.MemoryEstimate", gpus_per_node: int) -> float:
        """CPU memory per node that offloaded state takes: every worker of the node keeps its share."""
        return mem.host * min(self.world, gpus_per_node) / est.GB
    checkpointing: bool = False
    micro: int = 1
    grad_accum: int = 1
    train_examples: int = 0
    split_tokens: dict[str, int] = field(default_factory=dict)
    """Tokens per split after truncation, when every selected example was tokenized (else empty)."""
    truncated: int = 0
    """Examples cut to max_length (counted when every selected example was tokenized)."""
    split_examples: dict[str, int] = field(default_factory=dict)
    """Examples per split (train, validation, test) after dropping, as the data pipeline makes them."""
    dropped_rows: dict[str, int] = field(default_factory=dict)
    """Rows the data pipeline will drop: empty, duplicates."""
    tokens_per_example: int = 0
    longest_example: int = 0
    sequences_per_epoch: int = 0
    steps: int = 0
    epochs: float = 0.0
    sequences_per_example: int = 1
    """2 for preference pairs (chosen and rejected)."""
    reference_forwards: int = 0
    """DPO: one forward without gradient per sequence for the reference log-probabilities."""
    max_prompt_length: int = 0
    loss: str = "selective"
    """selective | liger | model | trl (train.loss decided)."""
    loss_recompute: bool = True
    loss_share: float = 1.0
    """Share of positions the loss counts: where the selective loss runs the output head."""
    logit_transform: Optional[str] = None
    """A config.json key by which the architecture changes its logits (soft-capping, scaling), if any."""
    memory: Optional[est.MemoryEstimate] = None
    memory_at: Optional[Callable[..., est.MemoryEstimate]] = None
    """(micro, checkpointing, seq=, kind=) -> the estimate with those changed: how the rules test a fix."""
    hours: float = 0.0
    baseline_hours: float = 0.0
    """Of the evaluation's hours, the baselines' (the base model, prompted or not): paid once by runs that share
    the base model, the test set and the eval settings (``ftc.runtime.evaluate.base_once``)."""
    step_s: float = 0.0
    """Predicted seconds of one optimizer step (training only)."""
    usd: float = 0.0
    device_hours: float = 0.0
    decisions: list[str] = field(default_factory=list)

    @property
    def seq_tokens(self) -> float:
        """Real tokens in one training sequence: a packed row's fill, else the mean example."""
        return self.max_length * PACKING_FILL if self.packing else self.tokens_per_example


def weight_dtype(cfg: "Config", draft: Draft) -> str:
    """dtype of the model's weights (the trained ones for full fine-tuning): method.compute_dtype, or auto = the
    run's precision, except fp16 full fine-tuning, which keeps fp32 master weights (fp16 gradients cannot be
    unscaled)."""
    if cfg.method.compute_dtype in est.BYTES:
        return cfg.method.compute_dtype
    if draft.method.full and draft.precision == "fp16":
        return "fp32"
    return draft.precision
