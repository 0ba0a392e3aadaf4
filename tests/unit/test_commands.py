"""The command table (``ftc.cli.COMMANDS``) is the one list of commands: usage, dispatch and completion read it."""

from __future__ import annotations

import pytest

from ftc import cli, completion
from ftc.errors import UserError

pytestmark = pytest.mark.unit


def test_every_listed_command_is_in_the_usage_completes_and_dispatches():
    text = cli.usage()
    shown = [c for c in cli.COMMANDS if c.usage]
    assert {c.name for c in shown} >= {"plan", "train", "eval", "generate", "merge", "export", "serve"}
    for command in shown:
        assert f"\n  {command.name} " in text or f"\n  {command.name}\n" in text, command.name
        assert completion.candidates(1, ["ftc", command.name[:3]], cli.COMMANDS).count(command.name) == 1
        assert cli.BY_NAME[command.name] is command
    hidden = [c.name for c in cli.COMMANDS if not c.usage]
    assert hidden and not any(f"  {name}" in text for name in hidden)
    assert not set(hidden) & set(completion.candidates(1, ["ftc", ""], cli.COMMANDS))


def test_a_run_dir_commands_options_are_named_in_its_usage_offered_by_completion_and_checked():
    with_options = [c for c in cli.COMMANDS if c.options is not None]
    assert {c.name for c in with_options} >= {"eval", "generate", "export", "serve"}
    for command in with_options:
        written = " ".join(form + " " + what for form, what in command.usage)
        for key in command.options:
            assert f"{key}=" in written, (command.name, key)
        offered = completion.candidates(3, ["ftc", command.name, "runs/x", ""], cli.COMMANDS)
        assert offered == sorted(f"{k}=" for k in command.options)
    with pytest.raises(UserError, match=r"unknown option 'bogus=1' \(options: format, quant\)"):
        cli.BY_NAME["export"](["runs/x", "bogus=1"])
    with pytest.raises(UserError, match="port=eighty: expected int"):
        cli.BY_NAME["serve"](["runs/x", "port=eighty"])
