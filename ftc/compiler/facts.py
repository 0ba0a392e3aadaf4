"""Facts the compiler needs from the outside world, gathered once before ``compile``.

This is the only module on the planning path that touches the filesystem: it reads a model's config.json and
checks and measures the rows of local data files (torch-free, with the loader ``ftc train`` uses). ``compile``
stays pure: tests hand it ``Facts`` built by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ftc import secrets
from ftc.compiler.model_description import describe
from ftc.config.launchers import OPTIONAL_PACKAGES
from ftc.data.formats import completion_chars, plain_prompt_completion
from ftc.data.load import RowProblems, checked_rows, data_path
from ftc.errors import DataError
from ftc.paths import resolve_path
from ftc.plan import DataQuality

# Row lengths are measured on the first 32 M characters of a file (every row is still checked).
_SAMPLE_CHARS = 32 * 1024 * 1024


@dataclass(frozen=True)
class DataFacts:
    path: str
    exists: bool
    rows: Optional[int] = None
    mean_chars: Optional[float] = None
    max_chars: Optional[int] = None
    """Longest row (in the sampled part): sizes the worst unpacked batch."""
    error: Optional[str] = None
    """The file as a whole cannot be read (missing, not UTF-8, unsupported type)."""
    remote: bool = False
    empty_rows: int = 0
    """Rows with nothing to learn from (dropped and counted at train time)."""
    completion_share: Optional[float] = None
    """Share of the rows' characters in the completion (what completion-only loss counts), in the sampled part;
    of their tokens when a tokenizer counted them."""
    tokens_mean: Optional[float] = None
    """Mean tokens per example (template, BOS and EOS included), counted with the model's tokenizer.json."""
    tokens_max: Optional[int] = None
    tokens_rows: int = 0
    """Rows the tokenizer counted (the first ``TOKEN_SAMPLE`` of the file)."""
    lengths: tuple[int, ...] = field(default=(), repr=False)
    """Tokens of each counted row (the data card's histogram); empty when no tokenizer counted them."""
    row_chars: tuple[int, ...] = field(default=(), repr=False)
    """Characters of the first ``TOKEN_SAMPLE`` rows (the histogram's estimate without a tokenizer)."""
    problems: tuple[str, ...] = ()
    """Malformed rows (``ftc train`` would refuse the file): the first ones as ``file:line: what``, then how many
    more; rows that ``mapping`` reads are left out."""
    mapping: tuple[tuple[str, str], ...] = ()
    """The ``data.*`` overrides that read the rows lacking their format's fields (the file names them otherwise:
    ``data.fields.instruction=question``), proposed from the file's columns; empty when none is found."""
    mapping_line: Optional[str] = None
    part: Optional[Any] = None
    """data.max_rows: the first rows of a hub split the file holds (``ftc.data.hub_data.Part``)."""
    """What the mapping fixes: how many rows, what they lack, the file's columns."""


@dataclass(frozen=True)
class LinearModule:
    """All linear layers of one name (``q_proj`` in every decoder layer) as read from the weights' header."""

    count: int
    """Instances (typically one per layer)."""
    in_plus_out: int
    """Sum over instances of in_features + out_features: LoRA adds r x this."""
    out: int
    """Sum of out_features: DoRA's magnitude vectors."""
    params: int


@dataclass(frozen=True)
class ExpertParam:
    """One fused expert parameter of every MoE layer (``mlp.experts.gate_up_proj``: experts x out x in) as
    transformers 5 loads it. PEFT adapts it through ``target_parameters``: r x experts x (in + out) per layer."""

    count: int
    """MoE layers holding it."""
    experts: int
    in_plus_out: int
    """Sum over layers of one expert's two matrix dimensions."""
    params: int


@dataclass(frozen=True)
class WeightFacts:
    """What the safetensors header (JSON, no tensor is read) says about a model's parameters, with the names and
    shapes transformers gives them on load (``loaded_shapes``)."""

    total_params: int
    linear: dict[str, LinearModule]
    """Linear layers PEFT's ``all-linear`` wraps, by module name, in the file's order (output head, routers and
    fused experts excluded)."""
    module_paths: tuple[str, ...]
    """Every 2-D weight's module path (``model.layers.0.self_attn.q_proj``): targets are matched against these."""
    experts: dict[str, ExpertParam] = field(default_factory=dict)
    """Fused expert parameters by their path inside a layer (what ``target_parameters`` names)."""
    routers: tuple[str, ...] = ()
    """Module names of the MoE routers (``gate``, ``router``): not linear layers PEFT adapts."""
    unconverted_experts: int = 0
    """Per-expert linears of a family whose load-time layout ftc does not know (conf/families.yaml ``_moe``)."""


