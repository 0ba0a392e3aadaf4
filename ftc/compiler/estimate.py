"""Memory, time and cost estimators. Pure arithmetic on architecture numbers; formulas in docs/ESTIMATES.md.

Units: parameters and tokens are counts, memory is bytes until converted by ``gb`` (1 GB = 1e9 bytes, the unit
GPU vendors quote), time is seconds until the Plan turns it into hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

GB = 1e9

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# 4-bit NF4 storage per parameter: 0.5 B of codes + quantization constants. One fp32 absmax per 64 weights
# is 4/64 = 0.0625 B; double quantization stores it in 8 bits with an fp32 constant per 256 blocks:
# 1/64 + 4/(64*256) = 0.0159 B (Dettmers et al. 2023, sec. 3).
NF4_BYTES = 0.5 + 0.0625
NF4_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

# LoRA adapters are fp32 whatever the base dtype (PEFT casts them up: autocast_adapter_dtype): weight 4 + gradient
# 4 + the optimizer's state. Full fine-tuning: the weights (counted as weights, in their dtype) + a gradient of the
# same dtype + the optimizer's state.
ADAPTER_BYTES = 4

# Optimizer state per trainable parameter, by TrainingArguments.optim name: torch's AdamW keeps two moments in the
# parameter's dtype; bitsandbytes' 8-bit optimizers keep 1 B per moment (block-wise quantized; the per-block
# constants are ~0.5%); its 32-bit ones fp32; Lion keeps one moment; Adafactor factors the second moment into a row
# and a column vector (negligible for matrices); SGD without momentum keeps none. Paged optimizers hold the same
# state in CUDA unified memory that can be evicted to the CPU under pressure: counted in full (the peak when nothing
# is evicted).
OPTIMIZER_MOMENTS = {  # name -> (moments, bytes per moment or None = the parameter's dtype)
    "adamw_torch": (2, None), "adamw_torch_fused": (2, None),
    "adamw_anyprecision": (2, None), "adamw_torch_4bit": (2, 0.5), "adamw_torch_8bit": (2, 1),
    "adamw_bnb_8bit": (2, 1), "adamw_8bit": (2, 1), "paged_adamw_8bit": (2, 1),
    "paged_adamw_32bit": (2, 4),
    "lion_8bit": (1, 1), "paged_lion_8bit": (1, 1), "lion_32bit": (1, 4), "paged_lion_32bit": (1, 4),
    "adafactor": (0, None), "sgd": (0, None), "adagrad": (1, None), "rmsprop": (1, None),
}
DEFAULT_OPTIMIZER = "adamw_torch"


def optimizer_state_bytes(optim: str, param_bytes: float) -> float:
    """Bytes of optimizer state per trainable parameter (unknown names: as AdamW, and the rules say so)."""
    moments, per = OPTIMIZER_MOMENTS.get(optim, OPTIMIZER_MOMENTS[DEFAULT_OPTIMIZER])
    return moments * (param_bytes if per is None else per)


# DeepSpeed's ZeRO optimizer (any stage, bf16 or fp16 enabled) trains an fp32 master copy of every trainable
# parameter with fp32 gradients and fp32 optimizer moments, whatever dtype the model's weights are in: 16 B per
# parameter with Adam on top of the 16-bit weight (DeepSpeed's own estimator,
# deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs, counts 18 B = 2 + 16). Without this term,
# full fine-tuning under ZeRO-3 was predicted at half of Qwen's published per-GPU memory (docs/ESTIMATES.md).
DEEPSPEED_MASTER_BYTES = 4 + 4  # fp32 master weight + fp32 gradient


def trainable_bytes_per_param(method: str, optim: str, dtype: str, deepspeed: bool = False) -> float:
    """Gradient + optimizer state (+ the adapter weight itself) per trainable parameter; under DeepSpeed's ZeRO
    optimizer, its fp32 master copy, fp32 gradient and fp32 moments."""
    if deepspeed:
        return DEEPSPEED_MASTER_BYTES + optimizer_state_bytes(optim, 4)
    if method == "full":
        return BYTES[dtype] + optimizer_state_bytes(optim, BYTES[dtype])
    return 2 * ADAPTER_BYTES + optimizer_state_bytes(optim, ADAPTER_BYTES)

# Loss on the logits: the bf16 logits, their fp32 upcast and its gradient (2 + 4 + 4 B), held at once by the
# cross-entropy backward; ~8 B per (token x vocab entry) measured on the tiny model is what we use.
LOGIT_BYTES = 8

CUDA_CONTEXT_GB = 1.0  # CUDA context + cuBLAS/cuDNN workspaces, measured 0.6-1.2 GB on recent drivers
CPU_RUNTIME_GB = 0.75  # process RSS of the default CPU run is 0.83 GB, of which model + activations < 0.1 GB
ALLOCATOR_SLACK = 1.10  # caching-allocator blocks reserved but not in use, on top of the live tensors

# The one fitted factor: measured runs hold more than the tensors counted here (kernel workspaces, temporary
# copies, the allocator's rounding). Fitted by leave-one-source-out over the published runs in tests/evidence
# (tests/evidence/fit.py; docs/ESTIMATES.md, "Fit and uncertainty"): the median over sources of each source's median
# measured/predicted ratio. tests/unit/test_evidence.py holds it equal to what the evidence gives.
MEMORY_FIT = 1.07
# Measured / predicted of the *uncertain part* of every held-out row's peak (each predicted with the factor fitted
# without its own source; the uncertain part is the estimate less its floor, the bytes the parameter counts fix:
# weights, trainable state, ZeRO-3's gathered layers, the runtime): the plan's band spreads that part only, so a
# model whose weights are three quarters of a card is not refused for bytes known exactly. Below the low end no
# measured run lay; above the high end none either. A plan "fits" when the high end is within the device, "does not
# fit" when even the low end is not, and is tight in between. (Spread over whole estimates, the band was 0.79-1.33.)
MEMORY_BAND = (0.17, 1.71)

# Parameters offloaded to the CPU (FSDP's CPU offload) take less off the device than the shard the analytic terms
# move: PEFT's FSDP-QLoRA guide measured Llama-2-70B on 2 GPUs at 35.6 GB a GPU without offload (ftc: 34.1) and
# 19.6 GB with it (ftc's terms without this one: 11.7). What stays is not accounted term by term here (copy buffers,
# the gathered units' padded flat parameters and gradients, the allocator's blocks of both); it is a fixed term of
# live tensors fitted on that one run and checked on another source: Llama-3-70B on 4 x 24 GB at 22 GB a GPU
# (predicted 20.0 GB, -9%; docs/ESTIMATES.md, "How the workers share the model").
OFFLOAD_STAGING_GB = 6.7
HOST_SHARE = 0.8  # of a node's RAM that offloaded state may take (the rest: the processes, pinned copy buffers)

# Tokens per micro-step at which a GPU's matmuls reach half of the profile's utilisation: a GEMM whose token
# dimension is short fills few tensor-core tiles and waves (cuBLAS reaches most of peak only from ~1-2k rows).
# Utilisation = mfu x t / (t + GEMM_HALF_TOKENS): 94% of it at 4,096 tokens per micro-step, 67% at 512.
GEMM_HALF_TOKENS = 256

# Host cost of an eager micro-step that the FLOPs do not show: each adapted module (PEFT's LoRA layer: dtype casts,
# dropout, two skinny matmuls, the scaled add, and as many backward nodes) launches its kernels from Python. Fitted
# on PEFT's method-comparison runs (L40S, Llama-3.2-3B, 4 x ~210 tokens per step): LoRA on q,v (56 modules) vs on
# the three MLP projections (84 modules) differ by 21.6 ms a step, 0.77 ms per module (docs/ESTIMATES.md,
# Evidence). Used on GPUs whose profile has no measured step_overhead_s (ftc calibrate measures it whole).
EAGER_ADAPTER_S = 0.77e-3


def eager_adapter_cost(accelerator: str, peft: bool, step_overhead_s: float) -> bool:
    """Whether a micro-step is charged EAGER_ADAPTER_S per adapted module: adapters on a GPU whose profile has no
    measured fixed cost (``ftc calibrate`` measures the whole of it)."""
    return accelerator == "cuda" and peft and not step_overhead_s

# Optimizer step: memory-bound, so its time is the bytes it moves over the device's bandwidth. Element passes over
# the trainable parameters per step (a pass reads or writes one array the size of the parameters, in their dtype),
# counted from the implementations: torch's foreach AdamW (the Trainer's adamw_torch) runs ~10 kernels (weight decay,
# lerp of m, two updates of v, sqrt / scale / eps on a temporary, addcdiv) = 21 passes; the fused kernels read
# p, g, m, v and write p, m, v once = 7; bitsandbytes' 8-bit kernels move 1-byte moments (~5 passes in the
# parameter's dtype); SGD reads p, g and writes p. Unknown names: as adamw_torch. Clipping the gradient norm reads the
# gradients twice and writes them once (3 passes).
OPTIMIZER_PASSES = {"adamw_torch": 21, "adamw_torch_fused": 7, "paged_adamw_32bit": 7, "lion_32bit": 5,
                    "paged_lion_32bit": 5,
                    "adamw_bnb_8bit": 5, "adamw_8bit": 5, "paged_adamw_8bit": 5, "adamw_torch_8bit": 5,
                    "adamw_torch_4bit": 5, "lion_8bit": 4, "paged_lion_8bit": 4, "adafactor": 12, "sgd": 3,
                    "adagrad": 8, "rmsprop": 8}
CLIP_PASSES = 3
OPTIMIZER_BANDWIDTH_EFFICIENCY = 0.7  # elementwise kernels reach ~70% of the datasheet bandwidth


def optimizer_step_seconds(trainable: float, *, optim: str, param_bytes: float, clip: bool,
                           bandwidth_gbs: Optional[float]) -> float:
    """Seconds of one optimizer step on one device: the bytes it moves over the memory bandwidth (0 when the
    profile states none: CPU profiles are calibrated end to end)."""
    if not bandwidth_gbs or trainable <= 0:
        return 0.0
    passes = OPTIMIZER_PASSES.get(optim, OPTIMIZER_PASSES[DEFAULT_OPTIMIZER]) + (CLIP_PASSES if clip else 0)
    return trainable * passes * param_bytes / (bandwidth_gbs * 1e9 * OPTIMIZER_BANDWIDTH_EFFICIENCY)


QLORA_SLOWDOWN = 0.8  # dequantizing NF4 on every matmul costs ~20% throughput (QLoRA paper, fig. 7; peer reports)
DORA_SLOWDOWN = 0.75  # DoRA's weight-norm recomputation per step
ZERO3_COMM = 0.85  # parameter all-gathers per layer when more than one worker
EVAL_DECODE_MFU = 0.02  # autoregressive decode is memory-bound: a few percent of peak FLOP/s


@dataclass(frozen=True)
class Arch:
    hidden: int
    layers: int
    heads: int
    """Attention heads (0 for an attention-free model: Mamba)."""
    kv_heads: int
    head_dim: int
    intermediate: int
    """MLP width of the dense layers."""
    vocab: int
    tied: bool
    gated_mlp: bool
    exact_total: Optional[int] = None
    """Parameters counted from the weights' header, when on disk (wins over the formula)."""
    exact_linear: Optional[int] = None
    """Parameters of the decoder's linear layers (what 4-bit quantization applies to: fused experts are not
    linear layers), from the header."""
    experts: int = 0
    """Routed experts per MoE layer (0: a dense model)."""
    top_k: int = 0
    """Experts each token is routed to."""
    expert_intermediate: int = 0
    """One routed expert's MLP width."""
    moe_layers: int = 0
    """Layers whose MLP is a mixture of experts (the others are dense)."""
    shared_intermediate: int = 0
    """Summed width of the shared (always active) experts of an MoE layer."""
    exact_experts: Optional[int] = None
    """Parameters of the fused expert tensors, from the header."""
    attention_layers: Optional[int] = None
    """Layers with attention (None: all; hybrid models have state-space layers instead or beside)."""
    ssm_layers: int = 0
    """Layers with a state-space (Mamba) mixer."""
    ssm_inner: int = 0
    """The state-space mixer's inner width (d_inner = expand x hidden)."""
    ssm_state: int = 0
    """Its state size per channel (d_state)."""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_layers(self) -> int:
        return self.layers if self.attention_layers is None else self.attention_layers

    @property
    def mlp_factor(self) -> int:
        return 3 if self.gated_mlp else 2

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear module in one decoder layer, by common name."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {
            "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h),
            "qkv_proj": (h, q + 2 * kv), "gate_up_proj": (h, 2 * i),
            # GPT-2 style: c_attn (h -> 3h), c_proj (both attention and MLP out: counted once as h -> h), c_fc (h -> i)
            "c_attn": (h, 3 * h), "c_proj": (h, h), "c_fc": (h, i),
            # GPT-NeoX / Falcon / Bloom (fused qkv, dense, dense_h_to_4h, dense_4h_to_h), OPT and Phi (fc1, fc2)
            "query_key_value": (h, q + 2 * kv), "dense": (q, h), "dense_h_to_4h": (h, i), "dense_4h_to_h": (i, h),
            "out_proj": (q, h), "fc1": (h, i), "fc2": (i, h),
        }

    def expert_shapes(self) -> dict[str, tuple[int, int]]:
        """The two matrix dimensions of one routed expert's fused parameters, by the name transformers 5 loads."""
        h, e = self.hidden, self.expert_intermediate
        return {"mlp.experts.gate_up_proj": (h, (2 if self.gated_mlp else 1) * e), "mlp.experts.down_proj": (e, h)}

    @property
    def attention_params(self) -> int:
        """One attention layer's projections."""
        return self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim + self.q_dim * self.hidden

    @property
    def ssm_params(self) -> int:
        """One state-space mixer's projections: in_proj (h -> 2 d_inner + 2 d_state) and out_proj (d_inner -> h)."""
        return self.hidden * (2 * self.ssm_inner + 2 * self.ssm_state) + self.ssm_inner * self.hidden

    @property
    def expert_params(self) -> int:
        """All routed experts of all MoE layers: resident in memory whatever the routing."""
        if self.exact_experts is not None:
            return self.exact_experts
        return self.moe_layers * self.experts * self.mlp_factor * self.hidden * self.expert_intermediate

    @property
    def router_params(self) -> int:
        return self.moe_layers * self.experts * self.hidden

    @property
    def active_expert_params(self) -> float:
        """Routed-expert parameters one token runs through: top_k of each MoE layer's experts."""
        return self.expert_params * self.top_k / self.experts if self.experts else 0.0

    @property
    def layer_linear_params(self) -> int:
        """One dense decoder layer's linear parameters."""
        return self.attention_params + self.mlp_factor * self.hidden * self.intermediate

    @property
    def linear_params(self) -> int:
        """Parameters of nn.Linear layers (what bitsandbytes quantizes): attention, dense and shared MLPs, SSM
        projections; not the fused experts or routers."""
        if self.exact_linear is not None:
            return self.exact_linear
        dense = self.layers - self.moe_layers
        return (self.attn_layers * self.attention_params + dense * self.mlp_factor * self.hidden * self.intermediate
                + self.moe_layers * self.mlp_factor * self.hidden * self.shared_intermediate
                + self.ssm_layers * self.ssm_params)

    @property
    def active_params(self) -> float:
        """Decoder parameters a token's forward multiplies by (FLOPs): linear layers, routers and top_k experts."""
        return self.linear_params + self.router_params + self.active_expert_params

    @property
    def layer_params(self) -> float:
        """One layer's parameters, all experts included (ZeRO-3 gathers a whole layer)."""
        return (self.linear_params + self.expert_params + self.router_params) / max(self.layers, 1)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def total_params(self) -> int:
        if self.exact_total is not None:
            return self.exact_total
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.linear_params + self.expert_params + self.router_params + self.embedding_params + norms

    def activation_elements(self) -> tuple[float, float]:
        """Elements per token saved for the backward: summed over layers, and of the largest layer.

        Every layer keeps its residual and norm outputs (4h). Attention layers: q/k/v and the attention output
        (2 q_dim + 2 kv_dim; SDPA saves no s x s score matrix). Dense MLPs: their inputs/outputs (3i gated, 2i
        plain). MoE layers: the router logits (experts), each routed copy of the token (top_k x h) and its expert
        MLP (top_k x 3e), plus the shared experts. State-space layers: in_proj's output (2 d_inner + 2 d_state),
        the convolution and scan outputs and the gate (3 d_inner)."""
        per = {"attn": 2 * self.q_dim + 2 * self.kv_dim,
               "dense": self.mlp_factor * self.intermediate,
               "moe": self.experts + self.top_k * (self.hidden + self.mlp_factor * self.expert_intermediate)
               + self.mlp_factor * self.shared_intermediate,
               "ssm": 5 * self.ssm_inner + 2 * self.ssm_state}
        dense = self.layers - self.moe_layers
        total = (self.layers * 4 * self.hidden + self.attn_layers * per["attn"] + dense * per["dense"]
                 + self.moe_layers * per["moe"] + self.ssm_layers * per["ssm"])
        largest = 4 * self.hidden + (per["attn"] if self.attn_layers else 0) + \
            max(per["dense"] if dense else 0, per["moe"] if self.moe_layers else 0) + \
            (per["ssm"] if self.ssm_layers else 0)
        return total, largest


