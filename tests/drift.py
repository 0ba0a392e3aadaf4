"""Drift between ftc's tables and the installed libraries, in the direction that matters.

ftc carries a few facts about transformers that it needs without importing torch (conf/families.yaml). Against a
newer or older library they can drift two ways:

- **unsafe**: the table would make ftc choose something the installed library cannot do (plan SDPA attention for
  a model that has no SDPA path: transformers refuses it at load; accept an optimizer name TrainingArguments no
  longer knows). The tests fail on this.
- **stale**: the library gained a capability ftc does not use yet (a model that gained SDPA and is still planned
  as eager: slower, never wrong). The tests warn; this report lists it.

    python -m tests.drift      # prints both, exits 1 when anything is unsafe
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Drift:
    unsafe: tuple[str, ...]
    stale: tuple[str, ...]


def _causal_lm_classes(model_type: str) -> list[type]:
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    return [c for c in vars(module).values()  # model classes only (modeling_auto's factories have no such flag)
            if isinstance(c, type) and c.__name__.endswith("ForCausalLM") and c.__module__ == module.__name__
            and hasattr(c, "_supports_sdpa")]


def no_sdpa_drift() -> Drift:
    """The installed transformers' causal LMs without SDPA vs ftc's ``_no_sdpa`` list.

    A text scan of each ``modeling_*.py`` finds the candidates (a file that says ``_supports_sdpa = True`` has the
    path); only those are imported to read the class attribute, so the check takes seconds, not minutes.
    """
    import transformers

    from ftc.compiler.facts import load_families

    listed = set(load_families()["_no_sdpa"])
    root = Path(transformers.__file__).parent / "models"
    unsafe = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        source = folder / f"modeling_{folder.name}.py"
        if folder.name in listed or not source.is_file():
            continue
        text = source.read_text()
        if "ForCausalLM(" not in text or "_supports_sdpa = True" in text:
            continue
        if any(c._supports_sdpa is False for c in _causal_lm_classes(folder.name)):
            unsafe.append(folder.name)
    stale = []
    for model_type in sorted(listed):
        if not (root / model_type / f"modeling_{model_type}.py").is_file():
            continue  # a model of another transformers version: eager stays correct for it
        classes = _causal_lm_classes(model_type)
        if classes and all(c._supports_sdpa for c in classes):
            stale.append(model_type)
    return Drift(tuple(unsafe), tuple(stale))


def trainer_names_drift() -> dict[str, Drift]:
    """ftc's optimizer and scheduler names (ftc/config/schema.py) vs the installed transformers' enums: a name ftc
    accepts that transformers does not is unsafe (it fails at TrainingArguments); one transformers has and ftc
    does not accept is stale."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from ftc.config.schema import OPTIMIZERS, SCHEDULERS, SCHEDULERS_LEFT_OUT

    out = {}
    for what, ours, theirs, left_out in (
            ("optimizers", OPTIMIZERS, {o.value for o in OptimizerNames}, ()),
            ("schedulers", SCHEDULERS, {s.value for s in SchedulerType}, SCHEDULERS_LEFT_OUT)):
        out[what] = Drift(tuple(sorted(set(ours) - theirs)), tuple(sorted(theirs - set(ours) - set(left_out))))
    return out


def main() -> int:
    import transformers

    drift = no_sdpa_drift()
    print(f"transformers {transformers.__version__}, conf/families.yaml _no_sdpa:")
    print(f"  unsafe (no SDPA path, missing from the list: ftc would plan sdpa and transformers would refuse it): "
          f"{', '.join(drift.unsafe) or 'none'}")
    print(f"  stale (listed, but SDPA exists now: planned as eager, slower, never wrong): "
          f"{', '.join(drift.stale) or 'none'}")
    unsafe = bool(drift.unsafe)
    for what, d in trainer_names_drift().items():
        print(f"schema {what}: unsafe (accepted by ftc, unknown to transformers): {', '.join(d.unsafe) or 'none'}; "
              f"stale (transformers has, ftc refuses): {', '.join(d.stale) or 'none'}")
        unsafe = unsafe or bool(d.unsafe)
    return 1 if unsafe else 0


if __name__ == "__main__":
    sys.exit(main())