@dataclass(frozen=True)
class SelectionFacts:
    """The outcome of ``ftc.data.select`` on the experiment's files, without the rows: what the plan counts."""

    examples: dict[str, int]
    """Examples per split (train, validation, test)."""
    dropped: dict[str, int]
    """By reason (empty, pii, language, duplicates, near_duplicates)."""
    quality: DataQuality
    language_dropped: tuple[str, ...] = ()
    """The first examples data.languages drops (``file:line: fr``)."""
    lengths: dict[str, list[list[int]]] = field(default_factory=dict)
    """Per split, each selected example's tokens before truncation, as training tokenizes it: [prompt, completion]
    ([prompt, chosen, rejected] for preference pairs); empty when no tokenizer file was at hand."""
    prompt_styles: tuple[str, ...] = ()
    """The prompt styles (``formats.PROMPT_STYLES``) of the selected training examples."""
    system_prompt: Optional[str] = None
    """The system message every selected chat-style training example opens with; None when they differ or have
    none."""


@dataclass(frozen=True)
class TraceFacts:
    """A traced training step (``ftc plan --trace``: ftc.runtime.trace): what the real model code saves and computes
    for one micro batch of the plan's shape."""

    micro: int
    """Sequences in the traced micro batch (a preference pair's two sequences count two)."""
    seq: int
    """Tokens per sequence: the length the plan's peak memory is computed at."""
    activations_bytes: float
    """Tensors autograd saved for the backward, the parameters left out (the decoder; the head stays modelled)."""
    flops: float
    """Forward + backward FLOPs of the decoder for the micro batch, recomputation included."""
    seconds: float


@dataclass(frozen=True)
class AdapterFacts:
    """An adapter to start from (model.adapter): where it is and what it was trained on."""

    path: str
    """The adapter directory (a run directory's adapter/)."""
    exists: bool
    base_model: Optional[str] = None
    """The base the adapter was trained on: the run's plan.json model.path, else adapter_config.json's
    base_model_name_or_path."""
    r: Optional[int] = None
    target_modules: tuple[str, ...] = ()


def adapter_facts(path: str) -> AdapterFacts:
    root = Path(resolve_path(path))
    run_plan = root / "plan.json"
    adapter = root / "adapter" if (root / "adapter" / "adapter_config.json").is_file() else root
    config = adapter / "adapter_config.json"
    if not config.is_file():
        return AdapterFacts(path=str(adapter), exists=False)
    try:
        c = json.loads(config.read_text())
        base = json.loads(run_plan.read_text())["model"]["path"] if run_plan.is_file() else \
            c.get("base_model_name_or_path")
    except (OSError, ValueError, KeyError):
        return AdapterFacts(path=str(adapter), exists=False)
    targets = c.get("target_modules") or ()
    return AdapterFacts(path=str(adapter), exists=True, base_model=base, r=c.get("r"),
                        target_modules=tuple(sorted(targets)) if not isinstance(targets, str) else (targets,))


