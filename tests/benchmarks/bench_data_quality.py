"""What the data-quality pass costs at plan time on a 20k-row file (docs/BENCHMARKS.md, issue 24).

    python tests/benchmarks/bench_data_quality.py [--rows 20000] > bench_data_quality.json

The file is the built-in ticket generator's output (templated, so near-duplicates are many: the LSH's worst case),
with personal data planted in 1% of rows and 5% of rows in German. Reports the selection's stages timed apart (in
one process, imports included in the first stage that needs them) and the whole `ftc plan` process, with a cold and
a warm selection cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_file(path: Path, rows: int) -> None:
    from ftc.data import make_sample as ms

    rng = random.Random(5)
    pii = list(ms.PII.values())
    with open(path, "w") as f:
        for i in range(rows):
            ex = ms.make_example(rng)
            if i % 100 == 7:
                ex["input"] += " " + pii[(i // 100) % len(pii)]
            if i % 20 == 3:
                category = rng.choice(sorted(ms.GERMAN))
                problem = rng.choice(ms.GERMAN[category]).format(**{k: rng.choice(v) for k, v in ms.SLOTS.items()})
                ex["input"] = f"Hallo, {problem} {ms.GERMAN_URGENCY['normal']}"
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")


def stages(path: Path) -> dict[str, float]:
    """The selection's stages timed apart, with the functions ftc.data.select calls."""
    from ftc.data import quality
    from ftc.data.formats import check_row
    from ftc.data.formats import pieces as row_pieces
    from ftc.data.load import read_rows

    t = time.perf_counter()
    values = [check_row(row, "alpaca", {}) for _, row in read_rows(str(path))]
    out = {"read_and_check_s": time.perf_counter() - t}
    t = time.perf_counter()
    pieces = [row_pieces(v, "alpaca") for v in values]
    found = sum(1 for p in pieces for text in p if quality.find_pii(text))
    out["personal_data_s"], out["rows_with_personal_data"] = time.perf_counter() - t, found
    t = time.perf_counter()
    shared = quality.boilerplate(pieces)
    own = [quality.own_text(p, shared) for p in pieces]
    langs = [quality.language(text) for text in own]
    out["language_s"], out["german_rows"] = time.perf_counter() - t, langs.count("de")
    t = time.perf_counter()
    pairs = list(quality.near_duplicate_pairs(own, 0.8))
    out["near_duplicates_s"], out["near_duplicate_pairs"] = time.perf_counter() - t, len(pairs)
    return out


def whole_selection(path: Path) -> dict[str, float]:
    from types import SimpleNamespace

    from ftc.data.select import Settings, select

    data = SimpleNamespace(path=str(path), validation_path=None, test_path=None, format="alpaca", fields={},
                           dedup=True, near_dup_threshold=0.8, pii="report", languages=None,
                           validation_fraction=0.1, test_fraction=0.1, max_held_out=None, max_samples=None,
                           engine="local", ray_address=None)
    t = time.perf_counter()
    sel = select(Settings.of(data, 42))
    return {"select_s": time.perf_counter() - t, "examples": sel.counts(), "dropped": dict(sel.dropped)}


def plan_process(overrides: list[str], cache: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", *overrides],
                       capture_output=True, text=True, env={**os.environ, "FTC_CACHE": cache})
    assert r.returncode in (0, 2), r.stderr[-2000:]
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tickets.jsonl"
        make_file(path, args.rows)
        result = {"rows": args.rows, "file_mb": round(path.stat().st_size / 1e6, 2), "stages": stages(path),
                  "selection": whole_selection(path)}
        cache = str(Path(tmp) / "cache")
        big = ["data=file", f"data.path={path}"]
        result["ftc_plan_cold_s"] = plan_process(big, cache)
        result["ftc_plan_warm_s"] = plan_process(big, cache)
        result["ftc_plan_default_cold_s"] = plan_process([], cache)
        result["ftc_plan_default_warm_s"] = plan_process([], cache)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
