"""The top-level command line: every sub-command is reachable through `python -m pti`."""
import subprocess
import sys

import pytest

from pti.cli import build_parser


@pytest.mark.parametrize("command", ["invert", "invert-dataset", "edit", "eval"])
def test_every_sub_command_is_registered(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert f"python -m pti {command}" in capsys.readouterr().out


def test_module_entry_point_lists_the_sub_commands():
    result = subprocess.run([sys.executable, "-m", "pti", "--help"], capture_output=True, text=True, check=True)
    assert "{invert,invert-dataset,edit,eval}" in result.stdout


def test_missing_sub_command_is_a_usage_error():
    result = subprocess.run([sys.executable, "-m", "pti"], capture_output=True, text=True)
    assert result.returncode == 2 and "required" in result.stderr


def test_invert_offers_every_pivot_method_of_the_pipeline(capsys):
    from pti.commands.invert import PIVOT_METHODS
    from pti.pipeline import PIVOT_METHODS as PIPELINE_PIVOT_METHODS

    assert PIVOT_METHODS == PIPELINE_PIVOT_METHODS
    args = build_parser().parse_args(["invert", "photo.jpg", "--out", "out"])
    assert args.pivot == "w" and args.e4e is None  # the paper's W projection stays the default
    assert build_parser().parse_args(["invert", "p.jpg", "--out", "o", "--pivot", "e4e"]).pivot == "e4e"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["invert", "p.jpg", "--out", "o", "--pivot", "z"])
    assert "invalid choice: 'z'" in capsys.readouterr().err
