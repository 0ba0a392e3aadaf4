"""``hardware=auto``: compile the experiment against every GPU profile and rank them by predicted cost (at the spot
price with ``hardware.spot=true``: profiles without one are then refused).

Each profile is compiled exactly as ``ftc plan hardware=<profile>`` would, on the launcher given
(``launcher=...``), else on the local launcher (a process per device on one node) unless the compiler refuses it
there (several nodes, GRPO on several devices), then on Ray; with the strategy the compiler picks. The cheapest
profile whose plan has no error (it fits, and meets budget.max_usd and the deadline budget.max_hours) is chosen;
ties go to the faster one. A profile where it fits only if the estimate holds (memory.verdict tight) ranks after
every one where it fits outright.
CPU profiles describe this machine, not something to rent: ``hardware=cpu`` selects them explicitly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Optional

from ftc.errors import UserError
from ftc.plan import Plan, runs_total

AUTO = "hardware=auto"


@dataclass(frozen=True)
class Sums:
    """A sweep's totals on one profile: every trial's plan summed."""

    usd: float
    on_demand_usd: float
    spot_usd: Optional[float]
    hours: float
    tokens: int


@dataclass(frozen=True)
class Option:
    hardware: str
    overrides: tuple[str, ...]
    """What to add to the experiment's overrides to run on this profile (hardware and launcher)."""
    plan: Plan
    """The compiled plan on this profile (a sweep's first trial, when ``sums`` holds the totals)."""
    why_not: str
    """Empty when the profile can run the experiment; else its first error."""
    sums: Optional[Sums] = None
    tight: bool = False
    """It fits only if the estimate holds (memory.verdict tight, on any trial): ranked after every profile that fits
    even at the band's high end."""

    @property
    def usd(self) -> float:
        """The price the ranking compares: hours x the hourly rate, not the plan's cents (two profiles a fraction
        of a cent apart are not a tie)."""
        return self.sums.usd if self.sums else self.plan.time.hours * self.plan.cost.usd_per_hour

    @property
    def hours(self) -> float:
        return self.sums.hours if self.sums else self.plan.time.hours

    def row(self) -> dict[str, Any]:
        p, s = self.plan, self.sums
        tokens = s.tokens if s else p.schedule.tokens
        return {
            "hardware": self.hardware, "launcher": p.launcher.kind, "workers": p.world_size,
            "zero_stage": p.train.zero_stage, "strategy": sharing(p), "fits": p.memory.fits,
            "memory_gb": p.memory.per_device_gb,
            "device_gb": p.memory.device_gb, "hours": self.hours, "usd": self.usd,
            "on_demand_usd": s.on_demand_usd if s else p.cost.on_demand_usd,
            "spot_usd": s.spot_usd if s else p.cost.spot_usd,
            "usd_per_m_tokens": self.usd / tokens * 1e6 if tokens else None,
            "ok": not self.why_not, "why_not": self.why_not, "tight": self.tight,
        }


def profiles() -> list[str]:
    """Every hardware profile shipped in conf/hardware."""
    return sorted(p.name[:-5] for p in files("ftc.conf").joinpath("hardware").iterdir() if p.name.endswith(".yaml"))


def profile_values(name: str) -> dict[str, Any]:
    """A shipped profile's fields as Hydra composes them: its YAML over the profiles it builds on (``a10g_x4`` on
    ``a10g``), the child winning."""
    import yaml

    values: dict[str, Any] = {}
    chain, seen = [name], set()
    while chain and chain[-1] not in seen:
        seen.add(chain[-1])
        data = yaml.safe_load(files("ftc.conf").joinpath("hardware", f"{chain[-1]}.yaml").read_text()) or {}
        values = {**{k: v for k, v in data.items() if k != "defaults"}, **values}  # the child wins
        parents = [d for d in data.get("defaults", []) if isinstance(d, str) and d != "_self_"
                   and not d.startswith("base_")]
        chain.extend(parents[:1])
    return values


