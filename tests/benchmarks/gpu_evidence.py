"""The GPU evidence run: predicted against measured memory (live, reserved, process) and tokens/s on real model
shapes, LoRA and QLoRA at two sequence lengths, through `ftc train` itself. Not a test. Run it first whenever a GPU
machine is lent (about 8 minutes on one H100; it stops starting runs past --budget-s and says which it skipped):

    python tests/benchmarks/gpu_evidence.py --out evidence/            # on the GPU machine
    python tests/benchmarks/gpu_evidence.py --dry-run --out /tmp/ev    # the CPU rehearsal the tests run

Everything is built offline: each shape is a random-init model of the config.json ftc ships for a catalog model
(Qwen2.5-0.5B, Phi-3-mini 3.8B, Llama-3.1-8B), saved as safetensors with the tiny model's tokenizer (its ids fit any
vocabulary), and the data are synthetic rows long enough that every example is cut to the run's max_length, so
the plan's sequence length is the one trained. Measured: the run's own peaks (``torch.cuda.max_memory_allocated`` /
``max_memory_reserved``), the process's device memory sampled from nvidia-smi (reserved + the CUDA context: what
the plan's ``per_device_gb`` predicts), and tokens/s over the training steps. Writes ``evidence.json`` and
``evidence.md`` (the table for docs/ESTIMATES.md) into --out, then runs ``ftc calibrate`` on the smallest shape.
``--dry-run`` shrinks every shape to a few layers of width 64 and trains on the CPU profile: the same code path.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {  # name -> the catalog config.json it is built from
    "qwen2.5-0.5b": "Qwen--Qwen2.5-0.5B-Instruct",
    "phi3-mini-3.8b": "microsoft--Phi-3-mini-4k-instruct",
    "llama3.1-8b": "meta-llama--Llama-3.1-8B-Instruct",
}
METHODS = ("lora", "qlora")
SEQS = (512, 2048)
DRY_SEQS = (64, 128)
STEPS = 8


def build_model(shape: str, target: Path, dry: bool) -> Path:
    """A random-init model of ``shape``'s architecture saved as safetensors, with the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ftc.paths import resolve_path
    from ftc.runtime.model import tiny_path
    from tests.conftest import plan_for

    if (target / "config.json").is_file():
        return target
    source = Path(resolve_path(f"ftc:models/{SHAPES[shape]}"))
    config = AutoConfig.from_pretrained(str(source))
    if dry:  # a few layers of width 64: the architecture's code, not its size
        layers = 2
        config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "head_dim": 16,
                       "max_position_embeddings": max(DRY_SEQS) * 4})
        if getattr(config, "layer_types", None):  # one entry per layer (sliding/full attention)
            config.layer_types = list(config.layer_types)[:layers]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_path(plan_for([]).model)).save_pretrained(tmp)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    tmp.rename(target)
    return target


def write_rows(path: Path, seq: int, rows: int = 160) -> Path:
    """Alpaca rows whose output alone is longer than ``seq`` tokens: every example is cut to max_length."""
    rng = random.Random(seq)
    words = [f"w{i}" for i in range(400)]
    with path.open("w") as f:
        for i in range(rows):
            output = " ".join(rng.choice(words) for _ in range(seq))
            f.write(json.dumps({"instruction": f"Continue the list {i}.", "input": "", "output": output}) + "\n")
    return path