def lora_params(arch: Arch, targets: tuple[str, ...], r: int, dora: bool, parameters: tuple[str, ...] = ()) -> int:
    """Trainable adapter parameters: r x (in + out) per targeted module per layer (+ out for DoRA magnitudes);
    for each targeted fused expert parameter, r x experts x (in + out) per MoE layer (PEFT's ParamWrapper gives
    every expert its own A and B)."""
    shapes, experts = arch.module_shapes(), arch.expert_shapes()
    per_layer = sum(r * (shapes[t][0] + shapes[t][1]) + (shapes[t][1] if dora else 0) for t in targets)
    per_moe_layer = sum(r * arch.experts * sum(experts[p]) for p in parameters if p in experts)
    return arch.layers * per_layer + arch.moe_layers * per_moe_layer


def weight_bytes(arch: Arch, method: str, dtype: str, double_quant: bool) -> float:
    """Bytes of the (frozen or full) model weights on one device before any sharding."""
    if method == "qlora":
        per = NF4_DOUBLE_QUANT_BYTES if double_quant else NF4_BYTES
        return arch.linear_params * per + (arch.total_params - arch.linear_params) * BYTES[dtype]
    return arch.total_params * BYTES[dtype]


def logit_bytes(arch: Arch, logit_tokens: int) -> float:
    """``LOGIT_BYTES`` per vocabulary entry of each of ``logit_tokens`` positions whose logits exist at once: the
    whole micro batch with the model's own loss, one chunk with the selective loss."""
    return logit_tokens * arch.vocab * LOGIT_BYTES