@dataclass(frozen=True)
class Facts:
    model_config: Optional[dict[str, Any]] = None
    """The model's config.json when it is on disk (local dir or Hugging Face cache)."""
    weights: Optional[WeightFacts] = None
    """Module names and shapes from the safetensors header, when the weights are on disk."""
    adapter: Optional[AdapterFacts] = None
    """model.adapter, when set."""
    data: dict[str, DataFacts] = field(default_factory=dict)
    """By role: train, validation, test."""
    families: dict[str, Any] = field(default_factory=dict)
    reward_problems: dict[int, str] = field(default_factory=dict)
    """objective.rewards that cannot run, by index: what is wrong (a user function not importable, a bad pattern)."""
    language_codes: tuple[str, ...] = ()
    """The languages the detector knows (read only when data.languages is set)."""
    selection: Optional[SelectionFacts] = None
    """The data selection ``ftc train`` will make (ftc.data.select), when every data file is local and well-formed."""
    trace: Optional[TraceFacts] = None
    """A traced step of this plan (``ftc plan --trace``), shown beside the analytic estimate."""
    tokenizer: Optional[str] = None
    """The tokenizer the plan counts tokens with (``training_tokenizer``): the class transformers builds and its
    version, or why it is tokenizer.json as it is; None without a tokenizer on disk."""
    description: Optional[Any] = None
    """The model as transformers and PEFT build it (``model_description.ModelDescription``), when config.json is on
    disk: the architecture's numbers and modules come from it before any table."""
    trainer_fields: Optional[frozenset[str]] = None
    """The keywords the objective's TRL config class accepts (read from the installed TRL's source,
    ``library_source``); None when TRL is not installed here."""
    weights_missing: Optional[str] = None
    """The hub id whose weights are not on disk yet (``ftc train`` downloads them); None when they are, or the model
    is not a hub id."""
    packages: dict[str, bool] = field(default_factory=dict)
    """Optional packages installed here (``importlib.util.find_spec``, nothing imported): flash_attn, liger_kernel,
    tensorboard, wandb, mlflow. The compiler decides kernels and loggers from them."""


@functools.lru_cache(maxsize=1)
def load_families() -> dict[str, Any]:
    """conf/families.yaml, read once per process (a sweep compiles many trials); callers do not change it."""
    from importlib.resources import files

    import yaml

    return yaml.safe_load(files("ftc.conf").joinpath("families.yaml").read_text())


def find_model_dir(path: str, revision: Optional[str] = None) -> Optional[Path]:
    """A local model directory, the Hugging Face cache's snapshot of a hub id at ``revision`` (huggingface_hub
    resolves the ref; nothing is downloaded), or the config.json ftc ships for a catalog hub id: the directory
    holding config.json."""
    from ftc import hub, pretrained

    if path in pretrained.BUILT_IN:
        return pretrained.model_dir(path)
    if path.startswith("ftc:"):
        return None
    local = Path(path).expanduser()
    if (local / "config.json").is_file():
        return local
    if not hub.is_hub_id(path):
        return None
    cached = hub.cached_snapshot(path, revision)
    if cached is not None:
        return cached
    # not downloaded: the config.json ftc ships for the catalog's hub ids (ftc/assets/models/<org>--<name>)
    shipped = Path(resolve_path("ftc:models/" + path.replace("/", "--")))
    if (shipped / "config.json").is_file():
        return shipped
    return hub.fetch_config(path, revision)[0]  # any other id: its config and tokenizer, never its weights


def find_model_config(path: str) -> Optional[dict]:
    """config.json from a local model directory or the Hugging Face cache (no download)."""
    found = find_model_dir(path)
    try:
        return json.loads((found / "config.json").read_text()) if found else None
    except (OSError, ValueError):
        return None


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: 8 bytes of little-endian length, then the JSON (no tensor is read)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size < 1 << 30:
            raise ValueError(f"{path}: not a safetensors file")
        return json.loads(f.read(size))


# 2-D weights that are lookup tables, not linear layers (PEFT's all-linear skips them).
_EMBEDDINGS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type_embeddings")
_HEADS = ("lm_head", "embed_out", "output")


# Tensors stored with the weights that load as buffers, not parameters (DeepSeek-V3's router bias correction).
_BUFFERS = ("e_score_correction_bias",)
_PER_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")


def moe_pattern(families: dict[str, Any], model_type: Optional[str]) -> Optional[str]:
    """The conversion pattern transformers loads a model type's experts with (``mixtral``, ``qwen2_moe``, ...)."""
    return families.get("_moe_pattern", {}).get(model_type, model_type)


def moe_rules(families: dict[str, Any], model_type: Optional[str]) -> Optional[dict[str, Any]]:
    """The stored -> loaded conversion of a model type's experts (conf/families.yaml ``_moe``), or None."""
    return families.get("_moe", {}).get(moe_pattern(families, model_type))


