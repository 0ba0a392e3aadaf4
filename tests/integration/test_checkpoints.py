"""Checkpoints are complete or invisible (ftc.runtime.checkpoints): a damaged newest checkpoint is passed over for
the newest intact one, and a pickle planted in any checkpoint file never runs, whether ftc checks it or DeepSpeed's
own loader reads it."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the unit tier runs without torch; this module needs it

from tests.integration.helpers import fast_plan  # noqa: E402 - after the importorskip above

pytestmark = pytest.mark.integration


class Planted:
    """A pickle payload: unpickling it creates the file named by ``marker`` (what an attacker's code would do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def plant(path: Path, marker: Path) -> None:
    """Overwrites ``path`` with a zip-format torch pickle that, unpickled, runs ``Planted``'s code."""
    torch.save({"state": torch.zeros(2), "payload": Planted(str(marker))}, path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 6-step LoRA run checkpointed at steps 3 and 6."""
    from ftc.runtime.train import train

    plan = fast_plan(tmp_path_factory.mktemp("ckpt"), ["train.save_steps=3", "eval.enabled=false"])
    train(plan, plan.output_dir)
    return plan


def _copy(plan, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoints"
    shutil.copytree(Path(plan.output_dir) / "checkpoints", target)
    return target


DAMAGE = {
    "trainer_state_empty": lambda c, m: (c / "trainer_state.json").write_text(""),  # a disk full mid-write
    "adapter_cut_short": lambda c, m: (c / "adapter_model.safetensors").write_bytes(
        (c / "adapter_model.safetensors").read_bytes()[:-100]),
    "optimizer_missing": lambda c, m: (c / "optimizer.pt").unlink(),
    "optimizer_planted": lambda c, m: plant(c / "optimizer.pt", m),
    "rng_state_planted": lambda c, m: plant(c / "rng_state.pth", m),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_passed_over_for_the_newest_intact_one(finished, tmp_path, how, capsys):
    from ftc.runtime.checkpoints import MANIFEST, last_intact, problem

    checkpoints = _copy(finished, tmp_path)
    assert (checkpoints / "checkpoint-6" / MANIFEST).is_file()  # written at save
    assert last_intact(checkpoints) == str(checkpoints / "checkpoint-6")
    marker = tmp_path / "planted-code-ran"
    DAMAGE[how](checkpoints / "checkpoint-6", marker)
    assert problem(checkpoints / "checkpoint-6") is not None
    assert last_intact(checkpoints) == str(checkpoints / "checkpoint-3")
    assert "checkpoint-6 is not resumed from" in capsys.readouterr().err
    assert not marker.exists()


def test_a_planted_pickle_is_refused_by_deepspeeds_loader_without_running(tmp_path):
    """DeepSpeed reads ZeRO states with torch.load(weights_only=False): ftc's replacement refuses the payload."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    from ftc.errors import RunFailed
    from ftc.runtime.checkpoints import deepspeed_weights_only

    marker, state = tmp_path / "planted-code-ran", tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    plant(state, marker)
    deepspeed_weights_only()
    with pytest.raises(RunFailed, match="refused to load"):
        TorchCheckpointEngine.load(TorchCheckpointEngine.__new__(TorchCheckpointEngine), str(state))
    assert not marker.exists()
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    legit = tmp_path / "legit_optim_states.pt"  # what DeepSpeed 0.19 pickles into ZeRO optimizer states
    torch.save({"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.weights, "t": torch.ones(3)}, legit)
    loaded = TorchCheckpointEngine.load(TorchCheckpointEngine.__new__(TorchCheckpointEngine), str(legit))
    assert loaded["zero_stage"] == ZeroStageEnum.weights and torch.equal(loaded["t"], torch.ones(3))
    with pytest.raises(pickle.UnpicklingError):  # the plain torch.load the replacement guards would have run it
        torch.load(state, weights_only=True)


def test_a_rerun_resumes_from_the_intact_checkpoint_when_the_newest_holds_a_planted_pickle(finished, tmp_path):
    from ftc.runtime.train import train

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(Path(finished.output_dir) / "checkpoints", run / "checkpoints")
    marker = tmp_path / "planted-code-ran"
    plant(run / "checkpoints" / "checkpoint-6" / "rng_state.pth", marker)
    longer = dataclasses.replace(finished, output_dir=str(run),
                                 train=dataclasses.replace(finished.train, max_steps=9))
    figures = train(longer, str(run))
    assert figures["resumed_from"].endswith("checkpoint-3") and figures["steps"] == 9
    assert not marker.exists()
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "resume" and events[0]["checkpoint"].endswith("checkpoint-3")


def test_eval_of_a_run_whose_weights_are_a_pickle_is_one_line_and_never_unpickles(finished, tmp_path):
    """A run directory whose adapter/ holds a pickled ``adapter_model.bin`` instead of safetensors (planted): `ftc
    eval` refuses it in one line, exit 2, and the payload never runs."""
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(Path(finished.output_dir), run)
    (run / "plan.json").write_text(dataclasses.replace(finished, output_dir=str(run)).to_json())
    for f in (run / "adapter").glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "planted-code-ran"
    plant(run / "adapter" / "adapter_model.bin", marker)
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "eval", str(run)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "pickled weights (adapter_model.bin), which ftc never loads" in r.stderr
    assert not marker.exists()


def test_a_sharded_checkpoints_index_is_read_safely_and_a_planted_one_is_refused(tmp_path):
    """FSDP checkpoints are torch.distributed.checkpoint directories whose ``.metadata`` index the library
    unpickles as it is: one written by the library passes the restricted read, a planted one is refused unrun."""
    import torch
    import torch.distributed.checkpoint as dcp

    from ftc.runtime.checkpoints import problem

    checkpoint = tmp_path / "checkpoint-3"
    (checkpoint / "pytorch_model_fsdp_0").mkdir(parents=True)
    dcp.save({"w": torch.ones(4, 4)}, storage_writer=dcp.FileSystemWriter(str(checkpoint / "pytorch_model_fsdp_0")),
             no_dist=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert problem(checkpoint) is None

    ran = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (os.mkdir, (str(ran),))

    (checkpoint / "pytorch_model_fsdp_0" / ".metadata").write_bytes(pickle.dumps(Planted()))
    why = problem(checkpoint)
    assert why and "would unpickle" in why and "mkdir" in why and not ran.exists()
