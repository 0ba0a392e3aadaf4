"""Base vs tuned on the same held-out test prompts: completion loss / perplexity, exact match, ROUGE-L."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from ftc.config.objectives import TRAINERS
from ftc.data.formats import FORMATS
from ftc.plan import Plan


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def exact_match(prediction: str, reference: str) -> float:
    return float(_norm(prediction) == _norm(reference))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over whitespace tokens (longest common subsequence)."""
    p, r = _norm(prediction).split(), _norm(reference).split()
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def answer(example: dict[str, Any]) -> str:
    """What a generation is scored against: the completion, or for a chat row its assistant message. (The chat
    completion trained on ends with the template's end-of-turn text, e.g. ``<|im_end|>\n``, which generation, decoded
    without special tokens, never shows: no chat answer could match it exactly.)"""
    return example["messages"][-1]["content"] if "messages" in example else example["completion"]


def answer_metrics(predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact match and ROUGE-L of greedy ``predictions`` against each example's ``answer``, with the predictions."""
    n = max(len(examples), 1)
    return {"exact_match": sum(exact_match(p, answer(e)) for p, e in zip(predictions, examples)) / n,
            "rouge_l": sum(rouge_l(p, answer(e)) for p, e in zip(predictions, examples)) / n,
            "samples": len(examples), "predictions": predictions}


def completion_loss(model: Any, dataset: Any, pad_id: int, batch_size: int = 16) -> float:
    """Mean cross-entropy per completion token (the prompt is masked, as in training)."""
    import torch

    if dataset is None or len(dataset) == 0:
        return float("nan")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start: start + batch_size]
            width = max(len(x) for x in rows["input_ids"])
            ids = torch.full((len(rows["input_ids"]), width), pad_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            attn = torch.zeros_like(ids)
            for i, (seq, mask) in enumerate(zip(rows["input_ids"], rows["completion_mask"])):
                ids[i, : len(seq)] = torch.tensor(seq)
                attn[i, : len(seq)] = 1
                labels[i, : len(seq)] = torch.tensor([t if m else -100 for t, m in zip(seq, mask)])
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += loss.item()
            count += int((shift_labels != -100).sum())
    return total / max(count, 1)


def generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy generation; stops at EOS. Left padding so every prompt ends where generation starts."""
    import torch

    from ftc.data.tokens import tokenize_example

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        batch = [tokenize_example(tokenizer, p, "")[0] for p in prompts[start: start + batch_size]]
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, b in enumerate(batch):
            ids[i, width - len(b):] = torch.tensor(b)
            attn[i, width - len(b):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for row in out[:, width:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return outputs


def score(model: Any, tokenizer: Any, test: list[dict[str, str]], test_tokenized: Any, plan: Plan,
          limit: int | None = None) -> dict[str, Any]:
    """Held-out metrics on the first ``limit`` test examples (default: the plan's eval.max_samples)."""
    examples = test[: limit or plan.eval.max_samples]
    predictions = generate(model, tokenizer, [e["prompt"] for e in examples], plan.eval.max_new_tokens)
    loss = completion_loss(model, test_tokenized, tokenizer.pad_token_id or 0)
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if math.isfinite(loss) and loss < 50 else float("inf"),
        **answer_metrics(predictions, examples),
    }


def score_prompted(model: Any, tokenizer: Any, test: list[dict[str, Any]], shots: list[dict[str, Any]], plan: Plan,
                   limit: int | None = None) -> dict[str, Any]:
    """The prompted baseline's held-out metrics: each test prompt with ``shots`` (training examples) before it
    (``formats.few_shot_prompt``), greedy. A prompt that would not leave room for max_new_tokens in the model's
    context gets fewer examples (counted in ``shots_cut``). No test loss: the completion is scored after a different
    prompt than the tuned model's."""
    from ftc.data.formats import few_shot_prompt

    examples = test[: limit or plan.eval.max_samples]
    context = getattr(model.config, "max_position_embeddings", None) or 10**9
    prompts, cut = [], 0
    for e in examples:
        k = len(shots)
        prompt = few_shot_prompt(e, shots[:k], tokenizer)
        while k and len(tokenizer(prompt)["input_ids"]) + plan.eval.max_new_tokens > context:
            k -= 1
            prompt = few_shot_prompt(e, shots[:k], tokenizer)
        cut += k < len(shots)
        prompts.append(prompt)
    predictions = generate(model, tokenizer, prompts, plan.eval.max_new_tokens)
    return {"loss": None, **answer_metrics(predictions, examples), "shots": len(shots), "shots_cut": cut}


def pair_logps(model: Any, dataset: Any, pad_id: int, batch_size: int = 16,
               sides: tuple[str, ...] = ("chosen_ids", "rejected_ids")) -> tuple[list[float], ...]:
    """Summed log-probabilities of the chosen and of the rejected completion of each pair (or of each ``sides``
    column), given its prompt."""
    import torch

    device = next(model.parameters()).device
    outs: tuple[list[float], ...] = tuple([] for _ in sides)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start: start + batch_size]
            for side, out in zip(sides, outs):
                seqs = [p + c for p, c in zip(rows["prompt_ids"], rows[side])]
                width = max(len(x) for x in seqs)
                ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
                attn = torch.zeros_like(ids)
                for i, x in enumerate(seqs):
                    ids[i, : len(x)], attn[i, : len(x)] = torch.tensor(x), 1
                logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
                logps = torch.log_softmax(logits.float(), -1)
                for i, (p, c) in enumerate(zip(rows["prompt_ids"], rows[side])):
                    positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)
                    out.append(float(logps[i, positions, torch.tensor(c, device=device)].sum()))
    return outs


