"""A tiny e4e for the tiny generator: the released architecture (IR-SE-50, pyramid, map2style) with random weights.

The style heads are 32 wide and there are 8 of them (the tiny generator's w_dim and num_ws); `latent_avg` is the
generator's w_avg on every layer, as e4e's training starts from. The heads' last layers are centred and rescaled on
a few random probe images so that the codes vary from image to image around w_avg about half as much as the
generator's own W codes (random weights alone give nearly the same small code for every image).
"""
from __future__ import annotations

from pathlib import Path

import torch

from pti.e4e import E4E
from pti.e4e_network import Encoder4Editing

SEED = 7
# Spread of the codes around latent_avg, as a fraction of the spread of the generator's W codes.
CODE_SPREAD = 0.5


def w_spread(generator: torch.nn.Module, samples: int = 256) -> float:
    """Standard deviation of the generator's W codes around w_avg (seeded samples of the mapping network)."""
    z = torch.randn(samples, generator.z_dim, generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        w = generator.mapping(z, None)[:, 0]
    return float((w - generator.mapping.w_avg).std())


def tiny_e4e(generator: torch.nn.Module) -> E4E:
    """An e4e of the released architecture whose W+ codes fit `generator` (num_ws x w_dim), seeded weights."""
    torch.manual_seed(SEED)
    encoder = Encoder4Editing(num_styles=generator.num_ws, style_dim=generator.w_dim).eval().requires_grad_(False)
    probe = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(SEED)) * 2 - 1
    outputs = []
    hooks = [head.linear.register_forward_hook(lambda module, args, out: outputs.append(out))
             for head in encoder.styles]
    with torch.no_grad():
        encoder(probe)
        for hook in hooks:
            hook.remove()
        for head, out in zip(encoder.styles, outputs):  # each head's output centred on the probes
            head.linear.bias.sub_(out.mean(dim=0) / head.linear.lr_mul)
        spread = float(encoder(probe).std(dim=0).mean())  # how much the codes vary from image to image
        scale = CODE_SPREAD * w_spread(generator) / spread
        for head in encoder.styles:
            head.linear.weight.mul_(scale)
            head.linear.bias.mul_(scale)
    latent_avg = generator.mapping.w_avg.detach().float().reshape(1, -1).repeat(generator.num_ws, 1)
    return E4E(encoder=encoder, latent_avg=latent_avg.clone())


def save_released_layout(e4e: E4E, path: Path, *, stylegan_size: int = 32) -> Path:
    """Write `e4e` as e4e_ffhq_encode.pt is laid out: encoder.* (and a few decoder.*) weights, opts, latent_avg."""
    state_dict = {f"encoder.{key}": value for key, value in e4e.encoder.state_dict().items()}
    state_dict["decoder.style.1.weight"] = torch.zeros(8, 8)  # generator weights: the loader must ignore them
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": stylegan_size, "start_from_latent_avg": True}
    torch.save({"state_dict": state_dict, "opts": opts, "latent_avg": e4e.latent_avg}, path)
    return path