# Eager attention (architectures without an SDPA path: Gemma-2, gpt-oss, ...) materialises the s x s attention
# probabilities of every head and saves them for the backward: measured with saved-tensor hooks on a tiny Llama
# (fp32, CPU), eager saves 1.5 x 4 B = 6 B per (head x query x key) element and attention layer more than SDPA.
EAGER_SCORE_BYTES = 6


def activation_bytes(arch: Arch, micro: int, seq: int, dtype: str, checkpointing: bool, dropout_width: int,
                     eager_attention: bool = False) -> float:
    """Activations saved for backward for one micro batch of ``micro`` sequences of ``seq`` tokens (the logits are
    ``logit_bytes``).

    Per token and layer without checkpointing (elements): residual + norm outputs (4h), q/k/v and attention output
    (2 q_dim + 2 kv_dim, SDPA saves no s x s score matrix), MLP inputs/outputs (3i gated, 2i plain), and the
    dropped-out copy of each LoRA-targeted module's input (``dropout_width``: the summed input widths of the targeted
    modules when LoRA dropout is on; PEFT uses no dropout module at 0). With checkpointing only each layer's input
    (h) is kept, plus one layer recomputed at a time. Eager attention adds its s x s probabilities per head
    (``EAGER_SCORE_BYTES``) for every attention layer, or one with checkpointing.
    """
    tokens = micro * seq
    act = BYTES[dtype]
    total, largest = arch.activation_elements()
    scores = micro * arch.heads * seq * seq * EAGER_SCORE_BYTES if eager_attention and arch.attn_layers else 0
    if checkpointing:
        return tokens * act * (arch.layers * arch.hidden + largest + dropout_width) + scores
    return tokens * act * (total + arch.layers * dropout_width) + scores * arch.attn_layers


