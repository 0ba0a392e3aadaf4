"""Runs that survive without a shared disk: Ray Train storage on an S3-compatible server (moto, on localhost),
data read from s3://, and a local run killed with SIGKILL that resumes with the same command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.helpers import FAST

pytestmark = pytest.mark.slow

SECRET = "ftc-test-secret-5f2e9c"  # must never appear in a saved file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "ftc-test-key",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket="ftc-test")
    for split in ("train", "validation", "test"):
        source = ROOT / "ftc" / "assets" / "sample" / f"{split}.jsonl"
        client.upload_file(str(source), "ftc-test", f"data/{split}.jsonl")
    yield client, env
    server.stop()


def test_ray_run_with_data_and_storage_on_s3_survives_a_worker_death(tmp_path, s3):
    client, env = s3
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, "launcher=ray", "hardware=cpu_x2", "eval.max_samples=4",
            "data=file", "data.path=s3://ftc-test/data/train.jsonl", "data.validation_path=s3://ftc-test/data/validation.jsonl",
            "data.test_path=s3://ftc-test/data/test.jsonl", "data.num_rows=1200", "data.max_length=128",
            "launcher.storage_path=s3://ftc-test/runs", f"output_dir={run}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, FTC_FAULT_INJECT_STEP="4", FTC_CACHE=str(tmp_path / "cache"), **env))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "restore")["step"] == 3
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 6
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="ftc-test", Prefix="runs/")["Contents"]]
    assert any(k.endswith("adapter/adapter_model.safetensors") for k in keys), keys
    assert any("/checkpoint/trainer_state.json" in k for k in keys), keys
    saved = [p for p in run.rglob("*") if p.is_file()]
    assert not [str(p) for p in saved if SECRET.encode() in p.read_bytes()], "a credential leaked into the run dir"
    for key in keys:
        body = client.get_object(Bucket="ftc-test", Key=key)["Body"].read()
        assert SECRET.encode() not in body, key
    assert "runs/run/results/plan.json" in keys and "runs/run/results/adapter/adapter_model.safetensors" in keys

    # The run outlives the machine that launched it: evaluate it from storage, from another directory.
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "eval", "s3://ftc-test/runs/run", "max_samples=4"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env=dict(os.environ, FTC_CACHE=str(tmp_path / "cache"), **env))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fetched s3://ftc-test/runs/run/results" in r.stdout and "tuned" in r.stdout


def test_local_run_killed_with_sigkill_resumes_with_the_same_command(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ftc.cli", "train", "train.max_steps=40", "train.epochs=null", "train.eval_steps=5",
            "train.save_steps=5", "train.logging_steps=1", "eval.max_samples=4", "train.report_to=[none]",
            f"output_dir={run}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run.glob("checkpoints/checkpoint-*/trainer_state.json")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a preempted machine would be
    proc.wait()
    saved = sorted(int(p.parent.name.split("-")[1]) for p in run.glob("checkpoints/checkpoint-*/trainer_state.json"))
    assert saved, "no checkpoint before the kill"
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    resumed = next(e for e in events if e["event"] == "resume")
    assert int(Path(resumed["checkpoint"]).name.split("-")[1]) >= saved[-1]
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 40
