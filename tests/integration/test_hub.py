"""Models by Hugging Face id, offline, through huggingface_hub's own resolution: a cache laid out as the hub lays it
(``models--org--name/refs/main`` naming a snapshot) with ``HF_HUB_OFFLINE=1``, so an id resolves exactly as it
would after a download, for `ftc plan` and `ftc train`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftc.errors import DataError
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


CARD_1200 = "dataset_info:\n  splits:\n  - name: train\n    num_examples: 1200"


def test_max_rows_plans_and_trains_on_the_first_rows_from_the_shards_that_hold_them(tmp_path):
    """``data.max_rows=600`` of a split in three parquet shards of 400 rows: the first two are read, the third is
    not (it is not even parquet); the plan states the card's count of the whole split and an epoch over it, and the
    run trains on exactly the plan's examples and tokens."""
    home = tmp_path / "hf"
    rows = _sample_rows()
    snapshot = hub_dataset(home, "acme/big", {f"data/train-0000{i}-of-00003.parquet": rows[400 * i:400 * (i + 1)]
                                              for i in range(3)}, card=CARD_1200)
    (snapshot / "data/train-00002-of-00003.parquet").write_bytes(b"never read")
    data = ["data=hub", "data.name=acme/big", "data.max_rows=600"]
    r = ftc("plan", "--json", *data, home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert plan["data"]["path"] == "hub:acme/big?split=train&rows=600"
    held = plan["data"]["examples"]["validation"] + plan["data"]["examples"]["test"]
    assert sum(plan["data"]["examples"].values()) == 600 - sum(plan["data"]["dropped"].values())
    part = plan["data"]["part"]
    assert {k: part[k] for k in ("rows", "total", "total_from", "shards_read", "shards")} == \
        {"rows": 600, "total": 1200, "total_from": "the dataset card", "shards_read": 2, "shards": 3}
    assert part["whole_train_examples"] == round(1200 * (600 - sum(plan["data"]["dropped"].values())) / 600) - held
    per_epoch = plan["time"]["train_hours"] / plan["schedule"]["epochs"]
    assert part["whole_epoch_hours"] == pytest.approx(
        per_epoch * part["whole_train_examples"] / plan["data"]["train_examples"], abs=2e-4)  # hours to 4 places
    assert any("the first 600 rows of the split (data.max_rows=600), from 2 of its 3 files" in d
               for d in plan["decisions"]), plan["decisions"]
    r = ftc("plan", *data, home=home, cwd=tmp_path)
    assert "first 600 rows (data.max_rows) from 2 of 3 files; the split: 1,200 rows (the dataset card)" in r.stdout
    run = tmp_path / "run"
    r = ftc("train", *data, *FAST, "train.max_steps=2", "eval.enabled=false", f"output_dir={run}", home=home,
            cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ftc: data 480 train / 60 validation / 60 test examples from the split's first 600 rows of 1,200 " \
           "(data.max_rows)" in r.stderr, r.stderr[-3000:]
    trained = json.loads((run / "summary.json").read_text())["training"]["data"]
    assert trained["rows_read"] == {"train": 600}
    assert trained["examples"] == plan["data"]["examples"] and trained["tokens"] == plan["data"]["tokens"], trained
    assert "**A part of the split**: its first 600 rows (`data.max_rows`), from 2 of its 3 files; the whole split " \
           "holds 1,200 rows (the dataset card)." in (run / "report.md").read_text()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """In this process: huggingface_hub offline, reading the hub cache under ``tmp_path``/hf; ftc's cache beside."""
    import huggingface_hub.constants

    from ftc.data import hub_data

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "ftc-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub_data._listing.cache_clear()
    yield tmp_path / "hf"
    hub_data._listing.cache_clear()


def test_max_rows_reads_jsonl_and_csv_shards_and_says_where_the_whole_count_comes_from(offline_cache):
    from ftc.data import hub_data
    from ftc.data.load import read_rows

    rows = _sample_rows()[:90]
    hub_dataset(offline_cache, "acme/lines", {f"train-0000{i}-of-00003.jsonl": rows[30 * i:30 * (i + 1)]
                                              for i in range(3)})
    part = hub_data.part(hub_data.parse("hub:acme/lines?split=train&rows=45"))
    assert (part.rows, part.total, part.total_from, part.shards_read, part.shards) == \
        (45, 90, "the shard count", 2, 3)  # no card: 60 rows in 2 shards, scaled to 3
    assert [r for _, r in read_rows(str(part.file))] == rows[:45]
    whole = hub_data.part(hub_data.parse("hub:acme/lines?split=train&rows=1000"))
    assert (whole.rows, whole.total, whole.total_from, whole.shards_read) == (90, 90, "every shard read", 3)

    snapshot = hub_dataset(offline_cache, "acme/sheet", {})
    snapshot.mkdir(parents=True)
    table = [{"q": f"question {i}", "a": f"line one\nline two of answer {i}"} for i in range(10)]
    for i in range(2):
        with open(snapshot / f"train-0000{i}-of-00002.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["q", "a"])
            writer.writeheader()
            writer.writerows(table[5 * i:5 * (i + 1)])
    part = hub_data.part(hub_data.parse("hub:acme/sheet?split=train&rows=7"))
    assert (part.rows, part.shards_read) == (7, 2)  # records, not lines: every answer holds a newline
    assert [r for _, r in read_rows(str(part.file))] == table[:7]

    hub_dataset(offline_cache, "acme/footers", {f"data/train-0000{i}-of-00002.parquet": rows[40 * i:40 * (i + 1)]
                                                for i in range(2)})
    part = hub_data.part(hub_data.parse("hub:acme/footers?split=train&rows=10"))
    assert (part.rows, part.total, part.total_from, part.shards_read) == (10, 80, "the shards' parquet footers", 1)
    snapshot = offline_cache / "hub/datasets--acme--footers/snapshots" / ("d" * 40)
    (snapshot / "data/train-00001-of-00002.parquet").write_bytes(b"cut short")
    with pytest.raises(DataError, match=r"train-00001-of-00002.parquet: not readable as parquet \(ArrowInvalid: .*; "
                                        r"fix: `hf download acme/footers --repo-type dataset --force-download`"):
        hub_data.part(hub_data.parse("hub:acme/footers?split=train&rows=50"))
    with pytest.raises(DataError, match=r"train-00001-of-00002.parquet: not readable as parquet"):
        hub_data.local_file("hub:acme/footers?split=train")  # the whole split, its shards joined


def test_max_rows_online_lists_the_split_and_downloads_only_the_shards_it_reads(offline_cache, monkeypatch):
    """Online, the split's files come from the hub's list of files (``HfApi.dataset_info``), which ``datasets``'
    inference reads by name; the shards are then fetched one at a time and the ones after the rows are not."""
    from types import SimpleNamespace

    import huggingface_hub

    import ftc.hub
    from ftc.data import hub_data

    rows = _sample_rows()[:120]
    names = [f"data/train-0000{i}-of-00004.parquet" for i in range(4)]
    snapshot = hub_dataset(offline_cache, "acme/remote", {n: rows[30 * i:30 * (i + 1)] for i, n in enumerate(names)},
                           card=CARD_1200.replace("1200", "120"))
    listed = [*names, "data/test-00000-of-00001.parquet", "README.md", ".gitattributes"]
    monkeypatch.setattr(ftc.hub, "offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, repo, revision=None, files_metadata=False:
                        SimpleNamespace(sha=snapshot.name, siblings=[SimpleNamespace(rfilename=n, size=4e9)
                                                                     for n in listed]))
    monkeypatch.setattr(hub_data, "_readme", lambda repo, revision: snapshot / "README.md")
    fetched: list[str] = []

    def fetch(repo, patterns, revision, kind):
        assert (repo, revision, kind) == ("acme/remote", snapshot.name, "dataset")
        fetched.extend(patterns)
        return snapshot

    monkeypatch.setattr(hub_data, "fetch", fetch)
    part = hub_data.part(hub_data.parse("hub:acme/remote?split=train&rows=50"))
    assert fetched == names[:2]
    assert (part.rows, part.total, part.total_from, part.shards_read, part.shards) == \
        (50, 120, "the dataset card", 2, 4)

    # the whole split, 16 GB the cache lacks: not downloaded to plan, data.max_rows named
    for n in names:
        (snapshot / n).unlink()
    with pytest.raises(DataError, match=r"acme/remote's split 'train' is 16.0 GB in 4 files not on this machine: "
                                        r"not downloaded whole to plan; fix: data.max_rows=<rows>"):
        hub_data.local_file("hub:acme/remote?split=train")
    assert fetched == names[:2]


def test_a_split_downloaded_without_its_card_plans_offline(offline_cache):
    """``hf download org/set --include "data/*"`` leaves the card out, and huggingface_hub's cached list of the
    repository's files names it: the split is still found, whole or in part, from the files on disk."""
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

    from ftc.data import hub_data

    rows = _sample_rows()[:100]
    names = [f"data/train-0000{i}-of-00002.parquet" for i in range(2)]
    snapshot = hub_dataset(offline_cache, "acme/nocard", {n: rows[50 * i:50 * (i + 1)] for i, n in enumerate(names)})
    write_tree_cache(str(snapshot.parent.parent), snapshot.name,
                     {n: TreeCacheEntry(size=1, blob_id="a" * 40) for n in ["README.md", *names]})
    part = hub_data.part(hub_data.parse("hub:acme/nocard?split=train&rows=60"))
    assert (part.rows, part.shards_read, part.total, part.total_from) == (60, 2, 100, "every shard read")
    assert Path(hub_data.local_file("hub:acme/nocard?split=train")).is_file()
