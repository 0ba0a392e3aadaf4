"""The first rows of a large hub split (``data.max_rows``) against the whole split: what the plan costs, and how
close its extrapolation of the whole split comes to the whole split's own plan (docs/BENCHMARKS.md "A part of a
large hub split", issue 39).

    python tests/benchmarks/bench_hub_part.py --file /tmp/alpaca_1000000.jsonl --shards 10 --rows 20000 100000

The file (an alpaca JSONL, e.g. ``bench_data_scale.make_file``'s) is cut into ``--shards`` parquet files of equal
size, laid out as huggingface_hub stores a downloaded dataset (``datasets--bench--alpaca``, no card), and read with
``HF_HUB_OFFLINE=1`` exactly as after a download. Each ``ftc plan --json`` runs as a user runs it, in its own
process with an empty ``FTC_CACHE``; the whole split's plan is the reference the parts' extrapolations are compared
with (training examples of an epoch, and its training hours at the plan's rate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHA = "b" * 40


def hub_layout(home: Path, source: Path, shards: int) -> int:
    """``source``'s rows as ``shards`` parquet files of the dataset bench/alpaca in a hub cache under ``home``."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    table = pj.read_json(source)
    snapshot = home / "hub" / "datasets--bench--alpaca" / "snapshots" / SHA
    (snapshot / "data").mkdir(parents=True)
    per = -(-table.num_rows // shards)
    for i in range(shards):
        pq.write_table(table.slice(i * per, per), snapshot / "data" / f"train-{i:05d}-of-{shards:05d}.parquet")
    (home / "hub" / "datasets--bench--alpaca" / "refs").mkdir()
    (home / "hub" / "datasets--bench--alpaca" / "refs" / "main").write_text(SHA)
    return table.num_rows


def plan(home: Path, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1", FTC_CACHE=cache)
        env.pop("HF_HUB_CACHE", None)
        start = time.time()
        r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--json", "data=hub", "data.name=bench/alpaca",
                            *overrides], capture_output=True, text=True, env=env)
        wall = time.time() - start
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    p = json.loads(r.stdout)
    return {"wall_s": round(wall, 1), "train_examples": p["data"]["train_examples"],
            "epoch_train_hours": p["time"]["train_hours"] / p["schedule"]["epochs"], "part": p["data"]["part"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True, type=Path)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "hf"
        total = hub_layout(home, args.file, args.shards)
        whole = plan(home, [])
        out = {"rows": total, "shards": args.shards, "whole": whole, "parts": []}
        for rows in args.rows:
            p = plan(home, [f"data.max_rows={rows}"])
            part = p["part"]
            out["parts"].append({
                "max_rows": rows, "wall_s": p["wall_s"], "shards_read": part["shards_read"],
                "total": part["total"], "total_from": part["total_from"],
                "whole_train_examples": part["whole_train_examples"],
                "examples_error": round(part["whole_train_examples"] / whole["train_examples"] - 1, 4),
                "whole_epoch_hours": part["whole_epoch_hours"],
                "hours_error": round(part["whole_epoch_hours"] / whole["epoch_train_hours"] - 1, 4)})
            print(json.dumps(out["parts"][-1]), file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