def loaded_shapes(stored: dict[str, list[int]], rules: Optional[dict[str, Any]]) -> tuple[dict[str, list[int]], int]:
    """Tensor names and shapes as transformers loads a checkpoint: the family's renames applied, and per-expert
    linears (``<block>.experts.<i>.<leaf>.weight``, out x in) fused into ``<block>.experts.<target>`` of shape
    experts x (summed out) x in. Returns them with the count of per-expert linears no rule converts."""
    rename = (rules or {}).get("rename", {})
    fuse = {leaf: target for target, leaves in (rules or {}).get("fuse", {}).items() for leaf in leaves}
    out: dict[str, list[int]] = {}
    fused: dict[str, dict[int, int]] = {}  # target -> expert index -> summed out features
    inner: dict[str, int] = {}
    unconverted = 0
    for name, shape in stored.items():
        for old, new in rename.items():
            name = name.replace(old, new)
        if name.endswith("_scales") and name[: -len("_scales")] + "_blocks" in stored:
            continue  # MXFP4's per-32 scales: part of the parameter, not one
        if name.endswith("_blocks") and len(shape) == 4:
            # MXFP4 (gpt-oss): experts x out x blocks x 16 bytes, two 4-bit values a byte; loads as experts x out x
            # in (dequantized for training: PEFT trains no MXFP4 weights)
            name, shape = name[: -len("_blocks")], [shape[0], shape[1], shape[2] * shape[3] * 2]
        m = _PER_EXPERT.match(name)
        if m and len(shape) == 2:
            block, index, leaf = m.group(1), int(m.group(2)), m.group(3)
            if leaf in fuse:
                target = f"{block}.{fuse[leaf]}"
                experts = fused.setdefault(target, {})
                experts[index] = experts.get(index, 0) + shape[0]
                inner[target] = shape[1]
                continue
            unconverted += 1
        out[name] = list(shape)
    for target, experts in fused.items():
        out[target] = [len(experts), max(experts.values()), inner[target]]
    return out, unconverted


def _inner_path(name: str) -> str:
    """A parameter's path inside its layer: ``model.layers.3.mlp.experts.down_proj`` -> ``mlp.experts.down_proj``."""
    return re.sub(r"^.*?\.\d+\.", "", name, count=1)


def weight_facts(model_dir: Optional[Path], vocab_size: Optional[int], rules: Optional[dict[str, Any]] = None
                 ) -> Optional[WeightFacts]:
    """Linear module names and shapes, fused expert parameters and routers, and the exact parameter count, from
    the safetensors header(s), named as transformers loads them (``rules``: the family's ``_moe`` entry)."""
    if model_dir is None:
        return None
    index = model_dir / "model.safetensors.index.json"
    try:
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = [p.name for p in sorted(model_dir.glob("*.safetensors"))]
        tensors: dict[str, Any] = {}
        for name in files:
            tensors.update(safetensors_header(model_dir / name))
    except (OSError, ValueError, KeyError):
        return None
    tensors.pop("__metadata__", None)
    if not tensors:
        return None
    shapes, unconverted = loaded_shapes({k: v.get("shape", []) for k, v in tensors.items()}, rules)
    total, linear, paths, experts = 0, {}, [], {}
    for name, shape in shapes.items():
        if name.endswith(_BUFFERS):
            continue
        total += math.prod(shape)
        if len(shape) == 3 and ".experts." in name and not name.endswith(".weight"):
            path = _inner_path(name)
            e = experts.get(path) or ExpertParam(0, shape[0], 0, 0)
            experts[path] = ExpertParam(e.count + 1, shape[0], e.in_plus_out + shape[1] + shape[2],
                                        e.params + math.prod(shape))
    blocks = {name.rsplit(".experts.", 1)[0]: shape[0] for name, shape in shapes.items()
              if len(shape) == 3 and ".experts." in name}
    routers = set()
    for name, shape in shapes.items():
        numel = math.prod(shape)
        if len(shape) != 2 or not name.endswith(".weight"):
            continue
        module = name[: -len(".weight")]
        parent, leaf = module.rsplit(".", 1) if "." in module else ("", module)
        paths.append(module)
        if blocks.get(parent) == shape[0]:  # experts x hidden beside the block's experts: the router
            routers.add(leaf)
            continue
        if leaf in _HEADS or (vocab_size and shape[0] == vocab_size and not any(e in leaf for e in _EMBEDDINGS)):
            continue  # the output head: not part of all-linear (PEFT sees it as lm_head whatever it is stored as)
        if any(e in leaf for e in _EMBEDDINGS):
            continue
        m = linear.get(leaf) or LinearModule(0, 0, 0, 0)
        linear[leaf] = LinearModule(m.count + 1, m.in_plus_out + shape[0] + shape[1], m.out + shape[0],
                                    m.params + numel)
    return WeightFacts(total_params=total, linear=linear, module_paths=tuple(paths), experts=experts,
                       routers=tuple(sorted(routers)), unconverted_experts=unconverted)


