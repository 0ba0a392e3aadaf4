"""A large file from an empty cache to training: the whole ``ftc plan``, then ``ftc train train.max_steps=5`` on
the plan's cache, each timed with its peak memory (docs/BENCHMARKS.md "Data at scale", issue 42).

    python tests/benchmarks/bench_first_step.py --rows 1000000 > first_step.json

The file is ``bench_data_scale.make_file``'s (distinct random words, 1% exact and 1% near-duplicate rows). Each
command runs as a user runs it, in its own process with an empty ``FTC_CACHE`` for the plan and the plan's cache
for the run. Memory is sampled from ``/proc/<pid>/status`` every 0.2 s: ``VmHWM`` (the kernel's peak resident
set of the ftc process itself, memory-mapped file pages included) and the largest ``RssAnon`` seen (its own
memory, without the Arrow files it maps). The run's first step is the time of step 1 in ``metrics.jsonl`` after
the launch; ``start`` is ftc's start event (data built, trainer made).

``--ray-nodes 2``: the plans run with data.engine=ray on Ray's own ``cluster_utils.Cluster`` started on this
machine (a head without CPUs, then that many worker nodes of one CPU each); ``ray_workers_peak_mb`` is the sum of
its ``ray::`` worker processes' resident memory at its highest, sampled with the plan's.
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


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()
            if line.startswith(("VmHWM", "RssAnon"))}


def timed(command: list[str], env: dict[str, str], ray_workers: bool = False) -> dict:
    """Runs ``command``; its wall time, exit code and memory (MB) as sampled."""
    from bench_data_scale import _ray_workers_mb

    start = time.time()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"VmHWM": 0, "RssAnon": 0}
    workers, ticks = 0.0, 0
    while proc.poll() is None:
        for k, v in _status(proc.pid).items():
            peak[k] = max(peak[k], v)
        if ray_workers and ticks % 5 == 0:
            workers = max(workers, _ray_workers_mb())
        ticks += 1
        time.sleep(0.2)
    out = proc.stdout.read()
    return {"wall_s": round(time.time() - start, 1), "start": start, "rc": proc.returncode,
            "peak_rss_mb": round(peak["VmHWM"] / 1024), "peak_anon_mb": round(peak["RssAnon"] / 1024),
            **({"ray_workers_peak_mb": round(workers)} if ray_workers else {}), "tail": out[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file", help="an alpaca JSONL file to use instead of making one")
    parser.add_argument("--ray-nodes", type=int, default=0, help="plan with data.engine=ray on this many nodes")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_data_scale import make_file

    ftc = str(Path(sys.executable).parent / "ftc")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / f"alpaca_{args.rows}.jsonl"
        if not args.file:
            make_file(path, args.rows)
        env = {**os.environ, "FTC_CACHE": str(Path(tmp) / "cache")}
        data = ["data=file", f"data.path={path}"]
        cluster = None
        if args.ray_nodes:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
            for _ in range(args.ray_nodes):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            data += ["data.engine=ray", f"data.ray_address={cluster.address}"]
        try:
            plan = timed([ftc, "plan", *data], env, ray_workers=bool(cluster))
            print(json.dumps({"plan": plan}), file=sys.stderr)
            again = timed([ftc, "plan", *data], env)
        finally:
            if cluster:
                cluster.shutdown()
        run_dir = Path(tmp) / "run"
        train = timed([ftc, "train", *data, "train.max_steps=5", "train.epochs=null", "eval.enabled=false",
                       f"output_dir={run_dir}"], env)
        print(json.dumps({"train": train}), file=sys.stderr)
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        data_report = json.loads((run_dir / "summary.json").read_text())["training"]["data"]
        result = {
            "rows": sum(1 for _ in open(path)), "file_mb": round(path.stat().st_size / 1e6, 1),
            "engine": f"ray, {args.ray_nodes} nodes" if cluster else "local",
            "plan": {k: v for k, v in plan.items() if k not in ("start", "tail")},
            "plan_again": {k: v for k, v in again.items() if k not in ("start", "tail")},
            "train": {k: v for k, v in train.items() if k not in ("start", "tail")},
            "train_start_s": round(next(e["time"] for e in events if e["event"] == "start") - train["start"], 1),
            "first_step_s": round(next(s["time"] for s in steps if s["step"] == 1 and "loss" in s)
                                  - train["start"], 1),
            "examples": data_report["examples"], "token_ids": data_report["token_ids"],
        }
        if plan["rc"] or train["rc"]:
            result["tails"] = {"plan": plan["tail"], "train": train["tail"]}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
