"""data.engine=ray selects what data.engine=local selects, row for row: the same examples in the same splits with the
same values, masks and languages, and the same findings (counts and the lines shown), on a Ray cluster of two
worker nodes (Ray's own ``cluster_utils.Cluster``, a head without CPUs for the driver). The chunks are made small
here, so that every file is cut into many and the findings of one chunk are merged with the next."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import typed_config, write_jsonl
from tests.integration.test_plan_sees_the_data import BUILT_IN, _files

pytestmark = pytest.mark.integration

FILES = ["bom-csv", "held-out-files", "no-dedup"]  # rows parsed before the tasks; files of each role; no dedup
CASES = [case for case in BUILT_IN if case != "chat-template"] + FILES + ["malformed"]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node: no task fits
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster.address, {node.node_id for node in nodes}
    finally:
        cluster.shutdown()


def _finished(address: str, task: str) -> list[str]:
    """The node of each finished task of that name on the cluster so far."""
    import ray
    from ray.util.state import list_tasks

    ray.init(address=address, log_to_driver=False)
    try:
        return [t.node_id for t in list_tasks(filters=[("name", "=", task), ("state", "=", "FINISHED")],
                                              limit=10_000, raise_on_missing_output=False)]
    finally:
        ray.shutdown()


def _picture(sel) -> dict:
    """Everything a selection decides, in order."""
    return {"splits": {role: None if examples is None else
                       [(ex.role, ex.path, ex.line, ex.values, ex.masked, ex.language) for ex in examples]
                       for role, examples in sel.splits.items()},
            "rows": sel.rows, "dropped": dict(sel.dropped), "quality": sel.quality(),
            "pii": [(kind, found.count, found.shown) for kind, found in sel.pii.items()],
            "problems": {role: (p.count, p.missing, p.columns, p.lines()) for role, p in sel.problems.items()},
            "language_dropped": (sel.language_dropped.count, sel.language_dropped.shown)}


def _malformed(tmp_path) -> list[str]:
    """Bad rows of both kinds (not JSON, lacking a field) spread over many chunks, among good ones and duplicates:
    more than are shown, and more column sets than are kept; more email addresses than are shown."""
    lines = []
    for i in range(90):
        if i % 9 == 4:
            lines.append("{not json")
        elif i % 7 == 3:
            lines.append(json.dumps({f"col{i % 11}": "x", "answer": "y"}))
        else:
            mail = f" (mail u{i}@example.com)" if i % 3 == 0 else ""
            lines.append(json.dumps({"instruction": f"Say {i % 30}", "output": f"ok {i % 30}{mail}"}))
    path = tmp_path / "malformed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return ["data=file", f"data.path={path}"]


@pytest.mark.parametrize("case", CASES)
def test_the_ray_engine_selects_what_the_local_engine_does_row_for_row(case, two_nodes, tmp_path, monkeypatch):
    from ftc.data import quality
    from ftc.data import select as selection
    from ftc.data.select import Settings, select

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    if case in BUILT_IN:
        overrides = BUILT_IN[case]
    else:
        overrides = _malformed(tmp_path) if case == "malformed" else _files(tmp_path)[case]
    cfg = typed_config(overrides)
    settings = Settings.of(cfg.data, cfg.train.seed)
    whole = _picture(select(settings))  # the default chunks: each of these files in one
    assert case == "malformed" or whole["splits"]["train"]
    if case == "malformed":
        assert whole["problems"]["train"][0] == 22 and len(whole["problems"]["train"][2]) == 8, whole["problems"]
        assert whole["quality"].pii["email"] > 10, whole["quality"]
    for name, size in (("READ_CHUNK", 7), ("LANGUAGE_CHUNK", 5)):
        monkeypatch.setattr(selection, name, size)
    monkeypatch.setattr(quality, "SIGNATURE_CHUNK", 9)
    assert _picture(select(settings)) == whole  # chunked, in this process
    address, workers = two_nodes
    assert _picture(select(dataclasses.replace(settings, engine="ray", ray_address=address))) == whole
    ran = _finished(address, "_read_chunk")
    assert ran and set(ran) <= workers, (ran, workers)


def test_a_ray_cluster_that_cannot_be_reached_names_data_ray_address(tmp_path):
    from ftc.data.select import Settings, select
    from ftc.errors import UserError

    path = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "output": "b"}])
    cfg = typed_config(["data=file", f"data.path={path}", "data.engine=ray", "data.ray_address=127.0.0.1:9"])
    with pytest.raises(UserError, match=r"data\.ray_address=127\.0\.0\.1:9.*data\.engine=local"):
        select(Settings.of(cfg.data, cfg.train.seed))


@pytest.mark.parametrize("case", ["sample", "sample_chat", "sample_preference"])
def test_the_plans_token_counts_and_ids_are_the_same_on_ray(case, two_nodes, tmp_path, monkeypatch):
    """The plan's exact token counts (every selected example encoded, a batch a task) and the ids it hands to
    ``ftc train`` are the local engine's, byte for byte; pairs keep no ids."""
    from ftc.data import tokens
    from tests.conftest import plan_for

    monkeypatch.setattr(tokens, "BATCH", 16)  # many tasks
    address, workers = two_nodes
    seen, ids = {}, {}
    before = len(_finished(address, "encode_examples"))
    for engine, extra in (("local", []), ("ray", ["data.engine=ray", f"data.ray_address={address}"])):
        monkeypatch.setenv("FTC_CACHE", str(tmp_path / engine))  # nothing of the other engine's to find
        plan = plan_for([*BUILT_IN[case], *extra])
        assert plan.errors == (), plan.errors
        d = plan.data
        seen[engine] = (d.examples, d.dropped, d.tokens, d.tokens_per_example, d.quality)
        root = tmp_path / engine / "token-ids"
        ids[engine] = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    ran = _finished(address, "encode_examples")
    assert len(ran) > before and set(ran) <= workers, "the ray plan's examples are encoded in the workers' tasks"
    assert seen["ray"] == seen["local"]
    assert ids["ray"] == ids["local"]
    assert bool(ids["local"]) == (case != "sample_preference"), sorted(ids["local"])


def test_a_ray_task_that_gives_no_result_is_run_again_once_then_refused(two_nodes, tmp_path, monkeypatch, caplog):
    import time

    from ftc.data import engine
    from ftc.errors import UserError

    def stalls_once(marker: str) -> str:  # a nested function: Ray sends it by value, not by module name
        from pathlib import Path

        if Path(marker).exists():
            return "done"
        Path(marker).touch()
        time.sleep(120)
        return "late"

    def stalls(_: str) -> str:
        time.sleep(120)
        return "late"

    monkeypatch.setattr(engine, "STALL_S", 30.0)  # room for the rerun's fresh worker on a busy machine
    address, _ = two_nodes
    with engine.engine("ray", address) as runs_on:
        assert list(runs_on.map(stalls_once, [str(tmp_path / "marker")])) == ["done"]
        assert "a stalls_once task gave no result in 30 s; cancelled and run again" in caplog.text
        monkeypatch.setattr(engine, "STALL_S", 2.0)
        with pytest.raises(UserError, match="a stalls task gave no result in 2 s, twice"):
            list(runs_on.map(stalls, ["x"]))