def _evaluate_labels(plan: Plan, model: Any, tokenizer: Any, splits: Any, limit: int | None = None) -> dict[str, Any]:
    """Labelled answers (data.format=kto) on the held-out rows: the log-likelihood margin of the desirable over the
    undesirable answers, base and tuned, and label accuracy: the share of rows whose implied reward
    beta x (log p_tuned - log p_base) has the sign of its label (KTO's notion of reward)."""
    data = splits.test_tokenized.select(range(min(limit or plan.eval.max_samples, len(splits.test_tokenized))))
    labels = list(data["label"])
    pad = tokenizer.pad_token_id or 0

    def margin(logps: list[float]) -> float:
        good = [v for v, ok in zip(logps, labels) if ok]
        bad = [v for v, ok in zip(logps, labels) if not ok]
        return (sum(good) / max(len(good), 1)) - (sum(bad) / max(len(bad), 1))

    (tuned_logps,) = pair_logps(model, data, pad, sides=("completion_ids",))
    k = min(plan.eval.num_examples_in_report, len(splits.test))
    predictions = generate(model, tokenizer, [e["prompt"] for e in splits.test[:k]], plan.eval.max_new_tokens)
    tuned = {"logp_margin": margin(tuned_logps), "samples": len(labels)}
    base = None
    if "base" in plan.eval.baselines and plan.method.peft:
        def scored() -> dict[str, Any]:
            with model.disable_adapter():
                return {"logps": list(pair_logps(model, data, pad, sides=("completion_ids",))[0])}

        base_logps = base_once(plan, model, splits.test, limit, "labels", scored)["logps"]
        rewards = [plan.objective.beta * (t - b) for t, b in zip(tuned_logps, base_logps)]
        tuned["label_accuracy"] = sum((r > 0) == ok for r, ok in zip(rewards, labels)) / max(len(labels), 1)
        tuned["reward_margin"] = margin(rewards)
        base = {"logp_margin": margin(base_logps), "samples": len(labels)}
    examples = [{"prompt": e["prompt"], "reference": e["completion"] + ("" if e["label"] else "  (undesirable)"),
                 "tuned": predictions[i], "base": None} for i, e in enumerate(splits.test[:k])]
    if base is None:
        verdict = f"tuned: log-likelihood margin desirable - undesirable {tuned['logp_margin']:.2f} (no base)"
    else:
        better = tuned["logp_margin"] > base["logp_margin"]
        head = "tuned separates desirable from undesirable answers more than base" if better else \
            "tuned does NOT beat base"
        verdict = (f"{head}: "
                   f"log-likelihood margin {base['logp_margin']:.2f} -> {tuned['logp_margin']:.2f}, label accuracy "
                   f"{tuned['label_accuracy']:.1%}, reward margin {tuned['reward_margin']:.3f}")
    return {"tuned": tuned, "base": base, "examples": examples, "verdict": verdict}


