"""Baseline for docs/BENCHMARKS.md: a plain hand-written transformers + peft LoRA loop on the same model, the same
sample data and prompts, the same LoRA settings and batch size, with the usual dynamic padding (pad each batch to
its longest example). Prints real (non-padding) training tokens per second of training time and the peak RSS.

    python tests/benchmarks/baseline_lora.py [--epochs N | --steps N] [--model DIR] [--batch B] [--lr LR]
Not a test: pytest does not collect it. Compare with `ftc train train.epochs=1 eval.enabled=false`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(epochs: int = 1, batch_size: int = 16, lr: float = 2e-3, model_path: str | None = None,
         steps: int | None = None, max_length: int = 128) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.data.formats import alpaca_prompt
    from ftc.paths import package_root
    from ftc.runtime.model import tiny_path
    from tests.conftest import plan_for

    torch.manual_seed(42)
    path = model_path or tiny_path(plan_for([]).model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    rows = [json.loads(x) for x in (package_root() / "assets/sample/train.jsonl").read_text().splitlines()]
    examples = []
    for r in rows:
        p = [tok.bos_token_id] + tok(alpaca_prompt(r["instruction"], r["input"], "alpaca"),
                                     add_special_tokens=False)["input_ids"]
        c = tok(r["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append(((p + c)[:max_length], ([-100] * len(p) + c)[:max_length]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    real_tokens, done = 0, 0
    start = time.time()
    for epoch in range(epochs if steps is None else 10**6):
        random.Random(epoch).shuffle(examples)
        for i in range(0, len(examples), batch_size):
            batch = examples[i: i + batch_size]
            width = max(len(x) for x, _ in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id)
            labels = torch.full((len(batch), width), -100)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (x, y) in enumerate(batch):
                ids[j, : len(x)], labels[j, : len(y)], mask[j, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            real_tokens += int(mask.sum())
            done += 1
            if steps is not None and done >= steps:
                break
        if steps is not None and done >= steps:
            break
    wall = time.time() - start
    result = {"script": "hand-written transformers+peft, dynamic padding", "steps": done,
              "real_tokens": real_tokens, "train_s": round(wall, 1), "tokens_per_s": round(real_tokens / wall, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
              "final_train_loss": round(loss.item(), 4)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-length", type=int, default=128)
    a = ap.parse_args()
    main(a.epochs, a.batch, a.lr, a.model, a.steps, a.max_length)
