"""Experiment trackers (``train.report_to``): TensorBoard, MLflow and W&B, each holding what ftc decided and found.

transformers' own integrations name a run at random, log the library's ~170 TrainingArguments and none of the plan
or the evaluation, and put TensorBoard's files under ``checkpoints/runs/<date>_<host>``. ftc drives the same three
libraries itself, in three places:

- ``start`` (the driver, before training): each tracker's run, named after the experiment (``name``) and the run
  directory, with the plan's decided parameters (``parameters``); its ids go to ``<run>/trackers.json`` so that a
  resumed run goes on in the same tracker run, and to the Ray workers through ``IDS_ENV``.
- ``callback`` (the process that trains, world rank 0): the training and validation metrics at every log.
- ``finish`` (the driver, after report.md): the evaluation (each model's metrics, the verdict), report.md, the PNGs,
  plan.json and summary.json as artifacts, and the run's end state.

TensorBoard's log directory is the run directory itself, so ``tensorboard --logdir runs/`` lists runs by their
directory. A tracker's refusal (a bad URI, no login) stops the run before any weight is loaded, its message whole.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ftc.errors import UserError
from ftc.plan import Plan

IDS_FILE = "trackers.json"
IDS_ENV = "FTC_TRACKER_IDS"  # the driver's tracker ids, for Ray workers (whose run dir may be a local copy)
ENV_PREFIXES = ("MLFLOW_", "WANDB_")  # the trackers' own settings, forwarded to Ray workers as they are
IMAGES = ("loss.png", "data_tokens.png")
ARTIFACTS = ("report.md", "summary.json", "plan.json", "config.yaml", "data_card.md", *IMAGES)


def parameters(plan: Plan) -> dict[str, Any]:
    """The plan's decided parameters, flat: what was trained, how, on what, and what the plan predicted."""
    m, me, d, o, b, s, t = plan.model, plan.method, plan.data, plan.objective, plan.batch, plan.schedule, plan.train
    q = me.quantization
    return {
        "model.name": m.name, "model.path": m.path, "model.params": m.params,
        "method.name": me.name, "method.r": me.r, "method.alpha": me.alpha, "method.dropout": me.dropout,
        "method.target_modules": ",".join(me.target_modules), "method.trainable_params": me.trainable_params,
        "method.quantization": f"{q.bits}-bit {q.quant_type}" if q else "none",
        "objective.name": o.name, "objective.beta": o.beta,
        "data.name": d.name, "data.format": d.format, "data.max_length": d.max_length, "data.packing": d.packing,
        "data.train_examples": d.examples.get("train", 0), "data.validation_examples": d.examples.get("validation", 0),
        "data.test_examples": d.examples.get("test", 0), "data.train_tokens": d.tokens.get("train", 0),
        "batch.micro": b.micro, "batch.grad_accum": b.grad_accum, "batch.world": b.world, "batch.global": b.global_,
        "schedule.steps": s.steps, "schedule.epochs": s.epochs, "schedule.warmup_steps": s.warmup_steps,
        "train.lr": t.lr, "train.scheduler": t.scheduler, "train.weight_decay": t.weight_decay,
        "train.optim": t.optim, "train.gradient_checkpointing": t.gradient_checkpointing,
        "train.zero_stage": t.zero_stage, "train.loss": t.loss, "train.seed": t.seed, "precision": plan.precision,
        "hardware.name": plan.hardware.name, "hardware.devices": plan.hardware.devices,
        "launcher.kind": plan.launcher.kind,
        "predicted.memory_gb": plan.memory.per_device_gb, "predicted.hours": plan.time.hours,
        "predicted.usd": plan.cost.usd, "predicted.tokens_per_s": plan.time.tokens_per_s,
    }