def score_pairs(model: Any, tokenizer: Any, splits: Any, plan: Plan, limit: int | None = None) -> dict[str, Any]:
    """Preference accuracy (the chosen completion more likely than the rejected one) and the mean log-likelihood
    margin, on the held-out pairs; greedy generations for the report."""
    data = splits.test_tokenized.select(range(min(limit or plan.eval.max_samples, len(splits.test_tokenized))))
    chosen, rejected = pair_logps(model, data, tokenizer.pad_token_id or 0)
    n = max(len(chosen), 1)
    k = min(plan.eval.num_examples_in_report, len(splits.test))
    predictions = generate(model, tokenizer, [e["prompt"] for e in splits.test[:k]], plan.eval.max_new_tokens)
    return {"preference_accuracy": sum(c > r for c, r in zip(chosen, rejected)) / n,
            "logp_margin": sum(c - r for c, r in zip(chosen, rejected)) / n, "samples": len(chosen),
            "predictions": predictions, "_logps": (chosen, rejected)}


def _at_start(plan: Plan, model: Any, scoring: Any) -> dict[str, Any] | None:
    """How the adapter training started from (model.adapter) scores, loaded beside the tuned one; None without one."""
    if not (plan.model.adapter and plan.method.peft):
        return None
    model.load_adapter(plan.model.adapter, adapter_name="start")
    model.set_adapter("start")
    try:
        return scoring()
    finally:
        model.set_adapter("default")


def _evaluate_pairs(plan: Plan, model: Any, tokenizer: Any, splits: Any, limit: int | None = None) -> dict[str, Any]:
    tuned = score_pairs(model, tokenizer, splits, plan, limit)
    start = _at_start(plan, model, lambda: score_pairs(model, tokenizer, splits, plan, limit))  # SFT -> DPO
    base = None
    if "base" in plan.eval.baselines and plan.method.peft:
        def scored() -> dict[str, Any]:
            with model.disable_adapter():
                return score_pairs(model, tokenizer, splits, plan, limit)

        base = base_once(plan, model, splits.test, limit, "pairs", scored)
        (tc, tr), (bc, br) = tuned["_logps"], base["_logps"]
        # DPO's implicit reward of the tuned model against the base: beta x the change of the chosen-rejected margin.
        tuned["reward_margin"] = plan.objective.beta * sum((a - b) - (c - d) for a, b, c, d in zip(tc, bc, tr, br)) \
            / max(len(tc), 1)
    examples = [{"prompt": e["prompt"], "reference": e["chosen"], "rejected": e["rejected"],
                 "tuned": tuned["predictions"][i], "base": base["predictions"][i] if base else None}
                for i, e in enumerate(splits.test[: len(tuned["predictions"])])]
    result = {"tuned": _public(tuned), "base": _public(base), "examples": examples,
              "verdict": pair_verdict(tuned, base), **_reused(base)}
    if start:
        result["start"] = _public(start)
        result["verdict"] += (f"; the starting adapter: {start['preference_accuracy']:.1%} "
                              f"(margin {start['logp_margin']:.2f})")
    return result


