"""Reproduces the figures in docs/BENCHMARKS.md on this machine (2 CPU cores). Not a test; takes ~8 minutes.

    python tests/benchmarks/run_benchmarks.py > bench.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NO_EVAL = ["eval.enabled=false", "train.eval_steps=100000", "train.save_steps=100000", "train.logging_steps=25"]


def ftc_train(run: Path, *overrides: str) -> dict:
    start = time.time()
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *overrides, f"output_dir={run}"],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    s = json.loads((run / "summary.json").read_text())
    t = s["training"]
    return {"overrides": list(overrides), "command_wall_s": round(time.time() - start, 1),
            "train_runtime_s": round(t["train_runtime_s"], 1), "real_tokens": t["tokens_seen"],
            "tokens_per_s": round(t["tokens_per_s"], 1), "steps": t["steps"], "eval": s.get("eval") and {
                k: s["eval"][m][k] for m in ("tuned",) for k in ("exact_match", "loss")},
            "predicted_tokens_per_s": s["predicted"]["tokens_per_s"], "predicted_hours": s["predicted"]["hours"]}


def plan_timing(n: int = 5) -> dict:
    walls = []
    for _ in range(n):
        start = time.time()
        subprocess.run([sys.executable, "-m", "ftc.cli", "plan"], capture_output=True, check=True, cwd=ROOT)
        walls.append(time.time() - start)
    code = ("import time;from tests.conftest import compose;from ftc.compiler.frontend import to_typed;"
            "from ftc.compiler.compile import compile;from ftc.compiler.facts import gather;"
            "cfg=to_typed(compose([]));f=gather(cfg);t=time.perf_counter();[compile(cfg,f) for _ in range(100)];"
            "print((time.perf_counter()-t)/100)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return {"ftc_plan_process_s_min": round(min(walls), 3),
            "ftc_plan_process_s_median": round(sorted(walls)[n // 2], 3),
            "compile_only_ms": round(float(r.stdout.strip().splitlines()[-1]) * 1000, 3)}


def main() -> None:
    out = {"plan": plan_timing()}
    base = subprocess.run([sys.executable, "tests/benchmarks/baseline_lora.py", "--epochs", "3"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    out["baseline_handwritten_3_epochs"] = json.loads(base.stdout.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out["ftc_default_3_epochs_no_eval"] = ftc_train(tmp / "a", *NO_EVAL)
        out["ftc_packing_on_sdpa"] = ftc_train(tmp / "b", *NO_EVAL, "data.packing=true")
        out["ftc_group_by_length"] = ftc_train(tmp / "c", *NO_EVAL, "data.group_by_length=true")
        out["ftc_token_metrics_on"] = ftc_train(tmp / "d", *NO_EVAL, "train.token_metrics=true")
        out["ftc_default_full_run"] = ftc_train(tmp / "e")
        out["ftc_group_by_length_full_run"] = ftc_train(tmp / "f", "data.group_by_length=true")
        out["local_1_epoch"] = ftc_train(tmp / "g", "train.epochs=1", "eval.max_samples=20")
        out["ray_cpu_x2_zero3_1_epoch"] = ftc_train(tmp / "h", "train.epochs=1", "eval.max_samples=20", "launcher=ray",
                                                   "hardware=cpu_x2")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
