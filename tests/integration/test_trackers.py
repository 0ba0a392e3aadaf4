"""Trackers as their users read them: a TensorBoard log directory and an MLflow sqlite store, read back with the
libraries' own readers, hold the run's name, the plan's parameters, the curves, the evaluation, the verdict and
report.md; a tracker's refusal is shown whole before anything trains; W&B's calls (no W&B package here)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("torch")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

from tests.conftest import plan_for  # noqa: E402
from tests.integration.helpers import FAST  # noqa: E402

pytestmark = pytest.mark.integration


def _train(cwd: Path, extra: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), **env))


def _text(accumulator, tag: str) -> str:
    return accumulator.Tensors(f"{tag}/text_summary")[-1].tensor_proto.string_val[0].decode()


def test_tensorboard_and_an_mlflow_store_hold_the_plan_the_curves_the_verdict_and_the_report(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ftc.plan import Plan
    from ftc.runtime.trackers import parameters

    r = _train(tmp_path, ["train.report_to=[tensorboard,mlflow]", "name=tickets", "output_dir=runs/t1"],
               {"MLFLOW_TRACKING_URI": "sqlite:///tracking.db"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "t1"
    plan = Plan.load(str(run / "plan.json"))
    summary = json.loads((run / "summary.json").read_text())
    verdict, steps = summary["eval"]["verdict"], summary["training"]["steps"]
    assert steps == 6 and not (run / "checkpoints" / "runs").exists()  # not transformers' own TensorBoard place

    # TensorBoard: the run directory is the log directory.
    tb = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    tb.Reload()
    assert [e.step for e in tb.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]  # every logged step, the last included
    assert [e.step for e in tb.Scalars("validation/loss")] == [3, 6]
    tuned = summary["eval"]["tuned"]
    assert tb.Scalars("test/tuned/rouge_l")[-1].value == pytest.approx(tuned["rouge_l"])
    assert tb.Scalars("test/base/loss")[-1].value == pytest.approx(summary["eval"]["base"]["loss"])
    assert _text(tb, "verdict") == verdict
    assert _text(tb, "report") == (run / "report.md").read_text()
    assert "| method.r | 16 |" in _text(tb, "parameters")
    assert {"loss", "data_tokens"} <= set(tb.Tags()["images"])

    # MLflow: the experiment's name, the run directory as the run's name, the plan's parameters and nothing else.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'tracking.db'}")
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    logged = client.get_run(run_id)
    assert client.get_experiment(logged.info.experiment_id).name == "tickets"
    assert logged.info.run_name == "runs/t1" and logged.info.status == "FINISHED"
    assert logged.data.params == {k: str(v) for k, v in parameters(plan).items()}
    assert logged.data.tags["ftc.verdict"] == verdict
    assert logged.data.tags["mlflow.note.content"].startswith((run / "report.md").read_text()[:200])
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert logged.data.metrics["test/tuned/exact_match"] == pytest.approx(tuned["exact_match"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.md", "summary.json", "plan.json", "loss.png"} <= artifacts


def test_a_trackers_refusal_is_shown_whole_before_anything_trains(tmp_path):
    r = _train(tmp_path, ["train.report_to=[mlflow]", "output_dir=runs/refused"],
               {"MLFLOW_TRACKING_URI": f"file://{tmp_path / 'filestore'}"})
    assert r.returncode == 2, r.stderr[-3000:]
    assert "MLflow refused to start the run, so nothing was trained" in r.stderr
    # MLflow's own fix, at the end of a long message, is not cut away
    assert "set `MLFLOW_ALLOW_FILE_STORE=true`" in r.stderr and "train.report_to=[none]" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs" / "refused" / "checkpoints").exists()


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tmp_path, monkeypatch):
    from ftc.runtime import trackers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///tracking.db")  # relative: made absolute for the workers
    monkeypatch.delenv(trackers.IDS_ENV, raising=False)
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    plan = plan_for(FAST + ["train.report_to=[mlflow]", f"output_dir={run}"])
    first = trackers.start(plan)["mlflow"]
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'tracking.db'}"
    client.set_terminated(first, "KILLED")  # stopped; the same command resumes
    assert trackers.start(plan)["mlflow"] == first
    assert client.get_run(first).info.status == "RUNNING"
    env = trackers.worker_env(plan)  # what a Ray worker gets to log into the same run
    assert json.loads(env[trackers.IDS_ENV])["mlflow"] == first and env["MLFLOW_TRACKING_URI"].startswith("sqlite:/")


class FakeWandb(types.ModuleType):
    """Records what ftc asks of W&B (the package is not installed here)."""

    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # importable, as far as the plan can tell
        self.calls: list[tuple] = []
        fake = self

        class Run:
            def __init__(self):
                self.summary = {}

            def log(self, values, step=None):
                fake.calls.append(("log", values, step))

            def log_artifact(self, artifact):
                fake.calls.append(("artifact", artifact.name, sorted(Path(f).name for f in artifact.files)))

            def finish(self, exit_code=0):
                fake.calls.append(("finish", exit_code, dict(self.summary)))

        class Artifact:
            def __init__(self, name, type):
                self.name, self.files = name, []

            def add_file(self, path):
                self.files.append(path)

        self.Run, self.Artifact = Run, Artifact
        self.Image = lambda path: ("image", Path(path).name)

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return self.Run()


def test_wandb_gets_the_named_run_the_plans_parameters_the_curves_and_the_report(tmp_path, monkeypatch):
    from ftc.runtime import trackers

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv(trackers.IDS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "w"
    run.mkdir(parents=True)
    plan = plan_for(FAST + ["train.report_to=[wandb]", "name=tickets", f"output_dir={run}"])
    ids = trackers.start(plan)
    assert list(ids) == ["wandb"] and len(ids["wandb"]) == 12 and trackers.start(plan) == ids  # kept when resumed
    run_id = ids["wandb"]
    callback = trackers.callback(plan, run)
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=0)
    callback.on_train_begin(None, state, None)
    for step, loss in ((1, 2.5), (2, 2.0)):
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": loss, "eval_loss": loss + 1, "note": "text"})
    callback.on_train_end(None, state, None)
    (run / "report.md").write_text("# report\n")
    summary = {"status": "completed", "training": {"steps": 2},
               "eval": {"tuned": {"exact_match": 0.5}, "base": {"exact_match": 0.0}, "verdict": "tuned beats base"}}
    trackers.finish(plan, summary)

    inits = [c[1] for c in fake.calls if c[0] == "init"]
    assert len(inits) == 2 and all(i["id"] == run_id and i["resume"] == "allow" for i in inits)
    assert inits[0]["project"] == "tickets" and inits[0]["name"] == "runs/w"
    assert inits[0]["config"] == trackers.parameters(plan)
    logs = [c for c in fake.calls if c[0] == "log"]
    assert logs[:2] == [("log", {"train/loss": 2.5, "validation/loss": 3.5}, 1),
                        ("log", {"train/loss": 2.0, "validation/loss": 3.0}, 2)]
    assert ("artifact", f"report-{run_id}", ["report.md"]) in fake.calls
    end = [c for c in fake.calls if c[0] == "finish"][-1]
    assert end[1] == 0 and end[2]["verdict"] == "tuned beats base" and end[2]["test/tuned/exact_match"] == 0.5
