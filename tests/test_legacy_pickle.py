"""Safe loading of StyleGAN2-ADA snapshot pickles: the fixture loads exactly, hostile pickles are refused."""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FACES_DIR, TINY_DIR
from pti.legacy_pickle import (
    Snapshot,
    SnapshotError,
    SnapshotFormatError,
    UnsafePickleError,
    load_snapshot,
)

SNAPSHOT = TINY_DIR / "stylegan2_ada_tiny_snapshot.pkl"


class _Reduce:
    """Pickles as a call `function(*args)`: the shape of every hostile payload."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------------------
# The fixture snapshot


def test_fixture_snapshot_gives_the_reference_state_dict_and_init_kwargs():
    snapshot = load_snapshot(SNAPSHOT)
    reference = torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True)
    assert isinstance(snapshot, Snapshot)
    assert list(snapshot.state_dict) == list(reference)  # every key, in state_dict order
    for name, tensor in reference.items():
        loaded = snapshot.state_dict[name]
        assert loaded.dtype == tensor.dtype and loaded.shape == tensor.shape, name
        assert torch.equal(loaded, tensor), name  # bit-exact
        assert not loaded.requires_grad
    assert snapshot.init_kwargs == json.loads((TINY_DIR / "G_ema_init_kwargs.json").read_text())
    assert snapshot.class_name == "Generator"


def test_snapshot_loads_from_an_open_file_and_other_networks_by_key():
    with SNAPSHOT.open("rb") as file:
        from_file = load_snapshot(file)
    assert list(from_file.state_dict) == list(load_snapshot(SNAPSHOT).state_dict)
    discriminator = load_snapshot(SNAPSHOT, key="D")
    assert discriminator.class_name == "Discriminator"
    assert "mapping.w_avg" not in discriminator.state_dict


def test_missing_or_non_network_key_is_a_clear_error():
    with pytest.raises(SnapshotFormatError, match=r"no network 'G_emma'.*G_ema"):
        load_snapshot(SNAPSHOT, key="G_emma")
    with pytest.raises(SnapshotFormatError, match="'augment_pipe'.*not a persistent network"):
        load_snapshot(SNAPSHOT, key="augment_pipe")


# ---------------------------------------------------------------------------------------------------------
# Hostile pickles: refused, with the global named, and nothing runs


def _hostile_payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes that would create `marker` if executed, text the error must name)."""
    evil_storage = io.BytesIO()
    torch.save(_Reduce(os.system, f"touch {marker}"), evil_storage, _use_new_zipfile_serialization=False)
    return {
        "os.system global (by hand)": (
            b"\x80\x02" + f"cos\nsystem\n(Vtouch {marker}\ntR.".encode(), "'os.system'"),
        "os.system reduce (pickled, protocol 2)": (
            pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2), f"'{os.system.__module__}.system'"),
        "builtins.eval reduce (stack global, protocol 4)": (
            pickle.dumps(_Reduce(eval, f"open({str(marker)!r}, 'w')"), protocol=4), "'builtins.eval'"),
        "builtins.exec inside a snapshot dict": (
            pickle.dumps({"G_ema": _Reduce(exec, f"open({str(marker)!r}, 'w')")}, protocol=3), "'builtins.exec'"),
        "subprocess global": (
            pickle.dumps(_Reduce(subprocess.call, ["touch", str(marker)]), protocol=3), "'subprocess.call'"),
        "getattr gadget": (
            pickle.dumps(_Reduce(getattr, _Reduce(__import__, "os"), "system"), protocol=3), "'builtins.getattr'"),
        "hostile torch.save inside an allowed storage": (
            pickle.dumps(_Reduce(torch.storage._load_from_bytes, evil_storage.getvalue()), protocol=3),
            "weights_only"),
        "persistent id": (b"\x80\x02P1\n.", "persistent ids"),
        "BUILD that rewrites an allowed global": (
            b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(N}(V_function\nI1\nutb.", "modify the allowed global"),
    }


@pytest.mark.parametrize("name", list(_hostile_payloads(Path("marker"))))
def test_hostile_pickle_is_refused_without_side_effect(tmp_path, name):
    marker = tmp_path / "marker"
    data, named = _hostile_payloads(marker)[name]
    path = _write(tmp_path / "hostile.pkl", data)
    with pytest.raises(UnsafePickleError) as raised:
        load_snapshot(path)
    assert named in str(raised.value)
    assert not marker.exists()


def test_allowed_globals_survive_a_hostile_build(tmp_path):
    dict_state_build = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}(V_function\nI1\nub."
    with pytest.raises(SnapshotError):
        load_snapshot(_write(tmp_path / "build.pkl", dict_state_build))
    assert torch.equal(load_snapshot(SNAPSHOT).state_dict["mapping.w_avg"],
                       torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True)["mapping.w_avg"])


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "png", "torch-zip", "list-pickle",
                                  "protocol-0-pickle", "missing"])
