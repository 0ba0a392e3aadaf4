"""``hardware=auto``: compile the experiment against every GPU profile and rank them by predicted cost (at the spot
price with ``hardware.spot=true``: profiles without one are then refused).

Each profile is compiled exactly as ``ftc plan hardware=<profile>`` would (single devices on the local launcher,
multi-device profiles on Ray with the ZeRO stage the compiler picks). The cheapest profile whose plan has no error
(it fits, and meets budget.max_usd and the deadline budget.max_hours) is chosen; ties go to the faster one.
CPU profiles describe this machine, not something to rent: ``hardware=cpu`` selects them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Optional

from ftc.compiler.plan import Plan
from ftc.errors import UserError

AUTO = "hardware=auto"


@dataclass(frozen=True)
class Option:
    hardware: str
    overrides: tuple[str, ...]
    """What to add to the experiment's overrides to run on this profile (hardware and launcher)."""
    plan: Plan
    why_not: str
    """Empty when the profile can run the experiment; else its first error."""

    def row(self) -> dict[str, Any]:
        p = self.plan
        tokens = p.schedule.tokens
        return {
            "hardware": self.hardware, "launcher": p.launcher.kind, "workers": p.world_size,
            "zero_stage": p.train.zero_stage, "fits": p.memory.fits, "memory_gb": p.memory.per_device_gb,
            "device_gb": p.memory.device_gb, "hours": p.time.hours, "usd": p.cost.usd,
            "on_demand_usd": p.cost.on_demand_usd, "spot_usd": p.cost.spot_usd,
            "usd_per_m_tokens": round(p.cost.usd / tokens * 1e6, 3) if tokens else None,
            "ok": not self.why_not, "why_not": self.why_not,
        }


def profiles() -> list[str]:
    """Every hardware profile shipped in conf/hardware."""
    return sorted(p.name[:-5] for p in files("ftc.conf").joinpath("hardware").iterdir() if p.name.endswith(".yaml"))


def advise(overrides: list[str]) -> tuple[list[Option], Optional[Option]]:
    """Ranks every GPU profile for the experiment ``overrides`` (without hardware/launcher choices)."""
    from hydra import compose, initialize_config_module

    from ftc.compiler.frontend import compile_config, to_typed
    from ftc.config.schema import register

    base = [o for o in overrides if not o.startswith(("hardware=", "launcher="))]
    register()
    options = []
    with initialize_config_module(config_module="ftc.conf", version_base="1.3"):
        for name in profiles():
            typed = to_typed(compose(config_name="config", overrides=base + [f"hardware={name}"]))
            if typed.hardware.accelerator != "cuda":
                continue
            devices = typed.hardware.gpus_per_node * typed.hardware.nodes
            extra = (f"hardware={name}", "launcher=ray" if devices > 1 else "launcher=local")
            plan = compile_config(compose(config_name="config", overrides=base + list(extra)))
            options.append(Option(name, extra, plan, plan.errors[0] if plan.errors else ""))
    options.sort(key=lambda o: (bool(o.why_not), o.plan.cost.usd, o.plan.time.hours, o.hardware))
    chosen = options[0] if options and not options[0].why_not else None
    return options, chosen


def decision(options: list[Option], chosen: Option) -> str:
    runner_up = next((o for o in options if o is not chosen and not o.why_not), None)
    line = (f"hardware={chosen.hardware} (hardware=auto: the cheapest of {len(options)} GPU profiles that fits and "
            f"meets the budget, ${chosen.plan.cost.usd:.2f} in {chosen.plan.time.hours:.2f} h")
    if runner_up:
        line += f"; runner-up {runner_up.hardware}, ${runner_up.plan.cost.usd:.2f} in {runner_up.plan.time.hours:.2f} h"
    return line + ")"


def table(options: list[Option]) -> str:
    head = ["#", "hardware", "launcher", "ZeRO", "memory/device", "hours", "usd", "on-demand/spot", "usd/M tokens",
            "verdict"]
    rows = []
    for i, o in enumerate(options, 1):
        r = o.row()
        rows.append([str(i), r["hardware"], f"{r['launcher']} x{r['workers']}", str(r["zero_stage"]),
                     f"{r['memory_gb']:.1f}/{r['device_gb']:g} GB", f"{r['hours']:.2f}", f"{r['usd']:.2f}",
                     f"{r['on_demand_usd']:.2f}/" + ("-" if r["spot_usd"] is None else f"{r['spot_usd']:.2f}"),
                     "-" if r["usd_per_m_tokens"] is None else f"{r['usd_per_m_tokens']:.2f}",
                     "ok" if r["ok"] else "no: " + r["why_not"][:90]])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head] + rows)


def resolve(argv: list[str]) -> tuple[list[str], Optional[tuple[list[Option], Option]]]:
    """Replaces ``hardware=auto`` in a command's arguments with the chosen profile (and its launcher)."""
    if AUTO not in argv:
        return argv, None
    if "-m" in argv or "--multirun" in argv:
        raise UserError("ftc: hardware=auto is not supported in sweeps yet (fix: run `ftc plan hardware=auto` with "
                        "one trial's values, then sweep with hardware=<the chosen profile>)")
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    options, chosen = advise(overrides)
    if chosen is None:
        raise UserError("ftc: hardware=auto found no GPU profile that can run this experiment:\n" + table(options) +
                        "\n  fix: method=qlora, a shorter data.max_length, or raise budget.max_usd / budget.max_hours")
    rest = [a for a in argv if a != AUTO and not a.startswith("launcher=")]
    return rest + list(chosen.overrides), (options, chosen)