class DeviceMemory:
    """The device memory of a process tree as nvidia-smi reports it, sampled every half second (0 without it)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        while not self._stop.wait(0.5):
            query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
            out = subprocess.run(query, capture_output=True, text=True).stdout
            used = sum(int(m) for p, m in (line.split(", ") for line in out.splitlines() if ", " in line)
                       if _descends(int(p), self.pid))
            self.peak_mib = max(self.peak_mib, used)

    def stop(self) -> Optional[float]:
        self._stop.set()
        self._thread.join()
        return self.peak_mib * 2**20 / 1e9 if self.peak_mib else None


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def run_one(model_dir: Path, data: Path, method: str, seq: int, out: Path, dry: bool) -> dict[str, Any]:
    run = out / "runs" / f"{model_dir.name}-{method}-{seq}"
    shutil.rmtree(run, ignore_errors=True)
    hardware = ["hardware=cpu"] if dry else ["hardware=h100"]
    overrides = ["model=local", f"model.path={model_dir}", f"method={method}", *hardware, "data=file",
                 f"data.path={data}", f"data.max_length={seq}", "data.validation_fraction=0", "data.test_fraction=0",
                 "data.near_dup_threshold=null", "eval.enabled=false", f"train.max_steps={STEPS}", "train.epochs=null",
                 "train.global_batch_size=8", "train.save_steps=1000", "train.eval_steps=1000",
                 "train.logging_steps=1", "train.report_to=[none]", f"output_dir={run}"]
    if dry and method == "qlora":  # bitsandbytes' 4-bit path needs CUDA: the rehearsal trains LoRA in its place
        overrides[overrides.index("method=qlora")] = "method=lora"
        method = "qlora (dry run: lora)"
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "ftc.cli", "train", *overrides], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = DeviceMemory(proc.pid)
    stdout, stderr = proc.communicate()
    process_gb = sampler.stop()
    row: dict[str, Any] = {"shape": model_dir.name, "method": method, "seq": seq,
                           "wall_s": round(time.time() - start, 1)}
    if proc.returncode:
        return {**row, "error": (stderr or stdout).strip().splitlines()[-1][:300] if (stderr or stdout) else "failed"}
    plan = json.loads((run / "plan.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    measured = summary["training"]["peak_memory"]
    m = plan["memory"]
    return {**row, "micro": plan["batch"]["micro"], "checkpointing": plan["train"]["gradient_checkpointing"],
            "predicted": {"process_gb": m["per_device_gb"], "band_gb": [m["low_gb"], m["high_gb"]],
                          "reserved_gb": m["reserved_gb"], "live_gb": m["live_gb"],
                          "tokens_per_s": plan["time"]["tokens_per_s"]},
            "measured": {"process_gb": process_gb if process_gb is not None else measured.get("process_gb"),
                         "reserved_gb": measured.get("reserved_gb"), "live_gb": measured.get("live_gb"),
                         "tokens_per_s": summary["training"]["tokens_per_s"]}}


def table(rows: list[dict[str, Any]]) -> str:
    def ratio(a: Optional[float], b: Optional[float]) -> str:
        return f"{a / b:.2f}" if a and b else "-"

    def gb(v: Optional[float]) -> str:
        return f"{v:.2f}" if v is not None else "-"

    lines = ["| shape | method | seq | micro | process GB pred / meas | reserved GB pred / meas | "
             "live GB pred / meas | tokens/s pred / meas (meas/pred) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['method']} | {r['seq']} | - | {r['error']} | | | |")
            continue
        p, m = r["predicted"], r["measured"]
        lines.append(f"| {r['shape']} | {r['method']} | {r['seq']} | {r['micro']} | {gb(p['process_gb'])} / "
                     f"{gb(m['process_gb'])} | {gb(p['reserved_gb'])} / {gb(m['reserved_gb'])} | {gb(p['live_gb'])} / "
                     f"{gb(m['live_gb'])} | {p['tokens_per_s']:.0f} / {m['tokens_per_s']:.0f} "
                     f"({ratio(m['tokens_per_s'], p['tokens_per_s'])}) |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: the rehearsal the tests run")
    ap.add_argument("--budget-s", type=float, default=450.0, help="start no run after this many seconds")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of " + ", ".join(SHAPES))
    ap.add_argument("--seqs", default=None, help="comma-separated sequence lengths (default 512,2048; dry run 64,128)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start, rows, skipped = time.time(), [], []
    seqs = tuple(int(s) for s in args.seqs.split(",")) if args.seqs else DRY_SEQS if args.dry_run else SEQS
    data = {seq: write_rows(args.out / f"rows-{seq}.jsonl", seq) for seq in seqs}
    for shape in args.shapes.split(","):
        model_dir = build_model(shape, args.out / "models" / shape, args.dry_run)
        for method in METHODS:
            for seq in seqs:
                if time.time() - start > args.budget_s:
                    skipped.append(f"{shape} {method} {seq}")
                    continue
                rows.append(run_one(model_dir, data[seq], method, seq, args.out, args.dry_run))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    calibrate = None
    if time.time() - start <= args.budget_s:
        import os

        config_dir = args.out / "config"  # the measured profile lands here, not in the user's ~/.config/ftc
        r = subprocess.run([sys.executable, "-m", "ftc.cli", "calibrate", "profile=evidence", "model=local",
                            f"model.path={args.out / 'models' / args.shapes.split(',')[0]}",
                            "hardware=cpu" if args.dry_run else "hardware=h100"],
                           cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, FTC_CONFIG_DIR=str(config_dir)))
        profile = config_dir / "hardware" / "evidence.yaml"
        calibrate = {"returncode": r.returncode, "said": [x for x in (r.stdout + r.stderr).splitlines()
                                                          if x.startswith("ftc")][-6:],
                     "profile": profile.read_text() if profile.is_file() else None}
    else:
        skipped.append("ftc calibrate")
    report = {"dry_run": args.dry_run, "wall_s": round(time.time() - start, 1), "rows": rows, "skipped": skipped,
              "calibrate": calibrate}
    (args.out / "evidence.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "evidence.md").write_text(table(rows) + (f"\nskipped (past --budget-s): {', '.join(skipped)}\n"
                                                         if skipped else ""))
    print(table(rows))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
