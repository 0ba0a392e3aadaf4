"""The sweep grammar of Hydra overrides, expanded: what the sweep planner and hardware=auto compile one by one."""

from __future__ import annotations

import itertools


def expand(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of the sweep overrides (``a=1,2 b=x,y``), as Hydra's basic sweeper does it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    lists = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                # interval()/tag sweeps belong to an HPO sweeper: planned from their bounds by the sweeper itself.
                continue
            lists.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            lists.append([f"{key}={o.get_value_element_as_str()}"])
    return [list(c) for c in itertools.product(*lists)]
