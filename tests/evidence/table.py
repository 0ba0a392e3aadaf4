"""ftc's plan against published, measured fine-tuning runs (tests/evidence/published_runs.yaml).

Each run is restated as ftc overrides and compiled with the planner, exactly as ``ftc plan`` would; the prediction
is then compared with what the source measured, like with like (live tensors with max_memory_allocated, allocator
reservation with max_memory_reserved, the process peak with a card's capacity). Two source conditions ftc's own
runtime does not have are applied as stated adjustments, each computed from the architecture:

- ``bnb_saves_inputs``: bitsandbytes 0.41's 4-bit matmul kept its input for the backward (``ctx.tensors = (A, B)``;
  0.50 keeps only the packed weight), one copy per token and layer of each distinct input of the quantized linears:
  the attention input (h), the output projection's (q_dim), the MLP input (h) and the down projection's (i).
- ``logit_bytes``: the source's loss held that many bytes per logit where ftc's model loss is charged
  ``est.LOGIT_BYTES``.
- ``optimizer_in_bwd``: torchtune applies each gradient in the backward and frees it, so no full set of gradients
  is ever held: ftc's gradient term (every parameter in the weight dtype) is taken off.

``python -m tests.evidence.table`` prints the markdown table that docs/ESTIMATES.md carries.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ftc.compiler import estimate as est
from ftc.compiler.draft import verdict

RUNS = Path(__file__).with_name("published_runs.yaml")
GIB = 2 ** 30 / 1e9


@dataclass(frozen=True)
class Row:
    source: str
    label: str
    metric: str
    measured_gb: Optional[float]
    predicted_gb: Optional[float]
    measured_tps: Optional[float]
    predicted_tps: Optional[float]
    fits: bool
    excluded: Optional[str]
    method: str
    tps_excluded: Optional[str] = None
    fitted: bool = False
    fixed_gb: float = 0.0
    """The part of ``predicted_gb`` that ``est.MEMORY_FIT`` does not scale (the CUDA context of a process peak)."""
    floor_gb: float = 0.0
    """What the parameter counts alone make certain, in the same metric (the plan's band never goes below it)."""
    oom: bool = False
    """The run ran out of memory on its card (``predicted_gb`` is then the process peak, against ``card_gb``)."""
    card_gb: float = 0.0

    @property
    def memory_error(self) -> Optional[float]:
        if self.measured_gb is None or self.predicted_gb is None:
            return None
        return self.predicted_gb / self.measured_gb - 1

    @property
    def tps_error(self) -> Optional[float]:
        if not self.measured_tps or self.predicted_tps is None:
            return None
        return self.predicted_tps / self.measured_tps - 1


def load() -> dict:
    return yaml.safe_load(RUNS.read_text())


def _label(plan, run: dict) -> str:
    t = plan.train
    card = f", {run['card']} card" if run.get("card") else f", {plan.hardware.name}"
    q = plan.method.quantization
    method = f"{plan.method.name}{' dq' if q and q.double_quant else ''} r={plan.method.r}" if plan.method.peft else \
        f"{plan.method.name} {plan.method.weight_dtype} {plan.train.optim}"
    return (f"{plan.model.name} {method}, micro {plan.batch.micro} x "
            f"{plan.data.max_length}{', ckpt' if t.gradient_checkpointing else ''}{card}")


def predict(run: dict, sources: dict) -> Row:
    from tests.conftest import plan_for

    src = sources[run["source"]]
    # A run's strategy and offload are what it did (its overrides say so), never what ftc would choose for it.
    plan = plan_for(["train.offload=none", *run["model"], *src.get("overrides", []), *run.get("overrides", [])])
    m = plan.memory
    b = m.breakdown
    extra = 0.0
    if run.get("bnb_saves_inputs"):
        mo = plan.model
        q_dim = mo.num_heads * mo.head_dim
        per_token = (2 * mo.hidden_size + q_dim + mo.intermediate_size) * mo.num_layers * est.BYTES["bf16"]
        extra += per_token * plan.batch.micro * plan.data.max_length / est.GB
    if run.get("optimizer_in_bwd"):
        extra -= plan.model.params * est.BYTES[plan.method.weight_dtype] / est.GB
    if src.get("logit_bytes"):
        extra += b["logits"] * (src["logit_bytes"] / est.LOGIT_BYTES - 1)
    extra *= est.MEMORY_FIT  # the source's conditions are live tensors too
    metric = src["metric"]
    scale = GIB if src.get("memory_gib") else 1.0
    runtime = b["runtime"]
    fixed = 0.0
    if metric == "allocated":
        predicted, measured = m.live_gb + extra, run.get("memory")
    elif metric == "reserved":
        predicted, measured = (m.live_gb + extra) * est.ALLOCATOR_SLACK, run.get("memory")
    elif metric == "process":  # the process peak as nvidia-smi shows it
        predicted, measured, fixed = m.per_device_gb + extra * est.ALLOCATOR_SLACK, run.get("memory"), runtime
    else:  # boundary: the process peak against the card's capacity
        predicted, measured, fixed = m.per_device_gb + extra * est.ALLOCATOR_SLACK, m.device_gb, runtime
    if run.get("oom"):  # no figure: the process peak, held against the card it did not fit
        predicted, measured, fixed = m.per_device_gb + extra * est.ALLOCATOR_SLACK, None, runtime
    # (optimizer_in_bwd's gradients, never all held, come off the certain part too)
    floor = sum(b[k] for k in ("weights", "adapters_grads_optimizer", "zero3_gather_buffer")) + min(extra, 0) + fixed
    # Would ftc refuse it? The process peak, with the source's conditions applied, against the card.
    fits = verdict(m.per_device_gb + extra * est.ALLOCATOR_SLACK, m.device_gb, floor - fixed + runtime) \
        != "does_not_fit"
    return Row(source=run["source"], label=_label(plan, run), metric=metric,
               measured_gb=measured * scale if measured is not None and metric != "boundary" else measured,
               predicted_gb=round(predicted, 3), measured_tps=run.get("tokens_per_s"),
               predicted_tps=int(round(plan.time.tokens_per_s)) if run.get("tokens_per_s") else None,
               fits=fits, excluded=run.get("exclude"), method=plan.method.name,
               tps_excluded=src.get("tps_exclude") if run.get("tokens_per_s") else None,
               fitted=bool(run.get("fitted") or src.get("tps_fitted")), fixed_gb=fixed, floor_gb=floor,
               oom=bool(run.get("oom")), card_gb=m.device_gb)


def rows() -> list[Row]:
    data = load()
    return [predict(run, data["sources"]) for run in data["runs"]]


def summary(table: list[Row]) -> dict[str, float]:
    mem = [abs(r.memory_error) for r in table if r.memory_error is not None and not r.excluded]
    tps = [r for r in table if r.tps_error is not None and not r.excluded and not r.tps_excluded]
    tested = [abs(r.tps_error) for r in tps if not r.fitted]
    tps_err = [abs(r.tps_error) for r in tps]
    return {"memory_runs": len(mem), "memory_median": statistics.median(mem), "memory_worst": max(mem),
            "tps_runs": len(tps_err), "tps_median": statistics.median(tps_err) if tps_err else float("nan"),
            "tps_worst": max(tps_err) if tps_err else float("nan"), "tps_fitted": len(tps_err) - len(tested),
            "tps_tested_worst": max(tested) if tested else float("nan")}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{x * 100:+.0f}%"


def markdown(table: list[Row]) -> str:
    data = load()
    lines = ["| source | run | measured | ftc | error | tokens/s measured | ftc | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        what = {"allocated": "allocated", "reserved": "reserved", "process": "process", "boundary": "card"}[r.metric]
        err = _pct(r.memory_error) + (" (excluded)" if r.excluded and r.memory_error is not None else "")
        measured = f"out of memory ({r.card_gb:g} GB card)" if r.oom else \
            "-" if r.measured_gb is None else f"{r.measured_gb:.2f} GB {what}"
        predicted = f"{r.predicted_gb:.2f} GB" if r.oom or r.measured_gb is not None else "-"
        tps_err = _pct(r.tps_error) + (" (excluded)" if r.tps_error is not None and (r.excluded or r.tps_excluded)
                                       else " (fitted)" if r.fitted else "")
        lines.append(f"| {r.source} | {r.label} | {measured} | {predicted} | {err} | "
                     f"{r.measured_tps or '-'} | {r.predicted_tps or '-'} | {tps_err} |")
    s = summary(table)
    lines += ["", f"Memory: {s['memory_runs']} runs, median error {s['memory_median'] * 100:.1f}%, worst "
                  f"{s['memory_worst'] * 100:.1f}%. Tokens/s: {s['tps_runs']} runs, median error "
                  f"{s['tps_median'] * 100:.1f}%, worst {s['tps_worst'] * 100:.1f}% ({s['tps_fitted']} of them fitted "
                  f"constants; the others' worst {s['tps_tested_worst'] * 100:.1f}%).", ""]
    for name, src in data["sources"].items():
        lines.append(f"- **{name}** ({src['cite']}): {src['how']}")
    excluded = [(r.label, r.excluded) for r in table if r.excluded]
    if excluded:
        lines += ["", "Excluded from the medians:"] + [f"- {label}: {why}." for label, why in excluded]
    tps_excluded = sorted({(r.source, r.tps_excluded) for r in table if r.tps_excluded and not r.excluded})
    if tps_excluded:
        lines += ["", "Excluded from the tokens/s medians:"] + [f"- every {source} row: {why}."
                                                                 for source, why in tps_excluded]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(rows()), end="")
