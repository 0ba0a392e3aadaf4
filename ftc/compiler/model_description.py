"""The model as transformers and PEFT build it, described once per config.json and cached: what the plan reads
instead of hand tables of config keys, module names and expert layouts.

In a child process (``python -m ftc.compiler.model_description``: ``ftc plan`` imports no torch), transformers builds
the causal-LM class of config.json on the meta device (no weights, no memory), PEFT resolves ``all-linear`` on it
(``_maybe_include_all_linear_layers``, the helper ``get_peft_model`` itself uses) and wraps those modules at rank 1,
and the description records what they decided:

- the architecture numbers read through transformers' config object (its ``attribute_map`` knows ``n_head``,
  ``d_model``...; a per-layer list is recorded as its largest entry), and from the instantiated modules where the
  config names none (decoder layers, embedding width, vocabulary);
- every module PEFT wrapped, grouped by the target name that matches it and nothing else (its leaf, or
  ``parent.leaf`` when the leaf is an index such as ``0``), with in+out features; the modules PEFT refuses (Mamba's
  ``out_proj`` and ``conv1d``) and the routers left out, each with why;
- the fused expert parameters (any 3-D parameter, wherever it lives) and their routers;
- each decoder layer's kind, from the classes of its modules: attention (full or sliding), linear attention,
  state-space mixer, mixture of experts, dense MLP;
- the exact parameter count and PEFT's own trainable count at rank 1 (LoRA's count is linear in the rank).

The cache key is config.json's content and the installed transformers and PEFT versions. A repository whose model
needs ``trust_remote_code`` is never built: the description says so and the plan falls back to its tables.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

DESCRIBE_TIMEOUT_S = 300  # a cold import of torch + transformers + peft on a busy 2-core machine takes ~20 s
CACHE_VERSION = 1
STANDARD = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
            "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings")
# The names the expert count and top-k go by in transformers' config classes (read off the configuration_*.py of
# transformers 5.24's MoE models; the description records whichever the model's config has).
EXPERT_COUNT = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_total")
EXPERT_TOP_K = ("num_experts_per_tok", "experts_per_token", "moe_topk", "top_k", "moe_top_k", "num_selected_experts")


@dataclass(frozen=True)
class ModuleGroup:
    """The modules one target name matches (PEFT matches a name against the end of each module's path)."""

    count: int
    in_plus_out: int
    """Sum over the modules of in_features + out_features: LoRA trains r x this."""
    out: int
    params: int
    kind: str
    """The module class's name (Linear, Conv1D...)."""


@dataclass(frozen=True)
class ExpertGroup:
    """One fused expert parameter of every MoE layer (experts x out x in), by its path inside the layer."""

    count: int
    experts: int
    in_plus_out: int
    params: int


@dataclass(frozen=True)
class ModelDescription:
    source: str
    """Who built it: the model class and the transformers and PEFT versions."""
    model_type: str
    config: dict[str, Any]
    """The STANDARD numbers (and num_experts, experts_per_token) as transformers' config object gives them."""
    total_params: int
    linear: dict[str, ModuleGroup]
    """What PEFT's all-linear wraps, by target name."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Linear modules all-linear leaves out, by target name: why (a router, refused by PEFT on this model type)."""
    experts: dict[str, ExpertGroup] = field(default_factory=dict)
    routers: tuple[str, ...] = ()
    layer_kinds: dict[str, int] = field(default_factory=dict)
    """Decoder layers by kind: attention, sliding_attention, linear_attention, ssm, moe, dense_mlp (a layer may have
    two: a mixer and an MLP)."""
    trainable_r1: int = 0
    """PEFT's trainable parameters at rank 1 for ``linear`` and ``experts`` (LoRA's count is r times this)."""
    module_paths: tuple[str, ...] = ()
    """Every module holding a weight of two or more dimensions: target names are checked against these."""
    supports_sdpa: Optional[bool] = None
    """Whether the model class has an SDPA attention path (transformers' ``_supports_sdpa``)."""
    error: Optional[str] = None
    """Why transformers or PEFT could not build it here (the plan then falls back to its tables)."""


def describe(model_dir: str) -> Optional[ModelDescription]:
    """The description of the model whose config.json is in ``model_dir``, from the cache or built once (in a
    child process unless torch is already loaded); None without a config.json."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    return _cached(config.read_bytes())


@functools.lru_cache(maxsize=32)
def _cached(config_bytes: bytes) -> ModelDescription:
    from importlib.metadata import PackageNotFoundError, version

    from ftc.paths import atomic_path, cache_root

    try:
        versions = [version("transformers"), version("peft")]
    except PackageNotFoundError:
        return ModelDescription("", "", {}, 0, {}, error="transformers and PEFT are not installed here")
    h = hashlib.sha256(json.dumps([CACHE_VERSION, *versions]).encode() + config_bytes)
    h.update(Path(__file__).read_bytes())
    entry = cache_root() / "models" / h.hexdigest()[:24]
    if not (entry / "description.json").is_file():
        with atomic_path(entry) as tmp:
            tmp.mkdir(parents=True)
            (tmp / "config.json").write_bytes(config_bytes)
            if "torch" in sys.modules:
                _write(str(tmp), tmp)
            else:
                here = str(Path(__file__).resolve().parents[2])  # the child imports this ftc, whatever its path
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
                       "TRANSFORMERS_VERBOSITY": "error"}
                try:
                    r = subprocess.run([sys.executable, "-m", "ftc.compiler.model_description", str(tmp)], env=env,
                                       capture_output=True, text=True, timeout=DESCRIBE_TIMEOUT_S)
                    reason = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                except subprocess.TimeoutExpired:
                    r, reason = None, f"building it took over {DESCRIBE_TIMEOUT_S} s"
                if r is None or r.returncode != 0 or not (tmp / "description.json").is_file():
                    (tmp / "description.json").write_text(json.dumps({"error": reason[:300]}))
    return _load(json.loads((entry / "description.json").read_text()))


def _load(data: dict[str, Any]) -> ModelDescription:
    if "error" in data:
        return ModelDescription("", "", {}, 0, {}, error=data["error"])
    return ModelDescription(
        source=data["source"], model_type=data["model_type"], config=data["config"],
        total_params=data["total_params"], linear={k: ModuleGroup(**v) for k, v in data["linear"].items()},
        left_out=data["left_out"], experts={k: ExpertGroup(**v) for k, v in data["experts"].items()},
        routers=tuple(data["routers"]), layer_kinds=data["layer_kinds"], trainable_r1=data["trainable_r1"],
        module_paths=tuple(data["module_paths"]), supports_sdpa=data.get("supports_sdpa"))


# --- the child: torch, transformers and PEFT ------------------------------------------------------------------------
def _write(model_dir: str, target: Path) -> None:
    try:
        data = _build(model_dir)
    except Exception as e:  # noqa: BLE001 - a model transformers or PEFT cannot build here: recorded, not raised
        data = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    (target / "description.json").write_text(json.dumps(data))


def _target_name(path: str) -> str:
    """The name PEFT matches this module by and nothing else: its leaf, or ``parent.leaf`` for an index leaf (a
    bare ``0`` would match whole decoder layers, ``layers.0``)."""
    parts = path.split(".")
    name = parts[-1]
    i = len(parts) - 1
    while name.isdigit() and i > 0:
        i -= 1
        name = f"{parts[i]}.{name}"
    return name


def _kinds(layer: Any) -> set[str]:
    kinds = set()
    for _, module in layer.named_modules():
        cls = type(module).__name__
        if re.search(r"DeltaNet|LinearAttention|Lightning|Retention|GatedLinear", cls):
            kinds.add("linear_attention")
        elif re.search(r"Mamba|SSM|Mixer(?!.*Attention)|ShortConv|Rwkv|RWKV|xLSTM|Hyena", cls):
            kinds.add("ssm")
        elif re.search(r"Attention$|Attn$|Attention\d*$", cls):
            kinds.add("attention")
        if re.search(r"Experts$|SparseMoe|MoE|Moe", cls):
            kinds.add("moe")
    return kinds


def _decoder_layers(model: Any, count: Optional[int]) -> list[Any]:
    """The decoder layers: the longest ModuleList of one class (of ``count`` entries when the config says)."""
    import torch

    best: list[Any] = []
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best) and \
                len({type(m).__name__ for m in module}) <= 2 and (count is None or len(module) == count):
            best = list(module)
    return best


def _trainable_r1(config: Any, linear: dict[str, Any], experts: dict[str, Any]) -> int:
    """PEFT's trainable count at rank 1 for these target names, on a model of ``config`` not yet adapted."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    peft = get_peft_model(model, LoraConfig(r=1, target_modules=sorted(linear) or None,
                                            target_parameters=sorted(experts) or None, lora_dropout=0.0))
    return sum(p.numel() for p in peft.parameters() if p.requires_grad)


