"""The linter configured in pyproject.toml ([tool.ruff]) passes on the package and the tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "ftc", "tests"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert "No module named ruff" not in r.stderr, "ruff is part of the test extra: pip install -e '.[test]'"
    assert r.returncode == 0, r.stdout + r.stderr
