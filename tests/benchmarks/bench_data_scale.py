"""What the selection costs as a file grows: time and peak memory at 20k, 200k and 1M rows (docs/BENCHMARKS.md,
issue 42).

    python tests/benchmarks/bench_data_scale.py --rows 20000 200000 > bench_data_scale.json
    python tests/benchmarks/bench_data_scale.py --rows 200000 --engines local ray --nodes 2


Each size is an alpaca file of distinct random words (~340 bytes a row, the shape of a real instruction set: few
duplicates, so every row survives to the near-duplicate pass), with 1% exact and 1% near-duplicate rows planted so
the grouping has work to do. Each selection runs in a fresh process (``ftc.data.select`` with the default
settings), which reports its wall time and peak resident memory. From ``quality.PARALLEL_FROM`` rows the MinHash
signatures are computed in worker processes; their own memory is not in the figure (``RUSAGE_CHILDREN`` would count
each worker's moment between fork and exec at the parent's size: sample ``/proc/<pid>/status`` instead).

``--engines local ray``: the same file selected by each engine in turn; ``ray`` starts Ray's own
``cluster_utils.Cluster`` on this machine, a head without CPUs (the driver's) and ``--nodes`` worker nodes of one
CPU each, and selects with data.ray_address set to it. Its workers' memory is sampled from ``/proc`` (the sum over
the ``ray::`` worker processes at its highest). ``selection`` is a hash of every split's (file, line, masked) in
order: equal hashes are the same selection row for row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "st", "l")]


def make_file(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` alpaca rows of random words; every 100th row repeats an earlier one, every 100th (offset 50) repeats
    one with a word changed."""
    rng = random.Random(seed)
    written: list[dict[str, str]] = []

    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with open(path, "w") as f:
        for i in range(rows):
            if i % 100 == 99 and written:
                row = dict(rng.choice(written))
            elif i % 100 == 49 and written:
                row = dict(rng.choice(written))
                out = row["output"].split()
                out[rng.randrange(len(out))] = rng.choice(WORDS)
                row["output"] = " ".join(out)
            else:
                row = {"instruction": words(rng.randint(6, 16)), "input": words(rng.randint(0, 12)),
                       "output": words(rng.randint(36, 72))}
            if len(written) < 5000:
                written.append(row)
            elif rng.random() < 0.01:
                written[rng.randrange(len(written))] = row
            f.write(json.dumps(row) + "\n")


def _ray_workers_mb() -> float:
    """Resident memory of this machine's Ray worker processes (``ray::...``), summed."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read(5).startswith(b"ray::"):
                    continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def select_once(path: str, engine: str, nodes: int) -> dict:
    """The selection of ``path`` in this process: wall time, peak RSS and what it kept and dropped."""
    from types import SimpleNamespace

    from ftc.data.select import Settings, select

    cluster, peak, done = None, [0.0], threading.Event()
    if engine == "ray":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], _ray_workers_mb())

        threading.Thread(target=sample, daemon=True).start()
    data = SimpleNamespace(path=path, validation_path=None, test_path=None, format="alpaca", fields={},
                           dedup=True, near_dup_threshold=0.8, pii="report", languages=None,
                           validation_fraction=0.1, test_fraction=0.1, max_held_out=None,  # the fractions alone
                           max_samples=None, engine=engine, ray_address=cluster.address if cluster else None)
    try:
        t = time.perf_counter()
        sel = select(Settings.of(data, 42))
        took = time.perf_counter() - t
    finally:
        done.set()
        if cluster:
            cluster.shutdown()
    order = json.dumps({role: [[ex.role, ex.line, ex.masked] for ex in examples]
                        for role, examples in sel.splits.items()})
    return {"engine": engine, "nodes": nodes if cluster else 1, "select_s": round(took, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **({"ray_workers_peak_mb": round(peak[0])} if cluster else {}),
            "examples": sel.counts(), "dropped": dict(sel.dropped), "near_groups": sel.near_groups.count,
            "selection": hashlib.sha256(order.encode()).hexdigest()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local"])
    parser.add_argument("--nodes", type=int, default=2, help="Ray worker nodes (one CPU each) for --engines ray")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: select this file and print the result
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(select_once(args.one, args.engine, args.nodes)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"alpaca_{rows}.jsonl"
            make_file(path, rows)
            for engine in args.engines:
                out = subprocess.run([sys.executable, __file__, "--one", str(path), "--engine", engine,
                                      "--nodes", str(args.nodes)], capture_output=True, text=True, check=True)
                results.append({"rows": rows, "file_mb": round(path.stat().st_size / 1e6, 1),
                                **json.loads(out.stdout.strip().splitlines()[-1])})
                print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
