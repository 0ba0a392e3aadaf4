"""The memory estimate's one fitted factor and its uncertainty, by leave-one-source-out over the published runs.

The analytic model (ftc.compiler.estimate) counts what each tensor holds; against measured runs it is low by a few
percent at the median (tensors it does not see: kernel workspaces, temporary copies, the allocator's rounding). One
factor, ``est.MEMORY_FIT``, scales the live tensors to match. It is fitted as the median over sources of each
source's median measured/predicted ratio, so a source weighs the same however many rows it publishes.

Fit on some sources, check on others: each source is held out in turn, the factor is fitted on the rest, and the
held-out source's rows are predicted with it. Those held-out errors are what docs/ESTIMATES.md reports ("Fit and
uncertainty") and what the plan's band is made of: ``est.MEMORY_BAND`` is the smallest and the largest
measured/predicted ratio of any held-out row's uncertain part (the estimate less the floor the parameter counts
fix: weights, trainable state, runtime), so a row whose source was not used to fit is never outside it, and the
exactly known bytes are not spread.
A source marked ``unpressured`` publishes a peak that bounds the run's need from above only (reserved memory over
variable-length steps on a card far larger than the run: the caching allocator keeps blocks of every shape and
gives them back only when an allocation fails); its rows widen the band's low side, never its high side.

``python -m tests.evidence.fit`` prints the memory table docs/ESTIMATES.md carries; ``python -m tests.evidence.fit tps``
the throughput one (slower: it compiles every throughput row at each utilisation it tries).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ftc.compiler import estimate as est
from tests.evidence import table


@dataclass(frozen=True)
class Held:
    source: str
    label: str
    measured_gb: float
    predicted_gb: float
    """Predicted with the factor fitted on every other source."""
    unpressured: bool
    floor_gb: float = 0.0
    """What the parameter counts alone make certain, in the row's metric (the plan's band does not spread it)."""

    @property
    def error(self) -> float:
        return self.predicted_gb / self.measured_gb - 1

    @property
    def ratio(self) -> float:
        """measured / predicted: where the measurement lies relative to the estimate."""
        return self.measured_gb / self.predicted_gb

    @property
    def uncertain_ratio(self) -> float:
        """measured / predicted of the part the parameter counts do not fix (activations, logits, the fitted
        factor, the allocator): what the plan's band spreads."""
        return (self.measured_gb - self.floor_gb) / (self.predicted_gb - self.floor_gb)


def memory_rows(rows: list[table.Row]) -> list[table.Row]:
    return [r for r in rows if r.memory_error is not None and not r.excluded]


def at(row: table.Row, factor: float) -> float:
    """The row's prediction with ``factor`` on the live tensors in place of the constant the plan used."""
    return (row.predicted_gb - row.fixed_gb) * factor / est.MEMORY_FIT + row.fixed_gb


def fit(rows: list[table.Row]) -> float:
    """The factor on the live tensors: the median over sources of each source's median measured/predicted ratio,
    each prediction taken without any factor."""
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r.source, []).append(r.measured_gb / at(r, 1.0))
    return statistics.median(statistics.median(v) for v in by.values())


def held_out(rows: list[table.Row], unpressured: set[str]) -> tuple[dict[str, float], list[Held]]:
    """Each source predicted with the factor fitted on the others: (factor per held-out source, rows)."""
    rows = memory_rows(rows)
    factors, out = {}, []
    for source in sorted({r.source for r in rows}):
        factors[source] = f = fit([r for r in rows if r.source != source])
        out += [Held(r.source, r.label, r.measured_gb, at(r, f), r.source in unpressured, r.floor_gb)
                for r in rows if r.source == source]
    return factors, out


def band(held: list[Held]) -> tuple[float, float]:
    """(lowest, highest) measured/predicted ratio of the held-out rows' uncertain parts (the estimate less what the
    parameter counts fix); the high side only from sources that measured the run's need."""
    return min(h.uncertain_ratio for h in held), max(h.uncertain_ratio for h in held if not h.unpressured)


def whole_band(held: list[Held]) -> tuple[float, float]:
    """(lowest, highest) measured/predicted ratio of the held-out rows as wholes: the band before 2026-12-07, which
    spread the exactly known weights too."""
    return min(h.ratio for h in held), max(h.ratio for h in held if not h.unpressured)


def summary(held: list[Held]) -> dict[str, float]:
    errors = [h.error for h in held]
    return {"rows": len(held), "sources": len({h.source for h in held}),
            "median": statistics.median(abs(e) for e in errors), "signed": statistics.median(errors),
            "worst_low": min(errors), "worst_high": max(errors)}


def coverage(rows: list[table.Row], unpressured: set[str]) -> dict[str, tuple[int, int]]:
    """For each source: how many of its rows the band made without it (fitted and measured on the others alone)
    contains, of how many."""
    rows = memory_rows(rows)
    out = {}
    for source in sorted({r.source for r in rows}):
        others = [r for r in rows if r.source != source]
        _, held = held_out(others, unpressured)
        lo, hi = band(held)
        f = fit(others)
        mine = [r for r in rows if r.source == source]
        inside = 0
        for r in mine:
            h = Held(r.source, r.label, r.measured_gb, at(r, f), source in unpressured, r.floor_gb)
            inside += lo <= h.uncertain_ratio <= (hi if source not in unpressured else float("inf"))
        out[source] = (inside, len(mine))
    return out


