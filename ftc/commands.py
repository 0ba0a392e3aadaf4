"""``ftc eval | generate | merge | export | serve RUN_DIR``: work on a finished (or interrupted) run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ftc.errors import UserError
from ftc.paths import atomic_path
from ftc.plan import Plan


def local_run(location: str) -> str:
    """A run directory on this machine for ``location``: the directory itself, or a run persisted in Ray Train
    storage (``<storage_path>/<run name>``, local or s3://...) fetched once into ftc's cache."""
    import hashlib

    from ftc.paths import cache_root

    if "://" not in location and (Path(location) / "plan.json").is_file():
        return location
    results = f"{location.rstrip('/')}/results"
    try:
        import fsspec

        fs, _, (root,) = fsspec.get_fs_token_paths(results)
        if not fs.exists(f"{root}/plan.json"):
            return location  # not a persisted run: load_plan says what is missing
        target = cache_root() / "runs" / hashlib.sha256(results.encode()).hexdigest()[:16]
        with atomic_path(target) as tmp:
            for remote in fs.find(root):
                local = tmp / remote[len(root):].lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(remote, str(local))
    except (ImportError, OSError, ValueError) as e:
        raise UserError(f"ftc: cannot read the run at {location}: {e}") from None
    print(f"ftc: fetched {results} -> {target}")
    return str(target)


def load_plan(run_dir: str) -> Plan:
    path = Path(run_dir) / "plan.json"
    if not path.is_file():
        raise UserError(f"ftc: {run_dir} is not a run directory (no plan.json)")
    plan = Plan.load(str(path))
    weights = Path(run_dir) / ("adapter" if plan.method.peft else "model")
    if not weights.is_dir():
        raise UserError(f"ftc: {run_dir} has no {weights.name}/ yet: finish or resume the run with "
                        f"`ftc train output_dir={run_dir}`")
    return plan.relocated(str(Path(run_dir).resolve()))


def evaluate(run_dir: str, max_samples: int | None = None) -> dict:
    from ftc.runtime import artifacts
    from ftc.runtime.evaluate import evaluate_run

    run_dir = local_run(run_dir)
    plan = load_plan(run_dir)
    result = evaluate_run(plan, plan.output_dir, max_samples)
    artifacts.atomic_write_json(Path(run_dir) / "eval.json", result)
    for name in ("base", "prompted", "start", "tuned"):
        m = result.get(name)
        if m and name == "prompted":
            print(f"{name:8s} {m['shots']} examples before each prompt  exact match {m['exact_match']:.1%}  "
                  f"ROUGE-L {m['rouge_l']:.3f}  ({m['samples']} samples)")
        elif m and "preference_accuracy" in m:
            print(f"{name:6s} preference accuracy {m['preference_accuracy']:.1%}  log-likelihood margin "
                  f"{m['logp_margin']:.2f}  ({m['samples']} pairs)")
        elif m and "logp_margin" in m:
            print(f"{name:6s} log-likelihood margin (desirable - undesirable) {m['logp_margin']:.2f}  "
                  f"({m['samples']} rows)")
        elif m and "reward" in m:
            print(f"{name:6s} mean reward {m['reward']:.3f}  exact match {m['exact_match']:.1%}  ({m['samples']} "
                  "prompts)")
        elif m:
            print(f"{name:8s} loss {m['loss']:.4f}  ppl {m['perplexity']:.2f}  exact match {m['exact_match']:.1%}  "
                  f"ROUGE-L {m['rouge_l']:.3f}  ({m['samples']} samples)")
    print(result["verdict"])
    return result


def generate(run_dir: str, prompt: str, max_new_tokens: int = 128, base: bool = False,
             system: str | None = None, input: str = "") -> str:  # noqa: A002 - the alpaca field's name
    """Puts the prompt in training's prompt format (``formats.inference_prompt``: the alpaca template with
    ``input``, the chat template with training's shared system prompt unless ``system`` is given, or raw) and
    generates greedily."""
    from ftc.data.formats import RowError, inference_prompt
    from ftc.runtime.evaluate import generate as gen
    from ftc.runtime.model import load_tuned

    plan = load_plan(local_run(run_dir))
    model, tokenizer = load_tuned(plan, plan.output_dir)
    try:
        text = inference_prompt(plan.data.prompt_style, plan.data.template, prompt,
                                plan.data.system_prompt if system is None else system, tokenizer, input)
    except RowError as e:
        raise UserError(f"ftc generate: {e} (fix: leave system= / input= out)") from None
    if base and plan.method.peft:
        with model.disable_adapter():
            out = gen(model, tokenizer, [text], max_new_tokens)[0]
    else:
        out = gen(model, tokenizer, [text], max_new_tokens)[0]
    print(out)
    return out


def merged_model(run_dir: str) -> Path:
    """The run's merged model: ``model/`` of a full fine-tune, else ``merged/`` (merged now when missing or older
    than the adapter)."""
    plan = load_plan(run_dir)
    if not plan.method.peft:
        return Path(run_dir) / "model"
    merged, adapter = Path(run_dir) / "merged", Path(run_dir) / "adapter" / "adapter_model.safetensors"
    if not (merged / "config.json").is_file() or (merged / "config.json").stat().st_mtime < adapter.stat().st_mtime:
        merge(run_dir)
    return merged


def export(run_dir: str, format: str = "gguf", quant: str = "f16") -> str:
    """``format=merged``: ``ftc merge``. ``format=gguf``: merged weights -> GGUF (``quant``) through llama.cpp's
    converter and quantizer, with training's prompt format and stop tokens in its metadata, checked by reading it
    back, and an Ollama Modelfile beside it, in ``RUN_DIR/gguf/<quant>/``."""
    import tempfile

    from ftc.data.tokens import adds_bos
    from ftc.runtime import export as ex
    from ftc.runtime.artifacts import atomic_write_json
    from ftc.runtime.model import load_tokenizer

    if format == "merged":
        return merge(run_dir)
    if format != "gguf":
        raise UserError(f"ftc: export format={format}: expected gguf or merged")
    if quant not in ex.QUANTS:
        raise UserError(f"ftc: export quant={quant}: expected one of {', '.join(ex.QUANTS)}")
    version = ex.llama_cpp_version()  # before any work: the engine is installed
    ex.converter_dir()  # fetched once (it says so on the console), before the libraries' output goes to the log
    run_dir = local_run(run_dir)
    plan = load_plan(run_dir)
    outtype, ftype = ex.QUANTS[quant]
    target = Path(run_dir) / "gguf" / quant
    log = Path(run_dir) / "gguf" / f"export-{quant}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    print(f"ftc: exporting {run_dir} to GGUF {quant}; the libraries' output goes to {log}", file=sys.stderr)
    with ex.library_output_to(log) as say:
        say("ftc: [1/4] merging the adapter into the base model")
        source = merged_model(run_dir)
        tokenizer = load_tokenizer(plan, str(source))
        fmt = ex.prompt_format(plan, tokenizer, adds_bos(tokenizer))
        with atomic_path(target) as tmp, tempfile.TemporaryDirectory(dir=Path(run_dir)) as work:
            tmp.mkdir()
            out = tmp / "model.gguf"
            staged = ex.stage(source, Path(work), fmt)
            converted = out if ftype is None else Path(work) / "model-f16.gguf"
            say(f"ftc: [2/4] converting with llama.cpp's converter (llama-cpp-python {version}) to {outtype}")
            ex.convert(staged, converted, outtype, log)
            if ftype is not None:
                say(f"ftc: [3/4] quantizing to {quant} with llama.cpp's quantizer")
                ex.quantize(converted, out, ftype)
            say("ftc: [4/4] checking the GGUF's metadata against training's tokenizer; writing the Modelfile")
            meta = ex.gguf_metadata(out)
            expected = {"tokenizer.chat_template": fmt.chat_template,
                        "tokenizer.ggml.eos_token_id": tokenizer.eos_token_id,
                        "tokenizer.ggml.add_bos_token": adds_bos(tokenizer)}
            wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
            if wrong:
                raise UserError("ftc: the GGUF does not carry the run's tokenizer settings: " + "; ".join(
                    f"{k} is {got!r}, trained with {want!r}" for k, (got, want) in wrong.items()))
            text, no_template = ex.modelfile(out.name, fmt, tokenizer.eos_token, plan.data.max_length)
            (tmp / "Modelfile").write_text(text)
            if no_template:
                say(f"ftc: warning: the Modelfile has no TEMPLATE: {no_template}")
            atomic_write_json(tmp / "export.json", {
                "format": "gguf", "quant": quant, "file": out.name, "bytes": out.stat().st_size,
                "sha256": ex.sha256(out), "llama_cpp_python": version, "source": str(source),
                "data_format": plan.data.format, "stop": list(fmt.stop), "completion_prefix": fmt.completion_prefix,
                "completion_suffix": fmt.completion_suffix, "probe_prompt": _probe_prompt(plan),
                "ollama_template": no_template is None, "metadata": meta})
    size = (target / "model.gguf").stat().st_size
    print(f"ftc: GGUF {quant} ({size / 1e6:.1f} MB) -> {target / 'model.gguf'}; Ollama: "
          f"`ollama create NAME -f {target / 'Modelfile'}`; serve it: `ftc serve {run_dir} quant={quant}`")
    return str(target / "model.gguf")


def serve(run_dir: str, engine: str = "auto", host: str = "127.0.0.1", port: int = 8000,
          quant: str | None = None) -> int:
    """An OpenAI-compatible endpoint for the run on an existing engine (``ftc.compiler.serve_engine`` decides which)."""
    import importlib.util
    import os

    from ftc.compiler.serve_engine import QUANT_PREFERENCE, ServeFacts, ServeRequest, decide
    from ftc.runtime import serve as sv
    from ftc.runtime.model import model_path

    run_dir = local_run(run_dir)
    plan = load_plan(run_dir)
    run = Path(run_dir)
    vllm = os.environ.get("FTC_VLLM") or (sys.executable if importlib.util.find_spec("vllm") else None)
    if vllm and Path(vllm).name == "vllm":  # the venv's vllm script named: its Python runs the server
        vllm = str(Path(vllm).with_name("python"))
    cuda = False
    if vllm:
        import torch

        cuda = torch.cuda.is_available()
    facts = ServeFacts(run_dir=str(run), gguf=tuple(q for q in QUANT_PREFERENCE
                                                    if (run / "gguf" / q / "model.gguf").is_file()),
                       merged=(run / "merged" / "config.json").is_file(), base=model_path(plan.model), cuda=cuda,
                       vllm=vllm if vllm and Path(vllm).is_file() else None,
                       llama_cpp=importlib.util.find_spec("llama_cpp") is not None,
                       api_key=bool(os.environ.get(sv.API_KEY_ENV)))
    decision = decide(plan, ServeRequest(engine=engine, host=host, port=port, quant=quant), facts)
    for line in decision.decisions:
        print(f"ftc serve: {line}", file=sys.stderr)
    if decision.errors:
        raise UserError("ftc serve: " + "\n  ".join(decision.errors))
    export = json.loads((run / "gguf" / decision.quant / "export.json").read_text()) if decision.quant else {}
    estimate = None
    if plan.serving and plan.serving.engine == decision.engine:
        estimate = plan.serving.stream_tokens_per_s
    elif plan.serving:  # the plan priced serving on the run's profile, with another engine: not comparable here
        print(f"ftc serve: the plan's serving estimate is for {plan.serving.engine} on {plan.hardware.name}; "
              f"this is {decision.engine} here, so the measured rate below stands alone", file=sys.stderr)
    if decision.engine == "llama.cpp":
        prefix, suffix = export.get("completion_prefix"), export.get("completion_suffix", "")
        wrap = None if not prefix else (lambda p: prefix + p + suffix)
        sv.serve_llama_cpp(decision, plan, wrap, estimate, probe_prompt=export.get("probe_prompt", "Hello"),
                           eos_id=export["metadata"]["tokenizer.ggml.eos_token_id"])
        return 0
    from ftc.data.tokens import adds_bos
    from ftc.runtime.export import prompt_format
    from ftc.runtime.model import load_tokenizer

    template = run / "serving_chat_template.jinja"
    tokenizer = load_tokenizer(plan, str(run / "adapter" if plan.method.peft else run / "model"))
    with atomic_path(template) as tmp:
        tmp.write_text(prompt_format(plan, tokenizer, adds_bos(tokenizer)).chat_template)
    return sv.serve_vllm(decision, plan, str(template), estimate, _probe_prompt(plan), tokenizer.eos_token_id)


def _probe_prompt(plan: Plan) -> str:
    """A held-out prompt of the run (the first test example's), for ``ftc serve``'s decode probe."""
    from ftc.runtime.data import selected

    try:
        first = selected(plan.data, plan.train.seed).splits["test"][0].values
    except (IndexError, KeyError, OSError, ValueError):
        return "Hello"
    return str(first.get("instruction") or first.get("prompt") or "Hello")


def merge(run_dir: str, out: str | None = None) -> str:
    """Merges the adapter into the base weights (offline, never under DeepSpeed) and saves safetensors + tokenizer.

    QLoRA adapters merge into the base loaded in the compute dtype (not 4-bit), the standard way to ship them.
    """
    from peft import PeftModel

    from ftc.runtime.model import load_base_model, load_tokenizer, safe_weights

    run_dir = local_run(run_dir)
    plan = load_plan(run_dir)
    if not plan.method.peft:
        raise UserError(f"ftc: {run_dir} was fully fine-tuned; its model/ is already a merged model")
    safe_weights(Path(run_dir) / "adapter")  # before the base loads: a pickled adapter is refused, never unpickled
    base = load_base_model(plan, for_training=False, quantized=False)
    merged = PeftModel.from_pretrained(base, str(Path(run_dir) / "adapter")).merge_and_unload()
    target = Path(out or Path(run_dir) / "merged").resolve()
    with atomic_path(target) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(plan, str(Path(run_dir) / "adapter")).save_pretrained(str(tmp))
    print(f"ftc: merged model (safetensors + tokenizer) -> {target}")
    return str(target)
