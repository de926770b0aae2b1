"""Reconstruction targets for the tiny generator that no latent of it reproduces exactly (tests, bench/multi_id.py)."""
from __future__ import annotations

import copy

import torch


@torch.no_grad()
def out_of_domain_targets(G: torch.nn.Module, count: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (count, 3, R, R), their z): renders of a perturbed copy of G, so no W of G reproduces them exactly."""
    rng = torch.Generator().manual_seed(seed)
    perturbed = copy.deepcopy(G)
    for parameter in perturbed.synthesis.parameters():
        if parameter.numel() > 1:
            parameter.add_(torch.randn(parameter.shape, generator=rng) * 0.3 * parameter.std())
    z = torch.randn(count, G.z_dim, generator=rng)
    images = perturbed.synthesis(perturbed.mapping(z, None), noise_mode="const", force_fp32=True)
    return images.clamp(-1, 1), z