def pair_verdict(tuned: dict, base: dict | None) -> str:
    if not base:
        return f"tuned: preference accuracy {tuned['preference_accuracy']:.1%} (no base comparison)"
    better = tuned["preference_accuracy"] > base["preference_accuracy"]
    return (f"{'tuned prefers the chosen answers more often than base' if better else 'tuned does NOT beat base'}: "
            f"preference accuracy {base['preference_accuracy']:.1%} -> {tuned['preference_accuracy']:.1%}, "
            f"log-likelihood margin {base['logp_margin']:.2f} -> {tuned['logp_margin']:.2f}, "
            f"reward margin {tuned['reward_margin']:.3f}")


def score_rewards(model: Any, tokenizer: Any, test: list[dict[str, str]], plan: Plan,
                  limit: int | None = None) -> dict[str, Any]:
    """GRPO's rewards (summed with their weights) of the model's greedy completions of the held-out prompts, each
    reward's mean, and exact match."""
    from ftc.data.rewards import build

    examples = test[: limit or plan.eval.max_samples]
    predictions = generate(model, tokenizer, [e["prompt"] for e in examples],
                           min(plan.eval.max_new_tokens, plan.objective.max_completion_length))
    answers = [e["completion"] for e in examples]
    n = max(len(examples), 1)
    per_reward, total = {}, [0.0] * len(predictions)
    for spec in plan.objective.rewards:
        fn, weight = build(dict(spec)), float(spec.get("weight", 1.0))
        values = [v or 0.0 for v in fn(predictions, answer=answers)]
        per_reward[fn.__name__] = sum(values) / n
        total = [t + weight * v for t, v in zip(total, values)]
    return {"reward": sum(total) / n, "rewards": per_reward,
            "exact_match": sum(exact_match(p, a) for p, a in zip(predictions, answers)) / n,
            "samples": len(examples), "predictions": predictions}


def _evaluate_rewards(plan: Plan, model: Any, tokenizer: Any, splits: Any, limit: int | None = None) -> dict[str, Any]:
    """Base, the starting adapter (model.adapter, when GRPO continues an SFT run) and tuned, on the same prompts."""
    tuned = score_rewards(model, tokenizer, splits.test, plan, limit)
    start = _at_start(plan, model, lambda: score_rewards(model, tokenizer, splits.test, plan, limit))
    base = None
    if "base" in plan.eval.baselines and plan.method.peft:
        def scored() -> dict[str, Any]:
            with model.disable_adapter():
                return score_rewards(model, tokenizer, splits.test, plan, limit)

        base = base_once(plan, model, splits.test, limit, "rewards", scored)
    k = min(plan.eval.num_examples_in_report, len(tuned["predictions"]))
    examples = [{"prompt": e["prompt"], "reference": e["completion"], "tuned": tuned["predictions"][i],
                 "base": (start or base)["predictions"][i] if (start or base) else None}
                for i, e in enumerate(splits.test[:k])]
    before, name = (start, "the starting adapter") if start else (base, "base")
    if before is None:
        verdict = f"tuned: mean reward {tuned['reward']:.3f} (no comparison)"
    else:
        better = tuned["reward"] > before["reward"]
        verdict = (f"{'tuned earns more reward than ' + name if better else 'tuned does NOT beat ' + name}: mean "
                   f"reward {before['reward']:.3f} -> {tuned['reward']:.3f}, exact match {before['exact_match']:.1%} "
                   f"-> {tuned['exact_match']:.1%}")
    result = {"tuned": _public(tuned), "base": _public(base), "examples": examples, "verdict": verdict,
              **_reused(base)}
    if start:
        result["start"] = _public(start)
    return result