# LoRA on fused experts (PEFT's ParamWrapper) folds W + B A into a new tensor the size of the layer's experts on every
# forward (torch.baddbmm under nn.utils.parametrize), and the expert matmuls save it for the backward: measured on the
# CPU with saved-tensor hooks (a 16-expert Qwen3-MoE, 4 layers), 1.25 x the layer's expert bytes are saved per MoE
# layer beyond what attention-only LoRA saves (docs/ESTIMATES.md, "Mixture of experts"). Its gradient, the same size,
# exists for one layer at a time in the backward (assumed, not measured: no CPU peak-memory counter).
EXPERT_ADAPTER_SAVED = 1.25
EXPERT_ADAPTER_GRAD = 1.0


def expert_adapter_bytes(arch: Arch, dtype: str, checkpointing: bool) -> float:
    """The folded expert copies LoRA on experts keeps: every MoE layer's until the backward, or one layer's when
    gradient checkpointing recomputes them layer by layer; plus one layer's gradient of it."""
    if not arch.moe_layers:
        return 0.0
    layer = arch.expert_params / arch.moe_layers * BYTES[dtype]
    kept = 1 if checkpointing else arch.moe_layers
    return layer * (EXPERT_ADAPTER_SAVED * kept + EXPERT_ADAPTER_GRAD)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float
    trainable: float
    activations: float
    logits: float
    zero3_gather: float
    runtime: float
    expert_adapters: float = 0.0
    """LoRA on fused experts: the folded W + BA copies kept for the backward (``expert_adapter_bytes``)."""
    generation: float = 0.0
    """GRPO: a generation batch's KV cache and sampling logits, held while generating, not during the backward."""
    colocated: float = 0.0
    """GRPO with vLLM colocated: what vLLM pre-allocates on the training GPU, held all run."""
    host: float = 0.0
    """Offload: the bytes one worker keeps in CPU memory instead (its weight shard and/or trainable state); not on
    the device, so in none of the totals."""

    @property
    def counted(self) -> float:
        """The live tensors as counted term by term, before the fitted factor."""
        step = self.activations + self.logits + self.expert_adapters
        return self.weights + self.trainable + self.zero3_gather + max(step, self.generation) + self.colocated

    @property
    def live(self) -> float:
        """Live tensors at the peak (torch.cuda.max_memory_allocated): the counted terms x ``MEMORY_FIT``."""
        return self.counted * MEMORY_FIT

    @property
    def floor(self) -> float:
        """What the process certainly holds, counted from parameter counts alone: weights, trainable state, ZeRO-3's
        gathered layers, a colocated vLLM's pre-allocated share and the runtime. The band's low end never goes
        below it."""
        return self.weights + self.trainable + self.zero3_gather + self.colocated + self.runtime

    @property
    def reserved(self) -> float:
        """What the caching allocator holds at the peak (torch.cuda.max_memory_reserved)."""
        return self.live * ALLOCATOR_SLACK

    @property
    def total(self) -> float:
        """The process peak on the device (nvidia-smi): reserved + CUDA context and workspaces."""
        return self.reserved + self.runtime

    def breakdown_gb(self) -> dict[str, float]:
        live = self.live
        return {
            "weights": round(self.weights / GB, 3),
            "adapters_grads_optimizer": round(self.trainable / GB, 3),
            "activations": round(self.activations / GB, 3),
            "logits": round(self.logits / GB, 3),
            "zero3_gather_buffer": round(self.zero3_gather / GB, 3),
            **({"expert_adapter_copies": round(self.expert_adapters / GB, 3)} if self.expert_adapters else {}),
            **({"generation_kv_cache": round(self.generation / GB, 3)} if self.generation else {}),
            **({"vllm_colocated": round(self.colocated / GB, 3)} if self.colocated else {}),
            **({"offloaded_to_host": round(self.host / GB, 3)} if self.host else {}),
            "fitted_uncounted": round(self.counted * (MEMORY_FIT - 1) / GB, 3),
            "allocator_slack": round(live * (ALLOCATOR_SLACK - 1) / GB, 3),
            "runtime": round(self.runtime / GB, 3),
        }