MFU_GRID = [round(0.30 + 0.05 * i, 2) for i in range(9)]


def _tps_runs() -> list[dict]:
    data = table.load()
    return [dict(run, _src=data["sources"][run["source"]]) for run in data["runs"]
            if run.get("tokens_per_s") and not run.get("exclude") and not data["sources"][run["source"]].get(
                "tps_exclude")]


def _tps_error(run: dict, mfu: float) -> float:
    from tests.conftest import plan_for

    plan = plan_for(["train.offload=none", *run["model"], *run["_src"].get("overrides", []), *run.get("overrides", []),
                     f"hardware.mfu={mfu}"])  # what the run did: no offload unless its overrides say so
    return plan.time.tokens_per_s / run["tokens_per_s"] - 1


def throughput_held_out() -> list[tuple[str, float, float]]:
    """Tokens/s, each source held out: the utilisation (hardware.mfu) fitted on the other sources' rows (the grid
    value with the least median error), then the held-out rows predicted with it on their own cards. With no card in
    common, this tests whether a utilisation fitted on one card and model carries to another.
    Returns (source, the mfu used, error) per held-out row. The fixed per-module cost (est.EAGER_ADAPTER_S) stays
    as fitted on PEFT's rows: PEFT's fold is not free of it."""
    runs = _tps_runs()
    out = []
    for source in sorted({r["source"] for r in runs}):
        train = [r for r in runs if r["source"] != source]
        mfu = min(MFU_GRID, key=lambda m: statistics.median(abs(_tps_error(r, m)) for r in train))
        out += [(source, mfu, _tps_error(r, mfu)) for r in runs if r["source"] == source]
    return out


def throughput_markdown() -> str:
    held = throughput_held_out()
    lines = ["| held-out source | rows | mfu fitted on the others | median error | signed median |",
             "|---|---|---|---|---|"]
    for source in sorted({h[0] for h in held}):
        errors = [e for s, _, e in held if s == source]
        mfu = next(m for s, m, _ in held if s == source)
        lines.append(f"| {source} | {len(errors)} | {mfu:g} | {statistics.median(abs(e) for e in errors) * 100:.1f}% "
                     f"| {statistics.median(errors) * 100:+.1f}% |")
    errors = [e for _, _, e in held]
    median = statistics.median(abs(e) for e in errors)
    lines += ["", f"Held out, all {len(errors)} rows: median error {median * 100:.1f}%, "
                  f"signed median {statistics.median(errors) * 100:+.1f}%."]
    return "\n".join(lines) + "\n"


def unpressured_sources() -> set[str]:
    return {name for name, src in table.load()["sources"].items() if src.get("unpressured")}


def markdown(rows: list[table.Row]) -> str:
    up = unpressured_sources()
    factors, held = held_out(rows, up)
    lo, hi = band(held)
    cover = coverage(rows, up)
    lines = ["| held-out source | rows | factor fitted on the others | median error | signed median | worst low | "
             "worst high | inside the others' band |", "|---|---|---|---|---|---|---|---|"]
    for source, f in factors.items():
        s = summary([h for h in held if h.source == source])
        inside, n = cover[source]
        lines.append(f"| {source}{' (unpressured)' if source in up else ''} | {s['rows']} | {f:.3f} | "
                     f"{s['median'] * 100:.1f}% | {s['signed'] * 100:+.1f}% | {s['worst_low'] * 100:+.1f}% | "
                     f"{s['worst_high'] * 100:+.1f}% | {inside} of {n} |")
    s = summary(held)
    raw = summary([Held(r.source, r.label, r.measured_gb, at(r, 1.0), False) for r in memory_rows(rows)])
    lines += ["", f"Held out, all {s['rows']} rows of {s['sources']} sources: median error {s['median'] * 100:.1f}%, "
                  f"signed median {s['signed'] * 100:+.1f}%, worst {s['worst_low'] * 100:+.1f}% / "
                  f"{s['worst_high'] * 100:+.1f}%. Without the factor (the analytic model alone): median "
                  f"{raw['median'] * 100:.1f}%, signed {raw['signed'] * 100:+.1f}%. Fitted on every source: "
                  f"{fit(memory_rows(rows)):.3f} (est.MEMORY_FIT = {est.MEMORY_FIT}). Band (measured / predicted "
                  f"of the held-out rows' uncertain part, the estimate less the floor the parameter counts fix): "
                  f"{lo:.3f} to {hi:.3f} (est.MEMORY_BAND = {est.MEMORY_BAND}); of the rows as wholes "
                  f"{whole_band(held)[0]:.3f} to {whole_band(held)[1]:.3f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(throughput_markdown() if sys.argv[1:] == ["tps"] else markdown(table.rows()), end="")