def run_name(plan: Plan) -> str:
    """The run directory as the user named it: relative to the working directory when it lies under it."""
    run = Path(plan.output_dir).resolve()
    try:
        return str(run.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(run)


def experiment(plan: Plan, env: str) -> str:
    """The tracker's project / experiment: the tracker's own environment setting when the user gave one, else the
    experiment's ``name``."""
    return os.environ.get(env) or plan.name


def _guarded(tracker: str, plan: Plan, step: Callable[[], Any]) -> Any:
    """``step``'s result, or the library's own refusal as one UserError, whole (a cut message hides its fix)."""
    try:
        return step()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any library error is the refusal
        raise UserError(f"ftc: train.report_to={list(plan.train.report_to)}: {tracker} refused to start the run, so "
                        f"nothing was trained. {tracker} said: {type(e).__name__}: {str(e).strip()} "
                        f"(fix: what {tracker} says above, or train.report_to=[none])") from None


# --- the driver, before training -------------------------------------------------------------------------------
def start(plan: Plan) -> dict[str, Any]:
    """Opens (or, resuming, reopens) each tracker's run; returns and saves its ids."""
    run = Path(plan.output_dir)
    saved = read_ids(run)
    ids: dict[str, Any] = {}
    if "mlflow" in plan.train.report_to:
        ids["mlflow"] = _guarded("MLflow", plan, lambda: _mlflow_start(plan, saved.get("mlflow")))
    if "wandb" in plan.train.report_to:
        ids["wandb"] = saved.get("wandb") or _wandb_id()
    if ids:  # TensorBoard needs none: its log directory is the run directory
        from ftc.runtime import artifacts

        artifacts.atomic_write_json(run / IDS_FILE, ids)
    return ids


def read_ids(run: Path) -> dict[str, Any]:
    if os.environ.get(IDS_ENV):
        return json.loads(os.environ[IDS_ENV])
    try:
        return json.loads((run / IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def worker_env(plan: Plan) -> dict[str, str]:
    """What a Ray worker needs to log into the driver's tracker runs: the trackers' settings and the ids."""
    if not plan.train.report_to:
        return {}
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    env[IDS_ENV] = json.dumps(read_ids(Path(plan.output_dir)))
    return env


def _mlflow_uri() -> str:
    """MLflow's tracking URI with a relative sqlite path made absolute, and put in the environment: workers and the
    evaluation run elsewhere (Ray sets its workers' working directory) and must write to the same store."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def _mlflow_start(plan: Plan, saved: Optional[str]) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunStatus

    client = MlflowClient(_mlflow_uri())
    if saved:
        try:
            client.update_run(saved, status=RunStatus.to_string(RunStatus.RUNNING))
            return saved
        except Exception:  # the store was reset or is another one: a new run, said in its tags
            pass
    name = experiment(plan, "MLFLOW_EXPERIMENT_NAME")
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=run_name(plan),
                            tags={"ftc.run_dir": str(Path(plan.output_dir).resolve()), "ftc.model": plan.model.name,
                                  "ftc.method": plan.method.name, "ftc.objective": plan.objective.name})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in parameters(plan).items()])
    return run.info.run_id


def _wandb_id() -> str:
    """A new W&B run id (letters and digits, unique within the project), made here: W&B's own generator is not a
    public API (``wandb.util.generate_id`` is gone from 0.31)."""
    import uuid

    return uuid.uuid4().hex[:12]


def _wandb_init(plan: Plan, run_id: str, run_dir: Path) -> Any:
    import wandb

    return wandb.init(id=run_id, resume="allow", project=experiment(plan, "WANDB_PROJECT"), name=run_name(plan),
                      config=parameters(plan), dir=str(run_dir))


# --- the training process, world rank 0 -------------------------------------------------------------------------
def scalars(logs: dict[str, Any]) -> dict[str, float]:
    """A Trainer log as tracker scalars: ``eval_loss`` (the validation split's) -> ``validation/loss``, ``loss`` ->
    ``train/loss``; numbers only."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[f"validation/{key[5:]}" if key.startswith("eval_") else f"train/{key}"] = float(value)
    return out


def callback(plan: Plan, run_dir: Path) -> Any:
    """A TrainerCallback logging training metrics to the plan's trackers, on world rank 0; None without trackers."""
    if not plan.train.report_to:
        return None
    from transformers import TrainerCallback

    class Trackers(TrainerCallback):
        def __init__(self) -> None:
            self.tensorboard = self.mlflow = self.wandb = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            ids = read_ids(Path(plan.output_dir))
            if "tensorboard" in plan.train.report_to:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(log_dir=str(run_dir))
            if ids.get("mlflow"):
                from mlflow import MlflowClient

                self.mlflow = (MlflowClient(), ids["mlflow"])
            if ids.get("wandb"):
                self.wandb = _wandb_init(plan, ids["wandb"], run_dir)

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = scalars(logs or {})
            if not values:
                return
            step = state.global_step
            if self.tensorboard is not None:
                for key, value in values.items():
                    self.tensorboard.add_scalar(key, value, step)
                self.tensorboard.flush()
            if self.mlflow is not None:
                from mlflow.entities import Metric

                client, run_id = self.mlflow
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
            if self.wandb is not None:
                self.wandb.log(values, step=step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.tensorboard is not None:
                self.tensorboard.close()
            if self.wandb is not None:
                self.wandb.finish()

    return Trackers()


# --- the driver, after the report -------------------------------------------------------------------------------
def evaluation_scalars(evaluation: Optional[dict[str, Any]]) -> dict[str, float]:
    """Each model's metrics on the test split: ``test/tuned/exact_match``, ``test/base/rouge_l``, ..."""
    out = {}
    for model in ("tuned", "base", "prompted", "start"):
        for key, value in ((evaluation or {}).get(model) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"test/{model}/{key}"] = float(value)
    return out


def finish(plan: Plan, summary: dict[str, Any]) -> None:
    """The evaluation, the verdict, report.md and the figures into every tracker run; the run's end state."""
    if not plan.train.report_to:
        return
    run = Path(plan.output_dir)
    ids = read_ids(run)
    evaluation = summary.get("eval") or {}
    values = evaluation_scalars(evaluation)
    verdict = evaluation.get("verdict") or summary.get("failure") or ""
    step = int((summary.get("training") or {}).get("steps") or 0)
    files = [run / name for name in ARTIFACTS if (run / name).is_file()]
    failed = summary.get("status") != "completed"
    if "tensorboard" in plan.train.report_to:
        _guarded("TensorBoard", plan, lambda: _tensorboard_finish(plan, run, values, verdict, step))
    if ids.get("mlflow"):
        _guarded("MLflow", plan, lambda: _mlflow_finish(ids["mlflow"], values, verdict, step, files, failed))
    if ids.get("wandb"):
        _guarded("W&B", plan, lambda: _wandb_finish(plan, ids["wandb"], run, values, verdict, files, failed))


def failed(plan: Plan) -> None:
    """A run that stopped with an error: its MLflow run says FAILED (W&B marks a run it never heard end itself)."""
    ids = read_ids(Path(plan.output_dir))
    if ids.get("mlflow"):
        try:
            from mlflow import MlflowClient

            MlflowClient(_mlflow_uri()).set_terminated(ids["mlflow"], "FAILED")
        except Exception:  # the run's own error is what the user needs to read; this one is secondary
            pass


def _parameters_table(plan: Plan) -> str:
    return "| parameter | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in parameters(plan).items())


def _tensorboard_finish(plan: Plan, run: Path, values: dict[str, float], verdict: str, step: int) -> None:
    import matplotlib.image
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run)) as writer:
        for key, value in values.items():
            writer.add_scalar(key, value, step)
        writer.add_text("verdict", verdict or "(no evaluation)", step)
        writer.add_text("parameters", _parameters_table(plan), step)
        if (run / "report.md").is_file():
            writer.add_text("report", (run / "report.md").read_text(), step)
        for name in IMAGES:
            if (run / name).is_file():
                writer.add_image(name.removesuffix(".png"), matplotlib.image.imread(run / name)[..., :3], step,
                                 dataformats="HWC")


def _mlflow_finish(run_id: str, values: dict[str, float], verdict: str, step: int, files: list[Path],
                   failed: bool) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(_mlflow_uri())
    now = int(time.time() * 1000)
    tags = [RunTag("ftc.verdict", verdict[:5000])]
    report = next((f for f in files if f.name == "report.md"), None)
    if report is not None:  # the run page's description
        tags.append(RunTag("mlflow.note.content", report.read_text()[:5000]))
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()], tags=tags)
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _wandb_finish(plan: Plan, run_id: str, run: Path, values: dict[str, float], verdict: str, files: list[Path],
                  failed: bool) -> None:
    import wandb

    live = _wandb_init(plan, run_id, run)
    live.summary.update({**values, "verdict": verdict})
    images = {f"figures/{f.stem}": wandb.Image(str(f)) for f in files if f.suffix == ".png"}
    if images:
        live.log(images)
    artifact = wandb.Artifact(f"report-{run_id}", type="ftc-report")
    for path in files:
        artifact.add_file(str(path))
    live.log_artifact(artifact)
    live.finish(exit_code=1 if failed else 0)