def memory(
    arch: Arch,
    *,
    method: str,
    dtype: str,
    optim: str,
    double_quant: bool,
    trainable_params: int,
    micro: int,
    seq: int,
    checkpointing: bool,
    logit_tokens: int,
    dropout_width: int,
    world: int,
    zero_stage: int,
    cuda: bool,
    strategy: str = "",
    offload: str = "none",
    expert_adapters: bool = False,
    generation: float = 0.0,
    eager_attention: bool = False,
    colocated: float = 0.0,
) -> MemoryEstimate:
    """Peak memory on one device. ZeRO-3 shards weights, gradients and optimizer over ``world``; ZeRO-2 the last two.
    FSDP (``strategy="fsdp"``) shards all three too, but keeps them in the weights' own dtype (no fp32 master copy),
    4-bit weights included, and gathers a layer at a time (plus the next, prefetched) in their stored bytes."""
    weights = weight_bytes(arch, method, dtype, double_quant)
    per_param = trainable_bytes_per_param(method, optim, dtype, deepspeed=zero_stage > 0)
    trainable = trainable_params * per_param
    gather = 0.0
    if strategy == "fsdp" and world > 1:
        gather = 2 * arch.layer_params * weights / max(arch.total_params, 1)
        weights /= world
        trainable /= world
    elif zero_stage == 3 and world > 1:
        weights /= world
        trainable /= world
        # Two layers' worth of 16-bit parameters gathered at once (current + prefetched).
        gather = 2 * arch.layer_params * BYTES["bf16"]
    elif zero_stage == 2 and world > 1:
        trainable /= world
    host = 0.0
    if offload == "optimizer":  # ZeRO-Offload: master copy and moments step on the CPU; a 16-bit gradient stays
        kept = trainable * BYTES["bf16"] / per_param
        host, trainable = trainable - kept, kept
    elif offload == "params":  # the weight shard and all trainable state too: the device holds the gathered layers
        host, weights, trainable = weights + trainable, OFFLOAD_STAGING_GB * GB, 0.0
    acts = activation_bytes(arch, micro, seq, dtype, checkpointing, dropout_width, eager_attention)
    runtime = (CUDA_CONTEXT_GB if cuda else CPU_RUNTIME_GB) * GB
    experts = expert_adapter_bytes(arch, dtype, checkpointing) if expert_adapters else 0.0
    # (ZeRO-3 gathers a layer's whole experts before the fold: the copies are full size on every worker.)
    return MemoryEstimate(weights, trainable, acts, logit_bytes(arch, logit_tokens), gather, runtime, experts,
                          generation, colocated, host)


