"""Launcher kinds are one registry, and a user's own presets (in the ftc config dir) work as the shipped ones."""

from __future__ import annotations

import pytest

from tests.conftest import compose

pytestmark = pytest.mark.unit


def test_launcher_kinds_and_executors_have_the_same_keys():
    from ftc.config.launchers import LAUNCHER_KINDS
    from ftc.launch import EXECUTORS

    assert set(LAUNCHER_KINDS) == set(EXECUTORS)


def _plan(overrides):
    from ftc.compiler.frontend import compile_config

    return compile_config(compose(overrides))


def test_a_users_own_ray_preset_plans_ray_workers(tmp_path, monkeypatch):
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher" / "my_cluster.yaml").write_text("name: my_cluster\nkind: ray\nmax_failures: 5\n")
    monkeypatch.setenv("FTC_CONFIG_DIR", str(tmp_path))
    plan = _plan(["launcher=my_cluster", "hardware=cpu_x2"])
    assert plan.errors == ()
    assert (plan.launcher.kind, plan.world_size, plan.launcher.max_failures) == ("ray", 2, 5)


def test_an_unknown_launcher_kind_is_refused_naming_the_kinds():
    plan = _plan(["launcher.kind=slurm"])
    error = next(e for e in plan.errors if e.startswith("launcher.kind"))
    assert "unknown launcher kind 'slurm'" in error and "launcher.kind=local" in error and "launcher.kind=ray" in error


def test_malformed_user_profiles_are_skipped_naming_each_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "typo.yaml").write_text("name: typo\nmemory_gb: lots\n")
    (tmp_path / "hardware" / "notyaml.yaml").write_text("name: [unclosed\n")
    (tmp_path / "hardware" / "mine.yaml").write_text(
        "name: mine\naccelerator: cpu\nmemory_gb: 8\nbf16: false\npeak_tflops: 0.5\n")
    monkeypatch.setenv("FTC_CONFIG_DIR", str(tmp_path))
    plan = _plan(["hardware=mine"])  # the good profile next to the broken ones still works
    assert plan.hardware.name == "mine" and plan.hardware.device_gb == 8
    err = capsys.readouterr().err
    assert "skipping" in err and str(tmp_path / "hardware" / "typo.yaml") in err and "memory_gb" in err
    assert str(tmp_path / "hardware" / "notyaml.yaml") in err