def _profile_shape(name: str) -> tuple[str, int]:
    """A shipped profile's accelerator and device count."""
    from ftc.config.schema import HardwareConfig

    values, defaults = profile_values(name), HardwareConfig()
    accelerator = values.get("accelerator", defaults.accelerator)
    return accelerator, int(values.get("gpus_per_node", defaults.gpus_per_node)) * int(values.get("nodes",
                                                                                              defaults.nodes))


def on_profile(cfg: Any, name: str) -> Any:
    """The composed experiment ``cfg`` with its hardware group swapped for the profile ``name``: what composing
    ``hardware=<name>`` gives (tests/unit/test_composition.py holds them equal), without composing again."""
    from omegaconf import OmegaConf

    from ftc.config.schema import HardwareConfig

    out = cfg.copy()
    out.hardware = OmegaConf.merge(OmegaConf.structured(HardwareConfig), profile_values(name))
    return out


def advise(overrides: list[str]) -> tuple[list[Option], Optional[Option]]:
    """Ranks every GPU profile for the experiment ``overrides`` (without hardware/launcher choices)."""
    from ftc.compiler.frontend import compile_config, compose

    base = [o for o in overrides if not o.startswith(("hardware=", "launcher="))]
    asked = [o for o in overrides if o.startswith("launcher=")][-1:]  # the user's launcher is kept on every profile
    # One composition per launcher, the profile swapped in (a composition is ~0.2 s, a compile ~1 ms); an override
    # of a hardware field must apply on top of each profile, so it is composed per profile as Hydra would.
    per_profile = any(o.lstrip("+~").startswith("hardware.") for o in base)
    composed: dict[str, Any] = {}
    options = []
    for name in profiles():
        accelerator, devices = _profile_shape(name)
        if accelerator != "cuda":
            continue
        # Unasked, the local launcher (a process per device, no Ray) unless the compiler refuses it for this
        # profile (several nodes; GRPO's generation on several devices): then a Ray worker per device.
        for launcher in asked or ["launcher=local", "launcher=ray"][:2 if devices > 1 else 1]:
            extra = (f"hardware={name}", launcher)
            if per_profile:
                cfg = compose(base + list(extra))
            else:
                if launcher not in composed:
                    composed[launcher] = compose(base + [launcher])
                cfg = on_profile(composed[launcher], name)
            plan = compile_config(cfg)
            if not any(f.severity == "error" and f.key.startswith("launcher") for f in plan.findings):
                break
        options.append(Option(name, extra, plan, plan.errors[0] if plan.errors else "",
                              tight=plan.memory.verdict == "tight"))
    options.sort(key=lambda o: (bool(o.why_not), o.tight, o.usd, o.hours, o.hardware))
    chosen = options[0] if options and not options[0].why_not else None
    return options, chosen


def candidate_fixes(plan: Plan) -> list[str]:
    """Changes that lower the memory a plan needs, each a single override (what a user would try first)."""
    fixes = []
    if plan.model.moe is not None and plan.method.target_parameters:
        fixes.append("method.target_experts=false")
    if plan.method.name in ("lora", "dora", "full"):
        fixes.append("method=qlora")
    if plan.method.name == "qlora":
        if plan.train.strategy != "fsdp":  # 4-bit weights shard with FSDP (auto chooses it when DDP does not fit)
            fixes.append("train.strategy=fsdp")
        fixes.append("method=lora")  # 16-bit LoRA shards with ZeRO-3
    if not plan.train.gradient_checkpointing:
        fixes.append("train.gradient_checkpointing=true")
    if plan.data.max_length >= 512:
        fixes.append(f"data.max_length={plan.data.max_length // 2}")
    return fixes


def checked_fixes(overrides: list[str], options: list[Option]) -> list[tuple[str, Option]]:
    """When no profile fits at the band's high end: each candidate change with the cheapest profile it makes fit
    outright, found by compiling the experiment with the change on every profile (none is offered unchecked)."""
    if not options or any(not o.why_not and not o.tight for o in options):
        return []
    found = []
    for fix in candidate_fixes(options[0].plan):
        fixed, chosen = advise([*overrides, fix])
        if chosen is not None and not chosen.tight:
            found.append((fix, chosen))
    return found


