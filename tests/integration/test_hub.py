"""Models by Hugging Face id, offline, through huggingface_hub's own resolution: a cache laid out as the hub lays it
(``models--org--name/refs/main`` naming a snapshot) with ``HF_HUB_OFFLINE=1``, so an id resolves exactly as it
would after a download, for `ftc plan` and `ftc train`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import FAST, hub_dataset, save_tiny_arch

pytestmark = pytest.mark.integration

REPO = "acme/qwen-tiny"  # outside ftc's catalog
SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(home: Path, repo: str = REPO, with_weights: bool = True) -> Path:
    """``home``/hub holding ``repo`` at refs/main, as huggingface_hub stores a download (snapshot files may be plain
    files: the library reads them the same)."""
    repo_dir = home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / SHA
    save_tiny_arch(snapshot, "qwen2")
    if not with_weights:
        for f in snapshot.glob("*.safetensors"):
            f.unlink()
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(SHA)
    return snapshot


def ftc(*args: str, home: Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1", FTC_CACHE=str(home / "ftc-cache"))
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def cached_model(tmp_path_factory) -> tuple[Path, Path]:
    home = tmp_path_factory.mktemp("hf")
    return home, hub_cache(home)


def test_a_hub_id_outside_the_catalog_plans_from_the_cache(cached_model, tmp_path):
    import math

    from ftc.compiler.facts import safetensors_header

    home, snapshot = cached_model
    r = ftc("plan", "--json", "model=local", f"model.path={REPO}", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    header = safetensors_header(next(snapshot.glob("*.safetensors")))
    params = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    assert plan["model"]["params"] == params  # the header's exact count, read from the cache's snapshot
    assert plan["model"]["family"] == "qwen2"
    assert "not on this machine" not in r.stderr  # the weights are in the cache: nothing to download


def test_a_hub_id_trains_offline_from_the_cache(cached_model, tmp_path):
    home, _ = cached_model
    run = tmp_path / "run"
    r = ftc("train", "model=local", f"model.path={REPO}", *FAST, "train.max_steps=2", "eval.enabled=false",
            f"output_dir={run}", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 2
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_weights_not_on_disk_offline_are_said_at_plan_and_refused_by_train_in_one_line(tmp_path):
    home = tmp_path / "hf"
    hub_cache(home, with_weights=False)  # config and tokenizer only, as the plan fetches them
    r = ftc("plan", "model=local", f"model.path={REPO}", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    note = [line for line in r.stderr.splitlines() if "not on this machine" in line]
    assert len(note) == 1 and "MB to download" in note[0] and "HF_HUB_OFFLINE is set" in note[0], r.stderr
    r = ftc("train", "model=local", f"model.path={REPO}", *FAST, f"output_dir={tmp_path / 'run'}", home=home,
            cwd=tmp_path)
    lines = [line for line in r.stderr.splitlines() if line.startswith("ftc:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert any(f"{REPO} is not on disk and HF_HUB_OFFLINE is set" in line for line in lines), r.stderr[-3000:]
    assert "Retrying" not in r.stderr and "retry" not in r.stderr.lower()


def test_an_id_nowhere_is_one_error_naming_the_cache(tmp_path):
    home = tmp_path / "hf"
    (home / "hub").mkdir(parents=True)
    r = ftc("plan", "model=local", "model.path=acme/nowhere", home=home, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not in the Hugging Face cache" in r.stdout and "HF_HUB_OFFLINE is set" in r.stdout, r.stdout[-2000:]


def test_the_cache_resolves_the_revision_as_the_hub_does(tmp_path, monkeypatch):
    """refs/<branch> names the snapshot: a snapshot left from another revision is not read in its place."""
    from ftc.compiler.facts import find_model_dir

    home = tmp_path / "hf"
    snapshot = hub_cache(home)
    other = snapshot.parent / ("f" * 40)
    shutil.copytree(snapshot, other)
    (snapshot.parent.parent / "refs" / "v2").write_text("f" * 40)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert find_model_dir(REPO) == snapshot
    assert find_model_dir(REPO, "v2") == other
    assert find_model_dir(REPO, "nope") is None


def _sample_rows() -> list[dict]:
    from ftc.paths import resolve_path

    return [json.loads(line) for line in Path(resolve_path("ftc:sample/train.jsonl")).read_text().splitlines()]


def test_a_hub_dataset_id_plans_and_trains_offline_with_the_plans_counts(tmp_path):
    """``data=hub data.name=<id>``: the train split in two parquet shards and a test split, named by file (the
    convention datasets infers), read from the cache; the run trains on exactly the examples the plan counted."""
    home = tmp_path / "hf"
    rows = _sample_rows()
    hub_dataset(home, "acme/tickets", {"data/train-00000-of-00002.parquet": rows[:500],
                                       "data/train-00001-of-00002.parquet": rows[500:1000],
                                       "data/test-00000-of-00001.parquet": rows[1000:1100]})
    data = ["data=hub", "data.name=acme/tickets", "data.test_split=test"]
    r = ftc("plan", "--json", *data, home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert plan["data"]["path"] == "hub:acme/tickets?split=train"
    assert plan["data"]["test_path"] == "hub:acme/tickets?split=test"
    assert plan["data"]["examples"]["test"] == 100 and sum(plan["data"]["examples"].values()) == 1100
    run = tmp_path / "run"
    r = ftc("train", *data, *FAST, "train.max_steps=2", "eval.enabled=false", f"output_dir={run}", home=home,
            cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    trained = json.loads((run / "summary.json").read_text())["training"]["data"]
    assert trained["examples"] == plan["data"]["examples"] and trained["tokens"] == plan["data"]["tokens"], trained


def test_a_hub_dataset_that_cannot_be_had_is_one_line_naming_the_fix(tmp_path):
    home = tmp_path / "hf"
    hub_dataset(home, "acme/tickets", {"data/train-00000-of-00001.parquet": _sample_rows()[:50]})
    r = ftc("plan", "data=hub", "data.name=acme/missing", home=home, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert "acme/missing is not on disk and HF_HUB_OFFLINE is set" in r.stderr, r.stderr
    assert "(fix: `hf download acme/missing --repo-type dataset`" in r.stderr, r.stderr
    r = ftc("plan", "data=hub", "data.name=acme/tickets", "data.split=validation", home=home, cwd=tmp_path)
    assert r.returncode == 2 and "has no split 'validation' (splits: train) (fix: data.split=" in r.stderr, r.stderr
