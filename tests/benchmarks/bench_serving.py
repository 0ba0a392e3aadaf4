"""The exported GGUFs against the tuned model they came from, and serving speed on this machine (issue 21,
docs/BENCHMARKS.md "Serving").

    python tests/benchmarks/bench_serving.py RUN_DIR > bench_serving.json

RUN_DIR is a finished `ftc train` run of the default experiment with `ftc export RUN_DIR format=gguf quant=Q` done
for each quant to compare. For every held-out test prompt (instruction and input, in training's format) the tuned
model's greedy answer through transformers + PEFT (what `ftc generate` and `ftc eval` run) is compared with each
GGUF's greedy answer through llama.cpp: the share of equal answers, and exact match against the reference. Decode
speed is one stream's tokens/s through llama.cpp (64 tokens, EOS suppressed, after a warm-up), against the plan's
serving estimate (the median of 5 repeats, and their range).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPEATS = 5


def main(run_dir: str) -> dict:
    from llama_cpp import Llama

    from ftc.commands import load_plan
    from ftc.data.formats import alpaca_prompt
    from ftc.runtime.data import selected
    from ftc.runtime.evaluate import generate
    from ftc.runtime.model import load_tuned

    plan = load_plan(run_dir)
    test = [ex.values for ex in selected(plan.data, plan.train.seed).splits["test"]]
    prompts = [alpaca_prompt(v["instruction"], v.get("input", ""), plan.data.template) for v in test]
    references = [v["output"].strip() for v in test]
    model, tokenizer = load_tuned(plan, plan.output_dir)
    start = time.perf_counter()
    tuned = generate(model, tokenizer, prompts, plan.data.max_length)
    result: dict = {"prompts": len(prompts), "transformers": {
        "exact_match": sum(a == r for a, r in zip(tuned, references)) / len(prompts),
        "seconds": round(time.perf_counter() - start, 2)}}
    for gguf in sorted(Path(run_dir, "gguf").glob("*/model.gguf")):
        quant = gguf.parent.name
        llm = Llama(str(gguf), n_ctx=plan.data.max_length * 2, verbose=False, seed=0)
        answers = [llm.create_completion(p, max_tokens=plan.data.max_length, temperature=0)["choices"][0]
                   ["text"].strip() for p in prompts]
        eos = llm.token_eos()
        llm.create_completion(prompts[0], max_tokens=8, temperature=0)  # warm-up
        rates = []
        for _ in range(REPEATS):
            timings = []
            for tokens in (1, 64):
                t = time.perf_counter()
                out = llm.create_completion(prompts[0], max_tokens=tokens, temperature=0,
                                            logit_bias={eos: -100.0})
                timings.append(time.perf_counter() - t)
                assert out["usage"]["completion_tokens"] == tokens
            rates.append(63 / (timings[1] - timings[0]))
        result[quant] = {
            "bytes": gguf.stat().st_size,
            "agreement_with_transformers": sum(a == b for a, b in zip(answers, tuned)) / len(prompts),
            "exact_match": sum(a == r for a, r in zip(answers, references)) / len(prompts),
            "decode_tokens_per_s": round(statistics.median(rates), 1),
            "decode_tokens_per_s_range": [round(min(rates), 1), round(max(rates), 1)],
        }
    result["plan_estimate_tokens_per_s"] = plan.serving.stream_tokens_per_s if plan.serving else None
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=2))