def weights_from_description(d: Any, header: Optional[WeightFacts]) -> WeightFacts:
    """The modules PEFT wraps, the fused experts and routers as transformers loads them (the description), with the
    header's exact parameter count when the weights are on disk."""
    return WeightFacts(
        total_params=header.total_params if header is not None else d.total_params,
        linear={k: LinearModule(g.count, g.in_plus_out, g.out, g.params) for k, g in d.linear.items()},
        module_paths=d.module_paths,
        experts={k: ExpertParam(g.count, g.experts, g.in_plus_out, g.params) for k, g in d.experts.items()},
        routers=d.routers)


TOKEN_SAMPLE = 2000  # rows whose tokens are counted exactly when the model's tokenizer.json is on disk


def data_facts(path: str, fmt: str, fields: dict[str, str], template: str = "alpaca",
               tokenizer_file: Optional[str] = None) -> DataFacts:
    """Checks every row of a local file against its format (the same check ``ftc train`` runs) and measures rows
    and characters per row (the first 32 MB); with the model's ``tokenizer_file``, counts the tokens of the first
    ``TOKEN_SAMPLE`` examples exactly (the ``tokenizers`` library: no torch).

    A file is read once per process for the same (contents' size and mtime, format, fields, template, tokenizer):
    ``hardware=auto`` compiles the experiment for every profile and a sweep for every trial."""
    if secrets.find(path):  # refused by rules.secrets_in_config; never sent anywhere
        return DataFacts(path=secrets.mask(path), exists=False, remote="://" in path,
                         error="not read: the path holds credentials")
    try:
        resolved = data_path(path)
    except DataError as e:  # a hub dataset that cannot be had: what is missing and how to get it
        return DataFacts(path=path, exists=False, error=str(e))
    if secrets.find(resolved):  # refused by rules.secrets_in_config; never sent anywhere
        return DataFacts(path=secrets.mask(resolved), exists=False, remote="://" in resolved,
                         error="not read: the path holds credentials")
    if "://" in resolved:
        return _remote_facts(resolved)
    if not Path(resolved).is_file():
        return DataFacts(path=resolved, exists=False, error="no such file")
    stat = Path(resolved).stat()
    tokenizer_stamp = Path(tokenizer_file).stat().st_mtime_ns if tokenizer_file else None
    facts = _local_data_facts(resolved, stat.st_size, stat.st_mtime_ns, fmt, tuple(sorted(fields.items())), template,
                              tokenizer_file, tokenizer_stamp)
    from ftc.data.hub_data import part_of

    return dataclasses.replace(facts, part=part_of(path))


@functools.lru_cache(maxsize=64)
def _local_data_facts(resolved: str, file_size: int, mtime_ns: int, fmt: str, fields: tuple[tuple[str, str], ...],
                      template: str, tokenizer_file: Optional[str], tokenizer_stamp: Optional[int]) -> DataFacts:
    """``data_facts`` of a local file; size and mtimes are in the key so that an edited file is read again."""
    fields = dict(fields)
    problems = RowProblems(resolved, fmt, fields)
    rows = empty = chars = sampled = longest = counted = total = 0
    texts: list[tuple[str, str, int]] = []
    row_chars: list[int] = []
    try:
        for row, values in checked_rows(resolved, fmt, fields, problems):
            rows += 1
            if values is None:
                empty += 1
                continue
            if chars < _SAMPLE_CHARS:
                size = len(json.dumps(row, ensure_ascii=False))  # ~ the row's line: what chars_per_token is measured on
                chars, sampled, longest = chars + size, sampled + 1, max(longest, size)
                c, a = completion_chars(values, fmt)
                counted, total = counted + c, total + a
                if len(row_chars) < TOKEN_SAMPLE:
                    row_chars.append(size)
                if tokenizer_file and len(texts) < TOKEN_SAMPLE:
                    texts.append(plain_prompt_completion(values, fmt, template))
    except DataError as e:
        return DataFacts(path=resolved, exists=True, error=str(e).removeprefix(resolved + ": "))
    facts = DataFacts(path=resolved, exists=True, rows=rows + problems.count,
                      mean_chars=chars / sampled if sampled else 0.0, max_chars=longest, empty_rows=empty,
                      completion_share=counted / total if total else None,
                      problems=tuple(problems.lines(with_mapping=False)), row_chars=tuple(row_chars),
                      mapping=tuple((problems.mapping() or {}).items()),
                      mapping_line=problems.mapping_line(with_fix=False))
    counts = _count_tokens(tokenizer_file, texts) if texts else None
    if counts:
        lengths, completion = counts
        facts = dataclasses.replace(facts, tokens_mean=sum(lengths) / len(lengths), tokens_max=max(lengths),
                                    tokens_rows=len(lengths), completion_share=completion / sum(lengths),
                                    lengths=tuple(lengths))
    return facts


