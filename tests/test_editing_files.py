"""Reading edit files: weights_only loading on the CPU whatever the environment says, readable refusals."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from editing_directions.errors import DirectionFileError
from editing_directions.files import read_weights_only, refusal_reason


class RunsCode:
    """Unpickling this runs `os.system`: what weights_only loading must refuse."""

    def __reduce__(self):
        return os.system, ("true",)


def test_code_is_refused_even_when_the_environment_asks_for_unsafe_loading(tmp_path, monkeypatch):
    path = tmp_path / "evil.pt"
    torch.save({"direction": RunsCode()}, path)
    # torch lets this variable turn off weights_only, but only where the caller did not ask for it explicitly
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(DirectionFileError, match=r"refused by safe \(weights_only\) loading or not a direction file: "
                                                 r"Trying to load unsupported GLOBAL \w+\.system"):
        read_weights_only(path, error=DirectionFileError, what="direction file")


def test_a_file_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    path = tmp_path / "cuda.pt"
    # write the file as a CUDA machine would: its storages tagged 'cuda:0'
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(torch.arange(4.0), path)
    monkeypatch.undo()
    assert b"cuda:0" in path.read_bytes()
    loaded = read_weights_only(path, error=DirectionFileError, what="direction file")
    assert loaded.device.type == "cpu" and torch.equal(loaded, torch.arange(4.0))


def test_an_unreadable_file_names_the_failure(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(torch.randn(1, 32), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DirectionFileError, match=r"cut.pt: unreadable or corrupt direction file \([A-Z]\w*Error: "):
        read_weights_only(path, error=DirectionFileError, what="direction file")


# Refusal messages as torch words them: 2.4-2.5 put the reason after "WeightsUnpickler error:" on a numbered list;
# 2.1-2.3 put everything on one line (nothing specific to keep: the whole message is given).
TORCH_2_4_MESSAGE = (
    "Weights only load failed. This file can still be loaded, to do so you have two options \n"
    "\t(1) Re-running `torch.load` with `weights_only` set to `False` will likely succeed.\n"
    "\t(2) Alternatively, to load with `weights_only=True` please check the recommended steps.\n"
    "\tWeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global by default.\n"
    "\n"
    "Please use `torch.serialization.add_safe_globals([system])` to allowlist this global.\n"
    "Check the documentation of torch.load to learn more about types accepted by default with weights_only.")
TORCH_2_1_MESSAGE = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
                     "succeed. WeightsUnpickler error: Unsupported class posix.system")


def test_refusal_reason_keeps_only_the_specific_lines():
    assert refusal_reason(pickle.UnpicklingError(TORCH_2_4_MESSAGE)) == (
        "Unsupported global: GLOBAL posix.system was not an allowed global by default. "
        "Please use `torch.serialization.add_safe_globals([system])` to allowlist this global.")
    assert refusal_reason(pickle.UnpicklingError(TORCH_2_1_MESSAGE)) == TORCH_2_1_MESSAGE