def fake_weights(model: Any, fake: Any) -> None:
    """Every parameter and buffer of ``model`` (built on the meta device) replaced by a fake CPU tensor of its shape,
    stride and dtype: code paths run as on the CPU, no memory is spent (PEFT cannot wrap inside FakeTensorMode, so
    the model is built and wrapped on meta first)."""
    import torch

    def on_cpu(t: Any) -> Any:
        with fake:
            return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="cpu")

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(on_cpu(p), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = on_cpu(b)


def _enter(inside: list[str], path: str, module: Any, args: Any) -> None:
    inside.append(path)


def _leave(inside: list[str], module: Any, args: Any, output: Any) -> None:
    inside.pop()


def _breaking_targets(config: Any, targets: list[str], experts: list[str], tries: int = 4) -> dict[str, str]:
    """Target names whose LoRA layer breaks the model's forward: a module that is a Linear by class but whose
    forward reshapes its weight (DeepSeek-V4's grouped output projection) gets an adapter of the wrong shape. One
    forward of the adapted model under fake tensors (no memory) names the LoRA layer that raised; it is left out and
    the forward runs again. A failure outside every LoRA layer (a data-dependent op fake tensors cannot run) says
    nothing about the targets."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import LoraLayer
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    broken: dict[str, str] = {}
    targets = list(targets)
    for _ in range(tries):
        if not targets and not experts:
            break
        with torch.device("meta"):
            model = get_peft_model(AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16),
                                   LoraConfig(r=1, target_modules=targets or None, target_parameters=experts or None,
                                              lora_dropout=0.0))
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        fake_weights(model, fake)
        inside: list[str] = []  # the LoRA layers whose forward has started and not finished

        hooks = []
        for path, module in model.named_modules():
            if isinstance(module, LoraLayer) and not type(module).__name__ == "ParamWrapper":
                hooks.append(module.register_forward_pre_hook(functools.partial(_enter, inside, path)))
                hooks.append(module.register_forward_hook(functools.partial(_leave, inside)))
        quiet = logging.getLogger("torch._subclasses.fake_tensor")
        level, quiet.level = quiet.level, logging.CRITICAL  # it logs every refused op at error level
        try:
            with fake:
                ids = torch.zeros((1, 8), dtype=torch.long)
                model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            break
        except Exception as e:  # noqa: BLE001 - which LoRA layer raised, if any, is the finding
            if not inside:
                break
            name = _target_name(inside[-1].replace("base_model.model.", "", 1))
            if name not in targets:
                break
            targets.remove(name)
            broken[name] = (f"LoRA on {name} breaks {config.model_type}'s forward (its module reshapes its weight: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
        finally:
            quiet.setLevel(level)
            for h in hooks:
                h.remove()
    return broken


def _build(model_dir: str) -> dict[str, Any]:
    from importlib.metadata import version

    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    text = config.get_text_config()
    values: dict[str, Any] = {}
    for name in STANDARD:
        value = getattr(text, name, None)
        if isinstance(value, (list, tuple)):  # per layer: the widest layer sizes the peak
            value = max((v for v in value if isinstance(v, (int, float))), default=None)
        values[name] = value if isinstance(value, (int, float, bool)) else None
    embeddings = model.get_input_embeddings()
    values["hidden_size"] = values["hidden_size"] or getattr(embeddings, "embedding_dim", None)
    values["vocab_size"] = values["vocab_size"] or getattr(embeddings, "num_embeddings", None)
    layers = _decoder_layers(model, values["num_hidden_layers"])
    values["num_hidden_layers"] = values["num_hidden_layers"] or len(layers) or None
    values["num_experts"] = next((getattr(text, k) for k in EXPERT_COUNT if isinstance(getattr(text, k, None), int)),
                                 None)
    values["experts_per_token"] = next((getattr(text, k) for k in EXPERT_TOP_K
                                        if isinstance(getattr(text, k, None), int)), None)

    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    experts, blocks = {}, {}
    for path, p in params.items():
        owner = modules.get(path.rsplit(".", 1)[0])
        if p.dim() == 3 and not isinstance(owner, torch.nn.modules.conv._ConvNd) and \
                ("Expert" in type(owner).__name__ or (p.shape[0] == values["num_experts"] and p.shape[0] > 1)):
            # fused experts (experts x out x in), wherever the model keeps them: a parameter of an experts module,
            # or one whose first dimension is the config's expert count (a convolution's kernel, a Mamba mixer's
            # per-head projections or RWKV's mixing coefficients are not experts)
            inner = re.sub(r"^.*?\.\d+\.", "", path, count=1)
            e = experts.get(inner) or {"count": 0, "experts": p.shape[0], "in_plus_out": 0, "params": 0}
            e["count"] += 1
            e["in_plus_out"] += p.shape[1] + p.shape[2]
            e["params"] += p.numel()
            experts[inner] = e
            blocks[path.rsplit(".", 2)[0]] = p.shape[0]  # the MoE block holding the expert container
    if experts and not values["num_experts"]:
        values["num_experts"] = max(e["experts"] for e in experts.values())

    peft_config = _maybe_include_all_linear_layers(LoraConfig(r=1, target_modules="all-linear"), model)
    linear, left_out, routers = {}, {}, set()
    mamba = {"out_proj", "conv1d"} if config.model_type in ("falcon_h1", "mamba", "mamba2", "falcon_mamba",
                                                            "nemotron_h") else set()
    for path in [p for p in modules if p in peft_config.target_modules]:  # in the model's order: q, k, v, o, ...
        module, name = modules[path], _target_name(path)
        parent = path.rsplit(".", 1)[0]
        out = getattr(module, "out_features", None) or getattr(module, "nf", None)
        inp = getattr(module, "in_features", None) or (module.weight.shape[0] if hasattr(module, "nf") else None)
        if any(parent.startswith(b) for b in blocks) and out in blocks.values() and "expert" not in path:
            routers.add(name)
            left_out[name] = "a mixture-of-experts router (it scores experts; adapting it destabilises routing)"
            continue
        if name.split(".")[-1] in mamba:
            left_out[name] = f"PEFT refuses LoRA on {name} of {config.model_type} (Mamba-based)"
            continue
        g = linear.get(name) or {"count": 0, "in_plus_out": 0, "out": 0, "params": 0, "kind": type(module).__name__}
        g["count"] += 1
        g["in_plus_out"] += (inp or 0) + (out or 0)
        g["out"] += out or 0
        g["params"] += module.weight.numel()
        linear[name] = g
    for path, module in modules.items():  # routers that are not linear layers (TopKRouter...)
        if any(path.startswith(b + ".") for b in blocks) and re.search(r"Router|Gate$", type(module).__name__):
            routers.add(_target_name(path))
    kinds: dict[str, int] = {}
    sliding = [str(t) for t in (getattr(text, "layer_types", None) or [])]
    for i, layer in enumerate(layers):
        found = _kinds(layer)
        if "attention" in found and i < len(sliding) and "sliding" in sliding[i]:
            found = (found - {"attention"}) | {"sliding_attention"}
        if "moe" not in found:
            found.add("dense_mlp")
        for k in found:
            kinds[k] = kinds.get(k, 0) + 1
    total = sum(p.numel() for p in params.values())
    shapes = {path: (getattr(m, "in_features", None), getattr(m, "out_features", None), type(m).__name__,
                     getattr(getattr(m, "weight", None), "numel", lambda: 0)()) for path, m in modules.items()}
    peft = get_peft_model(model, LoraConfig(r=1, target_modules=sorted(linear) or None,
                                            target_parameters=sorted(experts) or None, lora_dropout=0.0))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    wrapped: dict[str, dict[str, Any]] = {}  # what PEFT really wrapped (it may rewrite names: MoE conversions)
    for path in peft.base_model.targeted_module_names:
        inp, out, kind, numel = shapes.get(path, (None, None, "", 0))
        if inp is None and hasattr(modules.get(path), "nf"):  # transformers' Conv1D (GPT-2): weight is in x out
            inp, out = modules[path].weight.shape[0], modules[path].nf
        g = wrapped.setdefault(_target_name(path), {"count": 0, "in_plus_out": 0, "out": 0, "params": 0,
                                                    "kind": kind})
        g["count"] += 1
        g["in_plus_out"] += (inp or 0) + (out or 0)
        g["out"] += out or 0
        g["params"] += numel
    if wrapped and set(wrapped) != set(linear):
        for name in set(linear) - set(wrapped):  # asked for, not wrapped: PEFT rewrote the name
            left_out[name] = (f"PEFT rewrites '{name}' to the fused experts on {config.model_type} (its mixture-of-"
                              "experts target mapping), so no module of that name is adapted")
        linear = wrapped
        trainable = _trainable_r1(config, linear, experts)  # for the names training will pass: the ones it wrapped
    broken = _breaking_targets(config, sorted(linear), sorted(experts))
    for name, why in broken.items():
        linear.pop(name, None)
        left_out[name] = why
    if broken:
        trainable = _trainable_r1(config, linear, experts)
    return {"source": f"{type(model).__name__}, transformers {version('transformers')}, peft {version('peft')}",
            "model_type": config.model_type, "config": values, "total_params": total, "linear": linear,
            "left_out": left_out, "experts": experts, "routers": sorted(routers), "layer_kinds": kinds,
            "trainable_r1": trainable, "supports_sdpa": bool(getattr(type(model), "_supports_sdpa", False)),
            "module_paths": [path for path, p in params.items() if p.dim() >= 2 for path in [path.rsplit(".", 1)[0]]]}


if __name__ == "__main__":  # the describing child: python -m ftc.compiler.model_description DIR
    import warnings

    warnings.filterwarnings("ignore")
    _write(sys.argv[1], Path(sys.argv[1]))