def _count_tokens(tokenizer_file: str, texts: list[tuple[str, str, int]]) -> Optional[tuple[list[int], int]]:
    """Token lengths of examples as training builds them (BOS + prompt + completion + EOS), and the completion
    tokens in all; None when the ``tokenizers`` library or the file is not usable."""
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer_file)
        prompts = tok.encode_batch([p for p, _, _ in texts], add_special_tokens=False)
        completions = tok.encode_batch([c for _, c, _ in texts], add_special_tokens=False)
    except Exception:  # noqa: BLE001 - any problem: fall back to characters / model.chars_per_token
        return None
    lengths = [len(p.ids) + len(c.ids) + extra + 2 for p, c, (_, _, extra) in zip(prompts, completions, texts)]
    return lengths, sum(len(c.ids) + 1 for c in completions)


@functools.lru_cache(maxsize=64)
def _remote_facts(uri: str) -> DataFacts:
    try:
        import fsspec
    except ImportError:
        return DataFacts(path=uri, exists=False, remote=True, error="fsspec not installed")
    try:
        fs, _, paths = fsspec.get_fs_token_paths(uri)
        if not fs.exists(paths[0]):
            return DataFacts(path=uri, exists=False, remote=True, error="not found")
        return DataFacts(path=uri, exists=True, remote=True)
    except Exception as e:  # noqa: BLE001 - any backend error means "can't check before launch"
        return DataFacts(path=uri, exists=False, remote=True, error=f"{type(e).__name__}: {e}")


def gather(cfg: Any) -> Facts:
    """Facts for a typed or DictConfig experiment."""
    model_dir = find_model_dir(cfg.model.path, getattr(cfg.model, "revision", None)) \
        if _is_set(cfg.model, "path") else None
    model_config = find_model_config(str(model_dir)) if model_dir else None
    text = (model_config or {}).get("text_config", model_config or {})
    families = load_families()
    weights = weight_facts(model_dir, text.get("vocab_size"),
                           moe_rules(families, text.get("model_type") or (model_config or {}).get("model_type")))
    description = describe(str(model_dir)) if model_dir is not None else None
    if description is not None and description.error is None:
        weights = weights_from_description(description, weights)
    tokenizer, tokenizer_what = training_tokenizer(cfg.model, model_dir)
    tokenizer_file = str(Path(tokenizer) / "tokenizer.json") if tokenizer and model_dir else None
    data = {}
    for role, key in (("train", "path"), ("validation", "validation_path"), ("test", "test_path")):
        value = getattr(cfg.data, key, None) if _is_set(cfg.data, key) else None
        if value:
            data[role] = data_facts(value, cfg.data.format, dict(cfg.data.fields), cfg.data.template,
                                   tokenizer_file if role == "train" else None)
    readable = data and all(f.exists and not f.remote and not f.problems and not f.error for f in data.values())
    selection = selection_facts(cfg.data, cfg.train.seed, tokenizer, getattr(cfg.model, "chat_template", None)) \
        if readable else None
    if getattr(cfg.data, "languages", None):
        from ftc.data.quality import language_codes
        codes = language_codes()
    else:
        codes = ()
    adapter = adapter_facts(cfg.model.adapter) if getattr(cfg.model, "adapter", None) else None
    from ftc.data.rewards import check

    rewards = {i: problem for i, r in enumerate(cfg.objective.rewards or ())
               if (problem := check(dict(r)) if isinstance(r, Mapping) else "not a mapping {kind: ...}")}
    from ftc.compiler.library_source import trl_config_fields
    from ftc.config.objectives import TRAINERS

    trainer = TRAINERS.get(getattr(cfg.objective, "trainer", None))
    from ftc import hub

    path = str(cfg.model.path) if _is_set(cfg.model, "path") else ""
    missing = path if hub.is_hub_id(path) and not (model_dir is not None and hub.weights_on_disk(model_dir)) else None
    return Facts(model_config=model_config, weights=weights, adapter=adapter, data=data, families=families,
                 weights_missing=missing,
                 reward_problems=rewards, selection=selection, language_codes=codes,
                 packages=installed_packages(), tokenizer=tokenizer_what, description=description,
                 trainer_fields=trl_config_fields(trainer.trl) if trainer and cfg.train.trainer_kwargs else None)


