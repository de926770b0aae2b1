"""Command line over the Python API: one sub-command per module in `pti.commands`."""
from __future__ import annotations

import argparse
import importlib
from typing import Sequence

# Sub-command modules; each defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = ("invert", "invert_dataset", "edit", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="python -m pti", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"pti.commands.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen sub-command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)