def train_flops_per_token(arch: Arch, *, method: str, context: int, checkpointing: bool, head_share: float = 1.0,
                          head_recompute: bool = False, reference_forwards: int = 0) -> float:
    """Training FLOPs per token.

    Decoder forward: 2 FLOPs per weight of every linear layer plus causal attention, 2 x context x q_dim per layer
    (QK^T and AV, halved by the causal mask). Backward: 2x forward for full fine-tuning (input and weight
    gradients); ~1x forward for (Q)LoRA (input gradients through frozen weights; adapter weight gradients are
    negligible). Gradient checkpointing recomputes the decoder forward once. The output head (2 x vocab x hidden
    per position, forward and backward alike) runs on every position with the model's own loss, and only on the
    ``head_share`` of positions the loss counts with the selective loss, which recomputes it in the backward
    (``head_recompute``). DPO adds ``reference_forwards`` forward passes (decoder and head) without gradient.
    """
    backward = 2 if method == "full" else 1
    # MoE: a token runs through its top_k experts, not all (arch.active_params); a state-space layer's scan is
    # ~6 d_inner x d_state per token.
    body = 2 * arch.active_params + 2 * arch.attn_layers * context * arch.q_dim + \
        6 * arch.ssm_layers * arch.ssm_inner * arch.ssm_state
    head = 2 * arch.vocab * arch.hidden
    return body * (1 + backward + (1 if checkpointing else 0)) + \
        head * head_share * (1 + backward + (1 if head_recompute else 0)) + (body + head) * reference_forwards


