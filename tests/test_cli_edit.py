"""`python -m pti edit` end to end on the tiny generator, with local direction files and a mapper folder."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from editing_directions import Edit, EditChain, EditLibrary
from editing_directions.styleclip import random_levels_mapper
from pti.commands import edit as edit_command
from pti.generator_io import save_generator


def run_cli(argv: list[str]) -> int:
    """Parse `argv` with a parser holding only the `edit` sub-command and run it."""
    parser = argparse.ArgumentParser(prog="python -m pti")
    edit_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["edit", *argv])
    return args.func(args)


@pytest.fixture()
def workspace(tmp_path, tiny_generator):
    """Tiny weights, a W+ pivot, released-format direction files and a mapper folder, all 32-dim."""
    weights = save_generator(tiny_generator, tmp_path / "tuned.safetensors")
    g = torch.Generator().manual_seed(3)
    pivot = tiny_generator.mapping(torch.randn(1, tiny_generator.z_dim, generator=g), None)
    np.save(tmp_path / "pivot.npy", pivot.numpy())
    directions = tmp_path / "directions"
    directions.mkdir()
    for filename in ("age.pt", "smile.pt", "rotation.pt"):
        direction = torch.randn(1, 32, generator=g)
        torch.save(direction / direction.norm(), directions / filename)
    comp = torch.randn(80, 1, 32, generator=g)
    torch.save({"mean": torch.randn(1, 32, generator=g), "comp": comp / comp.norm(dim=2, keepdim=True),
                "std": torch.rand(80, generator=g) + 0.5}, directions / "ffhq_pca.pt")
    mappers = tmp_path / "mappers"
    mappers.mkdir()
    state = random_levels_mapper(32, seed=9, no_fine_mapper=True).state_dict()
    torch.save({"state_dict": {f"mapper.{k}": v for k, v in state.items()},
                "opts": {"no_coarse_mapper": False, "no_medium_mapper": False, "no_fine_mapper": True}},
               mappers / "afro.pt")
    return {"weights": weights, "pivot": tmp_path / "pivot.npy", "pivot_tensor": pivot, "directions": directions,
            "mappers": mappers, "out": tmp_path / "out"}


def common_args(ws: dict) -> list[str]:
    """The arguments every run shares."""
    return ["--pivot", str(ws["pivot"]), "--weights", str(ws["weights"]), "--out", str(ws["out"]),
            "--directions-dir", str(ws["directions"]), "--mapper-dir", str(ws["mappers"])]


def test_edit_writes_every_step_a_strip_and_the_chain(workspace, tiny_generator, capsys):
    rc = run_cli([*common_args(workspace), "--edit", "smile=2", "--edit", "styleclip:afro=0.1", "--edit", "age=-1",
                  "--edit", "ganspace:smile=-6"])
    assert rc == 0
    out = workspace["out"]
    names = ["step_00_start.png", "step_01_smile+2.png", "step_02_styleclip-afro+0.1.png", "step_03_age-1.png",
             "step_04_ganspace-smile-6.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "strip.png", "chain.json"])
    assert str(out / "strip.png") in capsys.readouterr().out

    # the same chain through the API, on the same files, gives the same pictures
    library = EditLibrary.from_registry(directions_dir=workspace["directions"], mapper_dir=workspace["mappers"])
    chain = EditChain.from_json((out / "chain.json").read_text(), library)
    assert chain.edits == (Edit("interfacegan", "smile", 2.0), Edit("styleclip", "afro", 0.1),
                           Edit("interfacegan", "age", -1.0), Edit("ganspace", "smile", -6.0))
    expected = chain.render(tiny_generator, workspace["pivot_tensor"])
    written = [np.asarray(Image.open(out / name)) for name in names]
    for got, want in zip(written, expected):
        assert np.abs(got.astype(int) - np.asarray(want).astype(int)).max() <= 1
    assert not np.array_equal(written[0], written[1])  # the edits change the picture

    strip = np.asarray(Image.open(out / "strip.png"))
    assert strip.shape == (32, 32 * 5, 3)
    for index, image in enumerate(written):
        assert np.array_equal(strip[:, 32 * index:32 * (index + 1)], image)


def test_a_w_pivot_and_a_chain_replay(workspace, tmp_path):
    np.save(tmp_path / "w.npy", workspace["pivot_tensor"][:, 0].numpy())  # (1, 32): a W pivot
    (tmp_path / "chain.json").write_text(json.dumps({"format": "pti-edit-chain", "version": 1, "edits": [
        {"kind": "interfacegan", "name": "pose", "strength": 1.5}]}))
    args = common_args(workspace)
    args[1] = str(tmp_path / "w.npy")
    assert run_cli([*args, "--chain", str(tmp_path / "chain.json"), "--edit", "smile=-1", "--batch-size", "1"]) == 0
    chain = json.loads((workspace["out"] / "chain.json").read_text())
    assert [(e["name"], e["strength"]) for e in chain["edits"]] == [("pose", 1.5), ("smile", -1.0)]
    assert (workspace["out"] / "step_02_smile-1.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--edit", "smile"], "expected [kind:]name=strength"),
        (["--edit", "smile=9"], "outside the allowed range [-3, 3]"),
        (["--edit", "styleclip:mohawk=0.1"], "unknown styleclip edit 'mohawk'"),
        (["--edit", "warp:x=1"], "unknown edit kind 'warp'"),
    ],
)
def test_bad_edits_give_a_one_line_error(workspace, capsys, extra, message):
    assert run_cli([*common_args(workspace), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not workspace["out"].exists()


def test_bad_pivot_and_missing_direction_file_give_clear_errors(workspace, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((1, 5, 32), dtype=np.float32))
    args = common_args(workspace)
    args[1] = str(tmp_path / "bad.npy")
    assert run_cli([*args, "--edit", "age=1"]) == 2
    assert "expected shape (1, 32) or (1, 8, 32) for this generator, found (1, 5, 32)" in capsys.readouterr().err

    (workspace["directions"] / "rotation.pt").unlink()
    assert run_cli([*common_args(workspace), "--edit", "pose=1"]) == 2
    assert "rotation.pt" in capsys.readouterr().err


def test_a_generator_name_with_demo_edits(tmp_path, capsys):
    from pti.weights import load_generator

    G = load_generator("tiny")
    np.save(tmp_path / "pivot.npy", G.mapping(torch.randn(1, G.z_dim), None)[:, 0].numpy())  # W: (1, w_dim)
    out = tmp_path / "out"
    rc = run_cli(["--pivot", str(tmp_path / "pivot.npy"), "--weights", "tiny", "--demo-edits", "--out", str(out),
                  "--edit", "pose=2", "--edit", "styleclip:demo_1=0.2"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "step_02_styleclip-demo_1+0.2.png").is_file()
    assert Image.open(out / "strip.png").size == (G.img_resolution * 3, G.img_resolution)


def test_conflicting_options_and_unknown_generator_give_clear_errors(workspace, capsys):
    assert run_cli([*common_args(workspace), "--demo-edits", "--edit", "age=1"]) == 2
    assert "--demo-edits uses random edits only; drop --directions-dir, --mapper-dir" in capsys.readouterr().err
    args = common_args(workspace)
    args[3] = "no-such-generator"
    assert run_cli([*args, "--edit", "age=1"]) == 2
    assert "'no-such-generator' is neither a known generator" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli([*common_args(workspace), "--batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err
