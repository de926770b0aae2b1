"""The top-level command line: every sub-command is reachable through `python -m pti`."""
import subprocess
import sys

import pytest

from pti.cli import build_parser


@pytest.mark.parametrize("command", ["invert", "edit", "eval"])
def test_every_sub_command_is_registered(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"python -m pti {command}" in capsys.readouterr().out


def test_module_entry_point_lists_the_sub_commands():
    result = subprocess.run([sys.executable, "-m", "pti", "--help"], capture_output=True, text=True, check=True)
    assert "{invert,edit,eval}" in result.stdout


def test_missing_sub_command_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "pti"], capture_output=True, text=True)
    assert result.returncode == 2 and "required" in result.stderr