SELECTION_CACHE_VERSION = 1


def training_tokenizer(model: Any, model_dir: Optional[Path]) -> tuple[Optional[str], Optional[str]]:
    """(the directory the plan tokenizes with, what it is): the tokenizer transformers builds for training, saved as
    plain files (``ftc.data.tokens.described``); the model's tokenizer.json as it is when transformers cannot build
    one here; (None, None) without a tokenizer on disk."""
    from ftc.data.tokens import described

    raw = tokenizer_dir(model, model_dir)
    if raw is None:
        return None, None
    built = described(raw)
    if built.directory is None:
        return raw, f"tokenizer.json as it is: transformers could not build the tokenizer here ({built.what})"
    return built.directory, built.what


def tokenizer_dir(model: Any, model_dir: Optional[Path]) -> Optional[str]:
    """The directory whose tokenizer.json training will use: the model's, or the built-in tiny model's."""
    if model_dir is None and getattr(model, "path", None) == "ftc:tiny":
        if not getattr(model, "vocab_size", None):  # the tiny model is built from its sizes: none given, no tokenizer
            return None
        from ftc.data.tiny import tokenizer_dir as tiny_tokenizer

        model_dir = tiny_tokenizer(model)
    return str(model_dir) if model_dir is not None and (model_dir / "tokenizer.json").is_file() else None


def selection_facts(data: Any, seed: int, tokenizer: Optional[str] = None, chat_template: Optional[str] = None
                    ) -> Optional[SelectionFacts]:
    """What ``ftc train``'s data selection will keep, drop and find, from the same function (``ftc.data.select``)
    run on the same files with the same settings and seed; None when a file cannot be read as a whole.

    Memoized in the process (a sweep or ``hardware=auto`` compiles many plans) and on disk under the cache root,
    keyed by the files' contents, the settings, the selection's code and the detectors' versions: the MinHash and
    language passes cost seconds on a large file, and a second ``ftc plan`` of the same data does not pay them
    again."""
    from ftc.data.select import Settings

    settings = Settings.of(data, seed)
    local = {p: data_path(p) for _, p in settings.paths}  # a hub split: its file in the cache
    stamps = tuple((p, Path(local[p]).stat().st_size, Path(local[p]).stat().st_mtime_ns) for _, p in settings.paths)
    tokenizer_stamps = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in _tokenizer_files(tokenizer))
    return _selection_facts(settings, stamps, data.template, tokenizer, tokenizer_stamps, chat_template)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def _tokenizer_files(tokenizer: Optional[str]) -> list[Path]:
    return [Path(tokenizer) / n for n in TOKENIZER_FILES if tokenizer and (Path(tokenizer) / n).is_file()]


@functools.lru_cache(maxsize=16)
def _selection_facts(settings: Any, stamps: tuple, template: str, tokenizer: Optional[str],
                     tokenizer_stamps: tuple, chat_template: Optional[str]) -> Optional[SelectionFacts]:
    import hashlib
    from importlib.metadata import version

    from ftc.data import select, tokens
    from ftc.paths import atomic_path, cache_root
    from ftc.plan import _from_jsonable, _to_jsonable

    h = hashlib.sha256(json.dumps([SELECTION_CACHE_VERSION, select.key(settings), version("tokenizers"), template,
                                   chat_template]).encode())
    h.update(Path(tokens.__file__).read_bytes())  # the tokens are counted by this code
    for f in _tokenizer_files(tokenizer):  # with these
        h.update(f.read_bytes())
    entry = cache_root() / "selection" / f"{h.hexdigest()[:24]}.json"
    if entry.is_file():
        try:
            return _from_jsonable(SelectionFacts, json.loads(entry.read_text()))
        except (ValueError, TypeError, KeyError):
            pass  # a damaged or older entry: computed again below and replaced
    facts = _select(settings, template, tokenizer, chat_template)
    if facts is not None:
        with atomic_path(entry) as tmp:
            tmp.write_text(json.dumps(_to_jsonable(facts)))
    return facts