def test_not_a_snapshot_is_a_format_error(tmp_path, kind):
    snapshot_bytes = SNAPSHOT.read_bytes()
    sources = {
        "truncated": lambda: _write(tmp_path / "cut.pkl", snapshot_bytes[: len(snapshot_bytes) // 2]),
        "empty": lambda: _write(tmp_path / "empty.pkl", b""),
        "text": lambda: _write(tmp_path / "notes.pkl", b"this is not a pickle at all\n"),
        "png": lambda: FACES_DIR / "astronaut.png",
        "torch-zip": lambda: TINY_DIR / "G_ema_state_dict.pt",
        "list-pickle": lambda: _write(tmp_path / "list.pkl", pickle.dumps([1, 2, 3])),
        "protocol-0-pickle": lambda: _write(tmp_path / "old.pkl", pickle.dumps({"G_ema": 1}, protocol=0)),
        "missing": lambda: tmp_path / "does-not-exist.pkl",
    }
    with pytest.raises(SnapshotFormatError):
        load_snapshot(sources[kind]())


# ---------------------------------------------------------------------------------------------------------
# Hand-made snapshots in the same format: state-dict rules, embedded source never runs


class _Network:
    """Pickles like a StyleGAN2-ADA persistent network object."""

    def __init__(self, class_name: str, state: dict, module_src: str = "# placeholder"):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=4, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


@pytest.fixture()
def fake_persistence(monkeypatch):
    """Make `torch_utils.persistence._reconstruct_persistent_obj` importable so pickle can name it."""
    def _reconstruct_persistent_obj(meta):
        raise AssertionError("only used to write pickles")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module = types.ModuleType("torch_utils.persistence")
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)


def _module_state(parameters=None, buffers=None, modules=None, non_persistent=(), **extra) -> dict:
    return dict(_parameters=collections.OrderedDict(parameters or {}), _buffers=collections.OrderedDict(buffers or {}),
                _non_persistent_buffers_set=set(non_persistent), _modules=collections.OrderedDict(modules or {}),
                training=False, **extra)


def test_hand_made_snapshot_follows_state_dict_rules_and_never_runs_module_src(tmp_path, fake_persistence):
    marker = tmp_path / "marker"
    weight = torch.nn.Parameter(torch.randn(3, 2))
    view_base = torch.arange(12, dtype=torch.float32)
    child = _Network("Layer", _module_state(
        parameters={"weight": weight, "bias": None},
        buffers={"kept": view_base[2:8].view(2, 3), "scratch": torch.zeros(2)},
        non_persistent={"scratch"},
    ), module_src=f"open({str(marker)!r}, 'w').write('executed')")
    root = _Network("Generator", _module_state(
        buffers={"w_avg": torch.ones(4, dtype=torch.float64)},
        modules={"fc0": child, "unused": None},
        _init_args=(),
        _init_kwargs={"z_dim": np.int64(4), "gain": np.float32(0.5), "nested": {"layers": (1, 2)}},
    ))
    path = _write(tmp_path / "snapshot.pkl", pickle.dumps({"G_ema": root, "G": None}, protocol=3))

    snapshot = load_snapshot(path)
    assert list(snapshot.state_dict) == ["w_avg", "fc0.weight", "fc0.kept"]
    assert torch.equal(snapshot.state_dict["fc0.weight"], weight.detach())
    assert torch.equal(snapshot.state_dict["fc0.kept"], view_base[2:8].view(2, 3))
    assert snapshot.state_dict["w_avg"].dtype == torch.float64
    assert snapshot.init_kwargs == {"z_dim": 4, "gain": 0.5, "nested": {"layers": [1, 2]}}
    assert type(snapshot.init_kwargs["z_dim"]) is int
    assert not marker.exists()


def test_plain_torch_module_inside_a_snapshot_is_refused_by_name(tmp_path, fake_persistence):
    root = _Network("Generator", _module_state(modules={"fc": torch.nn.Linear(2, 2)}, _init_kwargs={}))
    path = _write(tmp_path / "snapshot.pkl", pickle.dumps({"G_ema": root}, protocol=3))
    with pytest.raises(UnsafePickleError, match=r"torch\.nn\.modules\.linear\.Linear"):
        load_snapshot(path)


def test_positional_constructor_arguments_are_refused(tmp_path, fake_persistence):
    root = _Network("Generator", _module_state(_init_args=(512,), _init_kwargs={}))
    path = _write(tmp_path / "snapshot.pkl", pickle.dumps({"G_ema": root}, protocol=3))
    with pytest.raises(SnapshotFormatError, match="positional"):
        load_snapshot(path)
