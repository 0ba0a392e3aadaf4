"""``ftc eval | generate | merge RUN_DIR``: work on a finished (or interrupted) run directory."""

from __future__ import annotations

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
    for name in ("base", "start", "tuned"):
        m = result.get(name)
        if m and "preference_accuracy" in m:
            print(f"{name:6s} preference accuracy {m['preference_accuracy']:.1%}  log-likelihood margin "
                  f"{m['logp_margin']:.2f}  ({m['samples']} pairs)")
        elif m and "logp_margin" in m:
            print(f"{name:6s} log-likelihood margin (desirable - undesirable) {m['logp_margin']:.2f}  "
                  f"({m['samples']} rows)")
        elif m and "reward" in m:
            print(f"{name:6s} mean reward {m['reward']:.3f}  exact match {m['exact_match']:.1%}  ({m['samples']} "
                  "prompts)")
        elif m:
            print(f"{name:6s} loss {m['loss']:.4f}  ppl {m['perplexity']:.2f}  exact match {m['exact_match']:.1%}  "
                  f"ROUGE-L {m['rouge_l']:.3f}  ({m['samples']} samples)")
    print(result["verdict"])
    return result


def generate(run_dir: str, prompt: str, max_new_tokens: int = 128, base: bool = False) -> str:
    """Formats the prompt the way training did (alpaca template / chat template) and generates greedily."""
    from ftc.data.formats import alpaca_prompt
    from ftc.runtime.evaluate import generate as gen
    from ftc.runtime.model import load_tuned

    plan = load_plan(local_run(run_dir))
    model, tokenizer = load_tuned(plan, plan.output_dir)
    if plan.data.format == "alpaca":
        text = alpaca_prompt(prompt, "", plan.data.template)
    elif plan.data.format == "chat":
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt
    if base and plan.method.peft:
        with model.disable_adapter():
            out = gen(model, tokenizer, [text], max_new_tokens)[0]
    else:
        out = gen(model, tokenizer, [text], max_new_tokens)[0]
    print(out)
    return out


def merge(run_dir: str, out: str | None = None) -> str:
    """Merges the adapter into the base weights (offline, never under DeepSpeed) and saves safetensors + tokenizer.

    QLoRA adapters merge into the base loaded in the compute dtype (not 4-bit), the standard way to ship them.
    """
    from peft import PeftModel

    from ftc.runtime.model import load_base_model, load_tokenizer

    run_dir = local_run(run_dir)
    plan = load_plan(run_dir)
    if not plan.method.peft:
        raise UserError(f"ftc: {run_dir} was fully fine-tuned; its model/ is already a merged model")
    base = load_base_model(plan, for_training=False, quantized=False)
    merged = PeftModel.from_pretrained(base, str(Path(run_dir) / "adapter")).merge_and_unload()
    target = Path(out or Path(run_dir) / "merged").resolve()
    with atomic_path(target) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(plan, str(Path(run_dir) / "adapter")).save_pretrained(str(tmp))
    print(f"ftc: merged model (safetensors + tokenizer) -> {target}")
    return str(target)
