"""Code structure the project relies on: imports point down only, every default has one home."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "ftc"

# Imports only point down, and the folders are the layers: the contract at the bottom (ftc/plan.py, errors, paths,
# secrets, config/), data formats and reading (data/; hub and pretrained: where models come from), the compiler
# (compiler/, render), the runtime that needs torch (runtime/), executors (launch/), what composes and drives many
# plans (advisor, sweep/), the CLI on top.
# A module may import modules of its own rank or lower, never higher.
RANKS = [
    (0, ("ftc.errors", "ftc.paths", "ftc.secrets", "ftc.plan", "ftc.config")),
    (1, ("ftc.data", "ftc.hub", "ftc.pretrained")),
    (2, ("ftc.compiler", "ftc.render", "ftc.datacard")),
    (3, ("ftc.runtime",)),
    (4, ("ftc.launch",)),
    (5, ("ftc.advisor", "ftc.sweep", "hydra_plugins")),
    (6, ("ftc.cli", "ftc.commands", "ftc.completion")),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[:3] == ["ftc", "sweep", "hydra_plugin"]:
        parts = ["hydra_plugins", "ftc_search"] + parts[3:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path], name: str) -> set[str]:
    """Every ftc module a module imports, at the top or inside functions (a lazy import is still a dependency)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules, name) for name, path in modules.items()}


def _rank(module: str) -> int:
    best = None
    for rank, prefixes in RANKS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (rank, p)
    assert best, f"{module} has no layer in RANKS: add it"
    return best[0]


def test_the_import_walker_sees_lazy_and_relative_imports():
    graph = _graph()
    assert "ftc.compiler.frontend" in graph["ftc.cli"]  # imported inside a function
    assert "ftc.sweep.search" in graph["hydra_plugins.ftc_search"]


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_imports_point_down_only():
    upward = [f"{a} (layer {_rank(a)}) imports {b} (layer {_rank(b)})"
              for a, targets in _graph().items() for b in targets if _rank(b) > _rank(a)]
    assert upward == []


# --- one default per field ------------------------------------------------------------------------------------------
def _schema_defaults(cls) -> dict[str, object]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = value if not dataclasses.is_dataclass(value) else None
    return out


def _restated(values: dict, cls, where: str) -> list[str]:
    defaults = _schema_defaults(cls)
    return [f"{where}: {k}: {v!r} restates the schema default" for k, v in values.items()
            if k in defaults and k != "name" and defaults[k] is not None and type(v) is not dict and v == defaults[k]]


def _option_files():
    from ftc.config import schema

    for group, cls in schema.GROUPS.items():
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            yield path, {group: cls}, False
    sections = {f.name: f.type for f in dataclasses.fields(schema.Config)}
    classes = {name: getattr(schema, t) if isinstance(t, str) else t for name, t in sections.items()
               if isinstance(t, str) and hasattr(schema, t)}
    for path in sorted((ROOT / "conf" / "model_tuning").glob("*.yaml")) + sorted((ROOT / "recipes").glob("*.yaml")):
        yield path, classes, True


def test_yaml_options_set_only_what_differs_from_the_schema():
    found = []
    for path, classes, is_global in _option_files():
        data = yaml.safe_load(path.read_text()) or {}
        data.pop("defaults", None)
        if not is_global:
            (cls,) = classes.values()
            parent = next((d for d in yaml.safe_load(path.read_text())["defaults"] if not str(d).startswith(("base_",
                                                                                                           "_self_"))),
                          None)
            if parent:  # an option built on another (a10g_x4 on a10g) is compared with that one
                inherited = yaml.safe_load((path.parent / f"{parent}.yaml").read_text())
                found += [f"{path.name}: {k}: {v!r} restates {parent}.yaml" for k, v in data.items()
                          if k != "name" and inherited.get(k) == v]
                data = {k: v for k, v in data.items() if k not in inherited}
            found += _restated(data, cls, path.name)
            continue
        for section, values in data.items():
            if section in classes and isinstance(values, dict):
                found += _restated(values, classes[section], f"{path.name} {section}")
    assert found == []


def test_the_default_check_can_fail():
    from ftc.config.schema import MethodConfig

    assert _restated({"r": 16, "alpha": 8.0}, MethodConfig, "x") == ["x: r: 16 restates the schema default"]


def test_plan_spec_classes_carry_no_defaults():
    """Defaults live in the schema only: every field of the Plan is set by the compiler."""
    from ftc import plan

    with_defaults = [f"{cls.__name__}.{f.name}" for cls in vars(plan).values()
                     if dataclasses.is_dataclass(cls) and cls.__module__ == plan.__name__
                     for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_defaults == []


def test_specs_copy_their_section_or_name_the_decision():
    """compile builds every spec with spec_from: a field neither decided nor in the config section raises, so a
    field added to a spec can never be dropped or defaulted silently."""
    import dataclasses as dc

    from ftc.compiler.compile import spec_from
    from ftc.config.schema import HardwareConfig
    from ftc.plan import HardwareSpec

    section = HardwareConfig(name="x", memory_gb=24, bf16=True, peak_tflops=100, memory_bandwidth_gbs=900,
                             preemptions_per_hour=0.5, nodes=2)
    spec = spec_from(HardwareSpec, section, devices=2, device_gb=24)
    assert (spec.memory_bandwidth_gbs, spec.preemptions_per_hour, spec.nodes) == (900, 0.5, 2)
    with pytest.raises(TypeError, match="device_gb is neither decided"):
        spec_from(HardwareSpec, section, devices=2)
    with pytest.raises(TypeError, match="has no field"):
        spec_from(HardwareSpec, section, devices=2, device_gb=24, typo=1)
    assert {f.name for f in dc.fields(HardwareSpec)} - {f.name for f in dc.fields(HardwareConfig)} == \
        {"devices", "device_gb"}


def test_a_calibrated_profile_keeps_the_fields_it_did_not_measure():
    import yaml

    from ftc.runtime.calibrate import profile_yaml
    from tests.conftest import plan_for

    plan = plan_for(["hardware=rtx4090", "model=qwen2_5_0_5b"])  # a profile with a bandwidth and a spot price
    profile = yaml.safe_load(profile_yaml(plan, "mine", {"device": "cuda", "how": "test", "achieved_tflops": 50,
                                                          "fixed_step_s": 0.01, "decode_gbs": 400}))
    hw = plan.hardware
    assert profile["memory_bandwidth_gbs"] == hw.memory_bandwidth_gbs and profile["nodes"] == hw.nodes
    assert profile["spot_usd_per_hour"] == hw.spot_usd_per_hour is not None
    assert profile["preemptions_per_hour"] == hw.preemptions_per_hour and profile["peak_tflops"] == 50
