"""Baseline for docs/BENCHMARKS.md: TRL's SFTTrainer as `trl sft` runs it, on the same model, rows, prompts, LoRA
settings, batch and steps as ftc. Prints real (non-padding) training tokens per second of ``trainer.train()`` and the
process's peak RSS, as ftc's summary measures them.

    python tests/benchmarks/trl_sft.py --model DIR --steps 6 --batch 4 --max-length 512 [--as-ftc | --fp32]

With its defaults SFTConfig trains in bf16 autocast with gradient checkpointing on, and SFTTrainer computes the loss
with TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``: log-probabilities of the labelled positions only,
tiled over tokens and vocabulary, plus entropy and top-1 accuracy for its metrics). ``--as-ftc`` sets precision and
checkpointing to what ftc's plan decides on this machine (fp32, no checkpointing), so only the loss path and the
trainer differ; ``--fp32`` keeps its gradient checkpointing but trains in fp32 (ftc's precision on a CPU), the
counterpart of ftc with ``train.gradient_checkpointing=true``. Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(model_path: str, steps: int, batch: int, lr: float, max_length: int, as_ftc: bool, fp32: bool) -> dict:
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ftc.data.formats import alpaca_prompt
    from ftc.paths import package_root

    torch.manual_seed(42)
    rows = [json.loads(x) for x in (package_root() / "assets/sample/train.jsonl").read_text().splitlines()]
    data = Dataset.from_list([{"prompt": alpaca_prompt(r["instruction"], r["input"], "alpaca"),
                               "completion": r["output"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)  # dtype from the saved config (fp32), as TRL does
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    overrides = dict(bf16=False, gradient_checkpointing=False) if as_ftc else dict(bf16=False) if fp32 else {}
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_length=max_length, per_device_train_batch_size=batch, max_steps=steps,
                         learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0.03, logging_steps=1,
                         report_to="none", save_strategy="no", use_cpu=True, seed=42, data_seed=42,
                         dataloader_num_workers=0, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
                         **overrides)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora)
        start = time.time()
        out_metrics = trainer.train()
        wall = time.time() - start
    real_tokens = int(trainer.state.num_input_tokens_seen)
    result = {"script": "TRL SFTTrainer" + (" (fp32, no checkpointing)" if as_ftc else
                                            " (its defaults but fp32)" if fp32 else " (its defaults)"),
              "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
              "steps": trainer.state.global_step, "real_tokens": real_tokens, "train_s": round(wall, 1),
              "tokens_per_s": round(real_tokens / wall, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
              "final_train_loss": round(out_metrics.training_loss, 4)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--as-ftc", action="store_true")
    ap.add_argument("--fp32", action="store_true", help="its defaults (gradient checkpointing on) but fp32")
    a = ap.parse_args()
    main(a.model, a.steps, a.batch, a.lr, a.max_length, a.as_ftc, a.fp32)
