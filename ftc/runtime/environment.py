"""The live environment against the plan's: before any weight is loaded, every optional package the plan depends on
(its attention kernel, fused loss, loggers, generator) must be importable here, the machine that trains."""

from __future__ import annotations

import importlib.util

from ftc.errors import UserError
from ftc.plan import Plan


def required(plan: Plan) -> dict[str, str]:
    """The optional packages the plan's decisions need, with the decision that needs each."""
    needs: dict[str, str] = {}
    if plan.model.attn_implementation.startswith("flash"):
        needs["flash_attn"] = f"model.attn_implementation={plan.model.attn_implementation}"
    if plan.train.loss == "liger":
        needs["liger_kernel"] = "train.loss=liger"
    for tracker in plan.train.report_to:
        needs[tracker] = f"train.report_to={list(plan.train.report_to)}"
    if plan.objective.generation in ("vllm", "vllm_server"):
        needs["vllm"] = f"objective.generation={plan.objective.generation}"
    return needs


def check(plan: Plan) -> None:
    """Refuses, naming each difference, when a package the plan assumed is not importable here."""
    missing = {name: why for name, why in required(plan).items() if importlib.util.find_spec(name) is None}
    if missing:
        listed = "; ".join(f"{name} (for {why})" for name, why in missing.items())
        raise UserError(f"ftc: the plan assumed packages this machine lacks: {listed}. The plan was made for "
                        f"hardware.packages={list(plan.hardware.packages)}; install them here (pip install "
                        f"{' '.join(n.replace('_', '-') for n in missing)}), or plan again with the packages this "
                        "machine has (hardware.packages=[...]). Nothing was loaded.")