def utilisation(mfu: float, micro_tokens: float, half_tokens: float) -> float:
    """The profile's utilisation at ``micro_tokens`` tokens per micro-step: mfu x t / (t + half_tokens)."""
    if half_tokens <= 0 or micro_tokens <= 0:
        return mfu
    return mfu * micro_tokens / (micro_tokens + half_tokens)


def tokens_per_second(flops_per_token: float, *, peak_tflops: float, mfu: float, world: int, method: str,
                      gathers: bool, micro_tokens: float = 0.0, half_tokens: float = 0.0) -> float:
    """Whole-job training throughput: world x peak x utilisation / FLOPs per token, with method and comm.
    slowdowns (``gathers``: the weights are sharded, ZeRO-3 or FSDP, and each layer is gathered every pass);
    utilisation falls for short micro-steps (``utilisation``)."""
    rate = world * peak_tflops * 1e12 * utilisation(mfu, micro_tokens, half_tokens) / flops_per_token
    if method == "qlora":
        rate *= QLORA_SLOWDOWN
    if method == "dora":
        rate *= DORA_SLOWDOWN
    if gathers:
        rate *= ZERO3_COMM
    return rate


def eval_seconds(arch: Arch, *, eval_tokens: int, eval_batches: int, generation_batches: int, decode_steps: float,
                 batch: int, weight_bytes_: float, peak_tflops: float, mfu: float, world: int,
                 step_overhead_s: float = 0.0, bandwidth_gbs: Optional[float] = None,
                 decode_gbs: Optional[float] = None) -> float:
    """Validation passes (forward only) plus greedy generation for the base-vs-tuned comparison: ``generation_batches``
    batches of ``batch`` prompts for ``decode_steps`` steps on average, each step ``decode_step_s``."""
    fwd = decode_flops_per_token(arch)
    validation = eval_tokens * fwd / (world * peak_tflops * 1e12 * mfu) + eval_batches * step_overhead_s
    step = decode_step_s(weight_bytes_, batch, fwd, peak_tflops=peak_tflops, bandwidth_gbs=bandwidth_gbs,
                         decode_gbs=decode_gbs)
    return validation + generation_batches * decode_steps * step