def fixes_text(fixes: list[tuple[str, Option]]) -> str:
    return "\n".join(f"  - {fix}: fits {o.hardware} outright ({o.plan.memory.high_gb:.1f} GB at the band's high end "
                     f"of {o.plan.memory.device_gb:.1f} GB), ${o.usd:.2f} in {o.hours:.2f} h" for fix, o in fixes)


def decision(options: list[Option], chosen: Option) -> str:
    runner_up = next((o for o in options if o is not chosen and not o.why_not), None)
    p = _places([chosen.usd] + ([runner_up.usd] if runner_up else []))
    line = (f"hardware={chosen.hardware} (hardware=auto: the cheapest of {len(options)} GPU profiles that fits and "
            f"meets the budget, ${chosen.usd:.{p}f} in {chosen.hours:.2f} h")
    if runner_up:
        line += f"; runner-up {runner_up.hardware}, ${runner_up.usd:.{p}f} in {runner_up.hours:.2f} h"
    return line + ")"


def _places(values: list[Optional[float]], least: int = 2, most: int = 6) -> int:
    """Decimal places that keep different values of a column different (two at least, six at most): $0.064 and
    $0.068 are not both "0.07"."""
    distinct = {round(v, 6) for v in values if v is not None}
    for places in range(least, most + 1):
        if len({round(v, places) for v in distinct}) == len(distinct):
            return places
    return most


VERDICT_WIDTH = 64  # the verdict column wraps at this width (whole words; never cut)


def sharing(plan: Any) -> str:
    """How a profile's workers share the model, short: ``-`` (one worker), ``ddp``, ``zero3``, ``fsdp``, with
    ``+offload`` (parameters) or ``+opt-offload`` (the optimizer's state) when the plan offloads."""
    t = plan.train
    name = {"none": "-", "ddp": "ddp", "fsdp": "fsdp", "deepspeed": f"zero{t.zero_stage}"}.get(t.strategy, t.strategy)
    return name + {"params": "+offload", "optimizer": "+opt-offload"}.get(t.offload, "")


def table(options: list[Option]) -> str:
    """The ranked profiles: micro batch (what makes one model's memory differ across rows), predicted GB per device
    of the device's usable GB, the card as it is sold (80GB), prices to the places that tell them apart, and whole
    verdicts, wrapped."""
    import textwrap

    head = ["#", "hardware", "launcher", "sharing", "micro", "GB/device", "card", "hours", "usd", "on-demand/spot",
            "usd/M tokens", "verdict"]
    data = [o.row() for o in options]
    usd = _places([r["usd"] for r in data])
    per_m = _places([r["usd_per_m_tokens"] for r in data])
    hours = _places([r["hours"] for r in data])
    rows = []
    for i, (o, r) in enumerate(zip(options, data), 1):
        verdict = ("tight: fits only if the estimate holds" if r["tight"] else "ok") if r["ok"] \
            else "no: " + r["why_not"]
        rows.append([str(i), r["hardware"], f"{r['launcher']} x{r['workers']}", r["strategy"],
                     f"{o.plan.batch.micro}x{o.plan.batch.grad_accum}", f"{r['memory_gb']:.1f}/{r['device_gb']:g}",
                     _rated(o.hardware, r["device_gb"]),
                     f"{r['hours']:.{hours}f}", f"{r['usd']:.{usd}f}",
                     f"{r['on_demand_usd']:.2f}/" + ("-" if r["spot_usd"] is None else f"{r['spot_usd']:.2f}"),
                     "-" if r["usd_per_m_tokens"] is None else f"{r['usd_per_m_tokens']:.{per_m}f}", verdict])
    widths = [max(len(x) for x in col) for col in zip(head, *(r[:-1] for r in rows))] + [0]
    lines = []
    for line in [head] + rows:
        left = "  ".join(x.ljust(w) for x, w in zip(line[:-1], widths))
        wrapped = textwrap.wrap(line[-1], VERDICT_WIDTH) or [""]
        lines.append(f"{left}  {wrapped[0]}".rstrip())
        lines.extend(" " * (len(left) + 2) + more for more in wrapped[1:])
    return "\n".join(lines)


