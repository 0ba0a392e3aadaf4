"""The GPU evidence script (tests/benchmarks/gpu_evidence.py) rehearsed on the CPU at tiny scale: the same code
path it runs on a lent GPU, so the one call a GPU session gets does not fail on the script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_gpu_evidence_script_rehearses_on_the_cpu(tmp_path):
    out = tmp_path / "evidence"
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / "gpu_evidence.py"), "--dry-run",
                        "--out", str(out), "--shapes", "llama3.1-8b", "--seqs", "64"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    report = json.loads((out / "evidence.json").read_text())
    assert report["dry_run"] and not report["skipped"]
    rows = report["rows"]
    assert [(row["method"], row["seq"]) for row in rows] == [("lora", 64), ("qlora (dry run: lora)", 64)]
    for row in rows:
        p, m = row["predicted"], row["measured"]
        assert p["process_gb"] > 0 and p["band_gb"][0] <= p["process_gb"] <= p["band_gb"][1]
        assert m["process_gb"] > 0 and m["tokens_per_s"] > 0 and p["tokens_per_s"] > 0
    table = (out / "evidence.md").read_text().splitlines()
    assert table[0].startswith("| shape | method | seq |") and len(table) == 2 + len(rows)
    assert report["calibrate"]["returncode"] == 0 and "mfu" in report["calibrate"]["profile"]