def _select(settings: Any, template: str, tokenizer: Optional[str], chat_template: Optional[str]
            ) -> Optional[SelectionFacts]:
    from ftc.data.engine import engine

    with engine(settings.engine, settings.ray_address) as runs_on:  # the selection's and the token counts'
        return _selected(settings, template, tokenizer, chat_template, runs_on)


def _selected(settings: Any, template: str, tokenizer: Optional[str], chat_template: Optional[str], runs_on: Any
              ) -> Optional[SelectionFacts]:
    from ftc.data.select import cached

    try:
        sel = cached(settings, runs_on)
    except DataError:
        return None  # the per-file facts say what is wrong
    if any(p.count for p in sel.problems.values()):
        return None
    from ftc.data.formats import row_prompt_style, row_system_prompt

    train = sel.splits.get("train") or []
    systems = {row_system_prompt(ex.values) for ex in train}
    lengths = _lengths(sel, settings, template, tokenizer, chat_template, runs_on) if tokenizer else {}
    return SelectionFacts(examples=sel.counts(), dropped=dict(sel.dropped), quality=sel.quality(),
                          language_dropped=tuple(sel.language_dropped.shown), lengths=lengths,
                          prompt_styles=tuple(sorted({row_prompt_style(ex.values, settings.format) for ex in train})),
                          system_prompt=systems.pop() if len(systems) == 1 else None)


def _lengths(sel: Any, settings: Any, template: str, tokenizer: str, chat_template: Optional[str], runs_on: Any
             ) -> dict[str, list[list[int]]]:
    """Every selected example tokenized as ``ftc train`` tokenizes it (``ftc.data.tokens``), with the tokenizer
    training builds (``training_tokenizer``) through the ``tokenizers`` library, a batch at a time on the data
    engine (its workers are sent the tokenizer's files); {} when it cannot be (no chat template for chat rows...),
    and the plan then estimates."""
    import contextlib

    from ftc.data import token_ids
    from ftc.data.formats import FORMATS
    from ftc.data.tokens import BATCH, FileTokenizer, encode_examples, identity, tokenizer_files

    out: dict[str, list[list[int]]] = {}
    try:
        files = tokenizer_files(tokenizer)
        tok = FileTokenizer(tokenizer, chat_template, files)
        shared = (identity(tok), files)
        fmt = FORMATS[settings.format]
        # prompt + completion: the ids go to ftc train (pairs and labelled answers it encodes with prompts apart)
        with contextlib.nullcontext() if fmt.prompt_apart else token_ids.writing(settings, template, tok) as handed:
            for role, examples in sel.splits.items():
                rows = out.setdefault(role, [])
                jobs = ((settings.format, template, chat_template, [ex.values for ex in examples[start:start + BATCH]])
                        for start in range(0, len(examples or ()), BATCH))
                for answers in runs_on.map(encode_examples, jobs, shared=shared):  # one list per answer
                    rows += [[len(ids[0][0])] + [len(c) for _, c in ids] for ids in zip(*answers)]
                    if handed is not None:
                        handed.add(role, answers[0])
    except Exception as e:  # noqa: BLE001 - a tokenizer these cannot read: the plan estimates from characters
        if _cluster_failure(e):
            raise
        return {}
    return out


def _cluster_failure(e: Exception) -> bool:
    """A Ray failure other than the task's own exception (a worker or node lost): not a tokenizer's refusal."""
    if "ray" not in sys.modules:
        return False
    from ray.exceptions import RayError, RayTaskError

    return isinstance(e, RayError) and not isinstance(e, RayTaskError)


def installed_packages() -> dict[str, bool]:
    """The optional packages of *this* machine (the planner's): the target's only when the run happens here."""
    import importlib.util

    return {name: importlib.util.find_spec(name) is not None for name in OPTIONAL_PACKAGES}


def _is_set(node: Any, key: str) -> bool:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return not OmegaConf.is_missing(node, key)
    return getattr(node, key, "???") != "???"
