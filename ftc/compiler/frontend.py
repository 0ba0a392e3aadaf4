"""The compiler's front door: a composed Hydra config -> typed ``Config`` -> facts -> ``compile`` -> Plan.

The CLI, the sweep planner, the search sweeper and the tests all enter the compiler here.
"""

from __future__ import annotations

from typing import Any

from ftc.compiler.compile import compile
from ftc.compiler.facts import gather
from ftc.compiler.plan import Plan
from ftc.config.schema import Config
from ftc.errors import UserError


def to_typed(cfg: Any) -> Config:
    """DictConfig -> typed ``Config``; a missing required value becomes a UserError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, ValidationError

    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", "") or str(e)
        raise UserError(f"ftc: {key} is required (e.g. {key}=<value>)") from None
    except ValidationError as e:
        raise UserError(f"ftc: {e}") from None


def compile_config(cfg: Any) -> Plan:
    """DictConfig (or typed Config) -> Plan: facts are gathered here, so ``compile`` stays pure."""
    typed = cfg if isinstance(cfg, Config) else to_typed(cfg)
    return compile(typed, gather(typed))
