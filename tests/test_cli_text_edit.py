"""`python -m pti edit` with text edits (StyleCLIP global directions) on the tiny generator and its demo edits."""
from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from editing_directions import Edit, EditChain, demo_library
from pti.commands import edit as edit_command
from pti.generator_io import save_generator


def parser() -> argparse.ArgumentParser:
    """A parser holding only the `edit` sub-command."""
    main = argparse.ArgumentParser(prog="python -m pti")
    edit_command.register(main.add_subparsers(dest="command", required=True))
    return main


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(["edit", *argv])
    return args.func(args)


@pytest.fixture()
def workspace(tmp_path, tiny_generator, monkeypatch):
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti-cache"))
    weights = save_generator(tiny_generator, tmp_path / "tuned.safetensors")
    pivot = tiny_generator.mapping(torch.randn(1, tiny_generator.z_dim, generator=torch.Generator().manual_seed(3)),
                                   None)
    np.save(tmp_path / "pivot.npy", pivot.numpy())
    return {"args": ["--pivot", str(tmp_path / "pivot.npy"), "--weights", str(weights), "--demo-edits"],
            "pivot": pivot, "tmp": tmp_path}


def test_help_documents_the_text_edit_syntax(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["edit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "text:[NEUTRAL->]TARGET=ALPHA[,BETA]" in help_text and "text:a face->a smiling face=4.1,0.15" in help_text


def test_a_text_edit_stacks_between_other_edits_and_replays(workspace, tiny_generator, capsys):
    out = workspace["tmp"] / "out"
    edits = ["smile=1", "text:a face->a smiling face=4.1,0.15", "styleclip:demo_1=0.1"]
    assert run_cli([*workspace["args"], "--out", str(out), *[a for e in edits for a in ("--edit", e)]]) == 0
    names = ["step_00_start.png", "step_01_smile+1.png", "step_02_text-a_smiling_face+4.1.png",
             "step_03_styleclip-demo_1+0.1.png", "strip.png", "chain.json"]
    assert capsys.readouterr().out.split() == [str(out / name) for name in names]
    chain = json.loads((out / "chain.json").read_text())
    assert chain["edits"][1] == {"kind": "text", "name": "a smiling face", "strength": 4.1, "neutral": "a face",
                                 "beta": 0.15}
    steps = [np.asarray(Image.open(out / name)) for name in names[:4]]
    assert all(not np.array_equal(a, b) for a, b in zip(steps, steps[1:]))
    # The same chain through the Python API renders the same pixels.
    library = demo_library(tiny_generator.w_dim, tiny_generator.num_ws, generator=tiny_generator)
    expected = EditChain(library, [Edit.parse(e) for e in edits]).render(tiny_generator, workspace["pivot"])
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(expected, steps))
    # Replaying the chain JSON gives the same images.
    replay = workspace["tmp"] / "replay"
    assert run_cli([*workspace["args"], "--out", str(replay), "--chain", str(out / "chain.json")]) == 0
    assert all(np.array_equal(np.asarray(Image.open(replay / name)), step) for name, step in zip(names, steps))


@pytest.mark.parametrize("text, message", [
    ("text:a face->A face=3", "the target sentence is the same as the neutral one"),
    ("text:a face->=3", "the target sentence of the text edit is empty"),
    ("text:grey hair=3,0.5", r"beta 0.5 is outside the allowed range \[0.08, 0.3\]"),
    ("text:grey hair=12", r"strength 12 is outside the allowed range \[-10, 10\]"),
    ("text:a face with " + "very " * 70 + "long hair=3", "the target sentence is too long for CLIP"),
    ("text:grey hair", "expected text:"),
])
def test_bad_text_edits_are_one_line_errors(workspace, capsys, text, message):
    out = workspace["tmp"] / "bad"
    assert run_cli([*workspace["args"], "--out", str(out), "--edit", text]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert re.search(message, error), error
    assert not out.exists()