def _rated(profile: str, device_gb: float) -> str:
    """The card's capacity as it is sold (``80GB`` for the 85.9 GB the driver reports), from the profile's
    rated_gb; else the usable memory."""
    rated = profile_values(profile).get("rated_gb") if profile in profiles() else None
    return f"{rated or device_gb:g}GB"


def advise_sweep(trials: list[list[str]]) -> tuple[list[Option], Optional[Option], list[str]]:
    """One profile for a whole sweep: the cheapest in total on which every trial runs. Returns the ranking (with
    the sweep's totals), the choice, and one line per trial whose own cheapest profile differs."""
    per_trial = [advise(t) for t in trials]
    by_name: dict[str, list[Option]] = {}
    for options, _ in per_trial:
        for o in options:
            by_name.setdefault(o.hardware, []).append(o)
    totals = []
    for name, opts in by_name.items():
        why_not = next((f"trial {i}: {o.why_not}" for i, o in enumerate(opts) if o.why_not), "")
        spots = [o.plan.cost.spot_usd for o in opts]
        plans = [o.plan for o in opts]
        sums = Sums(usd=round(runs_total(plans, lambda p: p.cost.usd), 2),
                    on_demand_usd=round(runs_total(plans, lambda p: p.cost.on_demand_usd), 2),
                    spot_usd=None if None in spots else round(runs_total(plans, lambda p: p.cost.spot_usd), 2),
                    hours=round(runs_total(plans, lambda p: p.time.hours), 4),
                    tokens=sum(o.plan.schedule.tokens for o in opts))
        totals.append(Option(name, opts[0].overrides, opts[0].plan, why_not, sums, tight=any(o.tight for o in opts)))
    totals.sort(key=lambda o: (bool(o.why_not), o.tight, o.usd, o.hours, o.hardware))
    chosen = totals[0] if totals and not totals[0].why_not else None
    differ = [f"trial {i} ({' '.join(t)}) alone would choose {c.hardware}" for i, (t, (_, c)) in
              enumerate(zip(trials, per_trial)) if chosen and c is not None and c.hardware != chosen.hardware]
    return totals, chosen, differ


def resolve(argv: list[str]) -> tuple[list[str], Optional[tuple[list[Option], Option]]]:
    """Replaces ``hardware=auto`` in a command's arguments with the chosen profile (and its launcher); in a sweep,
    the cheapest profile in total on which every trial runs."""
    if AUTO not in argv:
        return argv, None
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    if "-m" in argv or "--multirun" in argv:
        from ftc.config.overrides import expand

        options, chosen, differ = advise_sweep(expand([o for o in overrides if o != AUTO]))
        if differ:
            print("ftc: hardware=auto: the trials would not all choose the same profile; the sweep runs on "
                  f"{chosen.hardware if chosen else '-'} (cheapest in total where every trial runs):\n  - "
                  + "\n  - ".join(differ), file=sys.stderr)
    else:
        options, chosen = advise(overrides)
    fixes = [] if "-m" in argv or "--multirun" in argv else checked_fixes(overrides, options)
    if chosen is None:
        raise UserError("ftc: hardware=auto found no GPU profile that can run this experiment:\n" + table(options) +
                        ("\n  changes that make one fit, each checked by compiling it:\n" + fixes_text(fixes)
                         if fixes else "\n  fix: method=qlora, a shorter data.max_length, or raise budget.max_usd / "
                                       "budget.max_hours"))
    if chosen.tight:
        print(f"ftc: hardware=auto: no GPU profile fits at the memory band's high end; {chosen.hardware} fits only "
              "if the estimate holds (a run may OOM)."
              + ("\n  changes that make one fit outright, each checked by compiling it:\n" + fixes_text(fixes)
                 if fixes else " No single change of method, sequence length or checkpointing makes one fit.")
              + f"\n  going on with the cheapest tight profile, {chosen.hardware}", file=sys.stderr)
    rest = [a for a in argv if a != AUTO and not a.startswith("launcher=")]  # chosen.overrides holds the launcher
    return rest + list(chosen.overrides), (options, chosen)