def decode_flops_per_token(arch: Arch) -> float:
    """Forward FLOPs of one token: the active parameters and the output head (attention over the cache ignored)."""
    return 2 * (arch.active_params + arch.vocab * arch.hidden)


def decode_step_s(weight_bytes_: float, batch: int, flops_per_token: float, *, peak_tflops: float,
                  bandwidth_gbs: Optional[float], decode_gbs: Optional[float],
                  mfu: Optional[float] = EVAL_DECODE_MFU) -> float:
    """Seconds of one greedy decode step of ``batch`` sequences: the one model the evaluation, GRPO's generation
    and the serving estimate share. Measured on the machine (``ftc calibrate``'s decode_gbs: fixed costs included),
    the step reads every weight at that rate. Otherwise it is the slower of reading every weight at the datasheet
    bandwidth x DECODE_BANDWIDTH_EFFICIENCY (memory-bound: small batches) and computing the batch at ``mfu`` of
    peak (EVAL_DECODE_MFU for the evaluation's generate() and GRPO's sampling, the safe side for vLLM there too);
    the serving estimate (``mfu=None``) takes a serving engine's batched kernels as memory-bound, not measured
    here. The KV cache's reads are left
    out, which holds while it is small against the weights."""
    if decode_gbs:
        return weight_bytes_ / (decode_gbs * 1e9)
    read = weight_bytes_ / (bandwidth_gbs * 1e9 * DECODE_BANDWIDTH_EFFICIENCY) if bandwidth_gbs else 0.0
    return max(read, batch * flops_per_token / (peak_tflops * 1e12 * mfu) if mfu else 0.0)


# Decode kernels reach ~60-80% of peak HBM bandwidth in practice: assumed 0.7 until measured (ftc calibrate's
# decode_gbs replaces bandwidth x efficiency on a measured machine).
DECODE_BANDWIDTH_EFFICIENCY = 0.7
SERVING_BATCH = 32
# GRPO with vLLM: what vLLM holds besides weights and KV cache (CUDA graphs, its profiling run's activations, the
# sampler): ~1-2 GB in vLLM's own start-up log; assumed 2 GB, not measured here (no GPU in these sessions).
VLLM_OVERHEAD_GB = 2.0
# GRPO with a vLLM server on another GPU: TRL broadcasts the merged 16-bit weights to it every step (NCCL);
# PCIe 4.0 x16's ~25 GB/s is assumed (NVLink is faster), not measured here.
WEIGHT_SYNC_GBS = 25.0
VLLM_SERVER_SHARE = 0.9  # trl vllm-serve's default gpu_memory_utilization on its own GPU


