"""ftc calibrate: a probe of this machine writes a hardware profile usable as hardware=<name>. (How close its
predictions then come to measured runs is a benchmark, recorded in docs/BENCHMARKS.md: not a timed test.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def ftc(*args, config_dir, timeout=600):
    env = dict(os.environ, FTC_CONFIG_DIR=str(config_dir))
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_a_user_profile_is_a_hardware_choice(tmp_path):
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "my_box.yaml").write_text(
        "name: my_box\naccelerator: cpu\nmemory_gb: 8\nbf16: false\npeak_tflops: 0.5\nmfu: 1.0\n"
        "step_overhead_s: 0.01\ndecode_gbs: 2.0\n")
    r = ftc("plan", "--json", "hardware=my_box", config_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    hw = json.loads(r.stdout)["hardware"]
    assert (hw["name"], hw["peak_tflops"], hw["step_overhead_s"], hw["decode_gbs"]) == ("my_box", 0.5, 0.01, 2.0)


@pytest.mark.slow
def test_calibrate_writes_a_profile_of_measured_figures(tmp_path):
    r = ftc("calibrate", "profile=here", config_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "predicted (cpu)" in r.stdout and "predicted (here)" in r.stdout and "measured" in r.stdout
    r = ftc("plan", "--json", "hardware=here", config_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    hw = plan["hardware"]
    assert hw["name"] == "here" and hw["mfu"] == 1.0 and hw["decode_gbs"] > 0 and hw["peak_tflops"] > 0
    base = json.loads(ftc("plan", "--json", config_dir=tmp_path).stdout)
    assert plan["time"]["train_hours"] != base["time"]["train_hours"]  # the measured rate replaced the guess
