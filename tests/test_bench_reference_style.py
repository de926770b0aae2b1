"""bench/reference_style.py, the same-run baseline of bench/generator.py, computes what the generator computes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH_FILE = Path(__file__).resolve().parent.parent / "bench" / "reference_style.py"
_spec = importlib.util.spec_from_file_location("bench_reference_style", BENCH_FILE)
bench = importlib.util.module_from_spec(_spec)  # a module of the bench scripts, not of a package
_spec.loader.exec_module(bench)
reference_style_copy, reference_style_synthesis = bench.reference_style_copy, bench.reference_style_synthesis
TINY_DIR = Path(__file__).parent / "fixtures" / "stylegan2_ada_tiny"


@pytest.fixture(scope="module")
def reference():
    """Outputs of the reference implementation on the tiny fixture generator."""
    return torch.load(TINY_DIR / "reference_outputs.pt", weights_only=True)


@pytest.mark.parametrize("ws_key, noise_mode, out_key", [
    ("ws_psi1", "const", "img_const"),
    ("ws_psi1", "none", "img_none"),
    ("wplus", "const", "img_wplus_const"),
])
def test_reproduces_the_reference_outputs(tiny_generator, reference, ws_key, noise_mode, out_key):
    synthesis = reference_style_copy(tiny_generator.synthesis)
    with torch.no_grad():
        img = reference_style_synthesis(synthesis, reference[ws_key], noise_mode=noise_mode)
    torch.testing.assert_close(img, reference[out_key], atol=1e-4, rtol=0)


def test_gradients_match_the_generator(tiny_generator, reference):
    """The gradient w.r.t. W+ (the reference's own) and w.r.t. every weight (our generator's)."""
    tiny_generator.requires_grad_(True)
    synthesis = reference_style_copy(tiny_generator.synthesis)
    assert all(p.is_contiguous() for p in synthesis.parameters())
    assert not all(p.is_contiguous() for p in tiny_generator.synthesis.parameters())  # up-sampling weights (in, out)
    wplus = reference["wplus"][:1].clone().requires_grad_(True)
    (reference_style_synthesis(synthesis, wplus) * reference["grad_weights"]).sum().backward()
    torch.testing.assert_close(wplus.grad, reference["grad_wplus_b1"], atol=1e-4, rtol=0)

    (tiny_generator.synthesis(reference["wplus"][:1], noise_mode="const") * reference["grad_weights"]).sum().backward()
    for (name, ours), theirs in zip(tiny_generator.synthesis.named_parameters(), synthesis.parameters()):
        scale = max(1.0, ours.grad.abs().max().item())
        torch.testing.assert_close(theirs.grad, ours.grad, atol=1e-4 * scale, rtol=1e-4, msg=name)


def test_rejects_random_noise(tiny_generator, reference):
    with pytest.raises(ValueError, match="noise_mode"):
        reference_style_synthesis(tiny_generator.synthesis, reference["wplus"], noise_mode="random")
