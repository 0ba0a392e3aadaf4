"""What the selection costs as a file grows: time and peak memory at 20k, 200k and 1M rows (docs/BENCHMARKS.md,
issue 42).

    python tests/benchmarks/bench_data_scale.py --rows 20000 200000 > bench_data_scale.json

Each size is an alpaca file of distinct random words (~340 bytes a row, the shape of a real instruction set: few
duplicates, so every row survives to the near-duplicate pass), with 1% exact and 1% near-duplicate rows planted so
the grouping has work to do. Each selection runs in a fresh process (``ftc.data.select`` with the default
settings), which reports its wall time and peak resident memory. From ``quality.PARALLEL_FROM`` rows the MinHash
signatures are computed in worker processes; their own memory is not in the figure (``RUSAGE_CHILDREN`` would count
each worker's moment between fork and exec at the parent's size: sample ``/proc/<pid>/status`` instead).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
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


def select_once(path: str) -> dict:
    """The selection of ``path`` in this process: wall time, peak RSS and what it kept and dropped."""
    from types import SimpleNamespace

    from ftc.data.select import Settings, select

    data = SimpleNamespace(path=path, validation_path=None, test_path=None, format="alpaca", fields={},
                           dedup=True, near_dup_threshold=0.8, pii="report", languages=None,
                           validation_fraction=0.1, test_fraction=0.1, max_held_out=None,  # the fractions alone
                           max_samples=None, engine="local", ray_address=None)
    t = time.perf_counter()
    sel = select(Settings.of(data, 42))
    return {"select_s": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "examples": sel.counts(), "dropped": dict(sel.dropped), "near_groups": sel.near_groups.count}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: select this file and print the result
    args = parser.parse_args()
    if args.one:
        print(json.dumps(select_once(args.one)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"alpaca_{rows}.jsonl"
            make_file(path, rows)
            out = subprocess.run([sys.executable, __file__, "--one", str(path)], capture_output=True, text=True,
                                 check=True)
            results.append({"rows": rows, "file_mb": round(path.stat().st_size / 1e6, 1), **json.loads(out.stdout)})
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