def evaluate_run(plan: Plan, run_dir: str, limit: int | None = None) -> dict[str, Any]:
    """Scores the tuned model loaded from ``run_dir`` and, with PEFT, the base via disable_adapter, on the first
    ``limit`` test examples (default: the plan's eval.max_samples; ``ftc eval RUN_DIR max_samples=N``)."""
    from ftc.runtime.data import build
    from ftc.runtime.model import load_base_model, load_tuned

    model, tokenizer = load_tuned(plan, run_dir)
    splits = build(plan.data, tokenizer, plan.train.seed)
    evaluation = TRAINERS[plan.objective.trainer].evaluation
    if evaluation == "pairs" and FORMATS[plan.data.format].labelled:
        return _evaluate_labels(plan, model, tokenizer, splits, limit)
    if evaluation == "pairs":
        return _evaluate_pairs(plan, model, tokenizer, splits, limit)
    if evaluation == "reward":
        return _evaluate_rewards(plan, model, tokenizer, splits, limit)
    tuned = score(model, tokenizer, splits.test, splits.test_tokenized, plan, limit)

    def untuned(scoring: Callable[[Any], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        """``scoring`` run on the base model: the tuned one with its adapter off, or (full fine-tuning) the base
        loaded again."""
        def scored() -> dict[str, Any]:
            if plan.method.peft:
                with model.disable_adapter():
                    return scoring(model)
            base_model = load_base_model(plan, for_training=False)
            try:
                return scoring(base_model)
            finally:
                del base_model
        return scored

    base = prompted = None
    if "base" in plan.eval.baselines:
        base = base_once(plan, model, splits.test, limit, "sft", untuned(
            lambda m: score(m, tokenizer, splits.test, splits.test_tokenized, plan, limit)))
    shots = splits.shots[: plan.eval.shots]
    if "prompted" in plan.eval.baselines and shots:
        drawn = hashlib.sha256(json.dumps(shots, sort_keys=True).encode()).hexdigest()[:16]
        prompted = base_once(plan, model, splits.test, limit, f"prompted-{drawn}", untuned(
            lambda m: score_prompted(m, tokenizer, splits.test, shots, plan, limit)))
    k = min(plan.eval.num_examples_in_report, len(tuned["predictions"]))
    examples = [
        {"prompt": e["prompt"], "reference": answer(e), "tuned": tuned["predictions"][i],
         "base": base["predictions"][i] if base else None,
         **({"prompted": prompted["predictions"][i]} if prompted else {})}
        for i, e in enumerate(splits.test[:k])
    ]
    result = {"tuned": _public(tuned), "base": _public(base), "examples": examples,
              "verdict": verdict(tuned, base, prompted), **_reused(base)}
    if prompted:
        result["prompted"] = _public(prompted)
        result["shots"] = [{"prompt": s["messages"][-2]["content"] if "messages" in s else s["prompt"],
                            "completion": answer(s)} for s in shots]
    return result


def _public(metrics: dict | None) -> dict | None:
    """A model's metrics as reported: without the per-example predictions and log-probabilities kept for the
    side-by-side examples and the margins."""
    return {k: v for k, v in metrics.items() if k not in ("predictions", "_logps", "_reused")} if metrics else None


def _reused(base: dict | None) -> dict[str, Any]:
    return {"base_reused_from": base["_reused"]} if base and base.get("_reused") else {}


BASE_CACHE_VERSION = 1


def base_once(plan: Plan, model: Any, test: list[dict[str, Any]], limit: int | None, kind: str,
              compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The base model's scores, computed once for the same base weights, test examples and evaluation settings and
    reused after (a sweep's trials share them: each trial re-evaluated the base, 3-4 min a trial on the CPU demo
    against 90 s of training). The key: the base's identity (path, revision, the commit transformers loaded, a local
    directory's files by size and time, its quantization), the test examples themselves, every eval setting, the
    objective's scoring settings and the library versions. A reused result says where it came from
    (``base_reused_from`` in the evaluation)."""
    from importlib.metadata import version

    from ftc.paths import atomic_path, cache_root
    from ftc.runtime.model import model_path

    files = []
    local = Path(model_path(plan.model))
    if local.is_dir():
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in local.iterdir()
                       if p.suffix in (".json", ".safetensors"))
    key = {"v": BASE_CACHE_VERSION, "kind": kind, "path": plan.model.path, "revision": plan.model.revision,
           "commit": getattr(getattr(model, "config", None), "_commit_hash", None), "files": files,
           "quantization": repr(plan.method.quantization), "precision": plan.precision,
           "weights": plan.method.weight_dtype,
           "attention": plan.model.attn_implementation, "eval": repr(plan.eval), "limit": limit,
           "max_length": plan.data.max_length, "objective": [plan.objective.trainer, plan.objective.beta],
           "test": hashlib.sha256(json.dumps(test, sort_keys=True, default=str).encode()).hexdigest(),
           "versions": [version("torch"), version("transformers"), version("peft")],
           "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    entry = cache_root() / "base_eval" / f"{digest}.json"
    if entry.is_file():
        try:
            return {**json.loads(entry.read_text()), "_reused": str(entry)}
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed and replaced
    result = compute()
    with atomic_path(entry) as tmp:
        tmp.write_text(json.dumps(result))
    return result


def verdict(tuned: dict, base: dict | None, prompted: dict | None = None) -> str:
    """The headline: whether tuning beat the base model and, with the prompted baseline, the base model shown
    examples (what the guides say to check before paying for training), by exact match, then the other metrics."""
    if prompted is None:
        return _against_base(tuned, base)
    em = {name: round(m["exact_match"], 3) for name, m in (("tuned", tuned), ("base", base), ("prompted", prompted))
          if m}
    models = [(label, m) for label, m in (("base", base), (f"prompted ({prompted['shots']}-shot)", prompted),
                                          ("tuned", tuned)) if m]
    figures = ", ".join(f"{label} {m['exact_match']:.1%}" for label, m in models)
    rest = "ROUGE-L " + ", ".join(f"{label.split()[0]} {m['rouge_l']:.3f}" for label, m in models)
    if base:
        rest += f"; test loss {base['loss']:.3f} -> {tuned['loss']:.3f}"
    cut = f"; {prompted['shots_cut']} prompts got fewer examples to fit the context" if prompted["shots_cut"] else ""
    over_prompted = em["tuned"] > em["prompted"]
    over_base = "base" not in em or em["tuned"] > em["base"]
    if over_prompted and over_base:
        head = f"tuned beats {'base and ' if base else ''}the base model prompted with {prompted['shots']} examples"
    elif over_base:
        head = (f"tuned beats base but NOT the base model prompted with {prompted['shots']} examples: prompting "
                "alone does as well or better, without training")
    elif over_prompted:
        head = "tuned beats the prompted base but NOT base"
    else:
        head = "tuned does NOT beat base or the prompted base"
    return f"{head}: exact match {figures}; {rest}{cut}"


def _against_base(tuned: dict, base: dict | None) -> str:
    if not base:
        return f"tuned: exact match {tuned['exact_match']:.1%}, loss {tuned['loss']:.3f} (no base comparison)"
    em = f"exact match {base['exact_match']:.1%} -> {tuned['exact_match']:.1%}"
    rest = (f"ROUGE-L {base['rouge_l']:.3f} -> {tuned['rouge_l']:.3f}, test loss {base['loss']:.3f} -> "
            f"{tuned['loss']:.3f}")
    # exact match is the headline (what a task-format run is for); the verdict names the metric that carries it
    if round(tuned["exact_match"], 3) > round(base["exact_match"], 3):
        return f"tuned beats base on {em}; {rest}"
    if round(tuned["exact_match"], 3) < round(base["exact_match"], 3):
        return f"tuned does NOT beat base: {em}; {rest}"
    moved = [name for name, better in (("ROUGE-L", tuned["rouge_l"] > base["rouge_l"] + 1e-3),
                                       ("test loss", tuned["loss"] < base["loss"] - 1e-3)) if better]
    said = f"better only on {' and '.join(moved)}" if moved else "no better on ROUGE-L or test loss either"
    return f"a tie on exact match ({tuned['exact_match']:.1%}): tuned is {said}; {rest}"
