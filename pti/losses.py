"""Losses of PTI: LPIPS (the `lpips` package's networks, with reusable target features), L2, noise regularisation."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Sequence

import lpips as lpips_package
import torch
import torch.nn.functional as F

from pti import weights

LPIPSNet = Literal["vgg", "alex"]

# Registry key of each LPIPS backbone's ImageNet weights (torchvision layout: `features.<index>.weight|bias`).
BACKBONE_WEIGHTS = {"vgg": "lpips-vgg16", "alex": "lpips-alexnet"}


class PerceptualLoss(torch.nn.Module):
    """LPIPS distance (v0.1, linear heads) split into `features` and `distance_from_features`.

    Splitting lets a loop compute a fixed image's features once (the target's) and reuse them every step.
    Inputs are (N, 3, H, W) images in [-1, 1]. All parameters are frozen; gradients flow to the inputs.
    """

    def __init__(self, network: lpips_package.LPIPS) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)

    @property
    def net_name(self) -> str:
        """'vgg' or 'alex'."""
        return self.network.pnet_type

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised backbone activations of `images`, one tensor per LPIPS layer."""
        activations = self.network.net(self.network.scaling_layer(images))
        return [lpips_package.normalize_tensor(a) for a in activations]

    def distance_from_features(self, features_a: Sequence[torch.Tensor],
                               features_b: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-image LPIPS distance (N,) between two lists of `features` (batch sizes equal, or one of them 1)."""
        total = 0.0
        for head, fa, fb in zip(self.network.lins, features_a, features_b):
            total = total + head((fa - fb).square()).mean(dim=(1, 2, 3))
        return total

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance (N,) between two image batches."""
        return self.distance_from_features(self.features(images_a), self.features(images_b))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, or of a torch file loaded safely (`weights_only=True`)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise weights.WeightsError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def _backbone_state(network: lpips_package.LPIPS, source: dict[str, torch.Tensor], origin: str) -> dict:
    """Map torchvision `features.<i>.*` tensors onto the LPIPS backbone's `net.slice<k>.<i>.*` names."""
    state = {}
    for name, parameter in network.net.named_parameters():
        _, index, kind = name.split(".")  # "slice<k>", "<i>", "weight"/"bias"
        key = f"features.{index}.{kind}"
        if key not in source:
            raise weights.WeightsError(f"{origin}: missing tensor {key!r} of the {network.pnet_type} backbone")
        if source[key].shape != parameter.shape:
            raise weights.WeightsError(f"{origin}: tensor {key!r} has shape {tuple(source[key].shape)}, "
                                       f"expected {tuple(parameter.shape)}")
        state[f"net.{name}"] = source[key].float()
    return state


def _random_backbone_state(network: lpips_package.LPIPS, seed: int) -> dict:
    """Seeded random backbone weights (PyTorch's default layer initialisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in network.net.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
    return {f"net.{name}": p.detach().clone() for name, p in network.net.named_parameters()}


def _linear_heads_state(network: lpips_package.LPIPS) -> dict:
    """The calibrated linear heads (v0.1) that ship inside the `lpips` package, under both of their names."""
    path = Path(lpips_package.__file__).parent / "weights" / "v0.1" / f"{network.pnet_type}.pth"
    heads = torch.load(path, map_location="cpu", weights_only=True)
    state = dict(heads)
    for key, value in heads.items():  # `lin<k>.model...` and `lins.<k>.model...` are the same parameters
        layer, rest = key.split(".", 1)
        state[f"lins.{layer[3:]}.{rest}"] = value
    return state


def build_lpips(net: LPIPSNet = "vgg", *, pretrained: bool = True, device: torch.device | str = "cpu",
                seed: int = 0, backbone_path: str | Path | None = None) -> PerceptualLoss:
    """LPIPS-VGG or LPIPS-AlexNet with frozen weights, without any torchvision download.

    pretrained=True: torchvision's ImageNet backbone weights through `pti.weights.resolve` (registry keys in
    `BACKBONE_WEIGHTS`; `backbone_path` = its `local=` override, else `$PTI_WEIGHTS_DIR`, else the Hub), sha256
    checked. pretrained=False: a seeded random backbone (tests only). The calibrated linear heads always come
    from the `lpips` package's own files.
    """
    if net not in BACKBONE_WEIGHTS:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(BACKBONE_WEIGHTS)}")
    with torch.device("meta"), warnings.catch_warnings():  # the architecture only: no initialisation, no download
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # its `pretrained=` notice
        network = lpips_package.LPIPS(net=net, pretrained=False, pnet_rand=True, use_dropout=True, verbose=False)
    network = network.to_empty(device="cpu")
    if pretrained:
        path = weights.resolve(BACKBONE_WEIGHTS[net], local=backbone_path)
        backbone = _backbone_state(network, _read_tensors(path), str(path))
    else:
        backbone = _random_backbone_state(network, seed)
    scaling = {f"scaling_layer.{k}": v for k, v in lpips_package.ScalingLayer().state_dict().items()}
    network.load_state_dict({**scaling, **backbone, **_linear_heads_state(network)}, strict=True)
    return PerceptualLoss(network).to(device)


def downsample_area(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Area (box-filter) downsampling to `size` x `size`; images already that small (or size None) pass through."""
    if size is None or images.shape[-1] <= size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def l2_per_image(images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image (N,)."""
    return (images_a - images_b).square().mean(dim=(1, 2, 3))


def noise_regularization(noise_buffers: Sequence[torch.Tensor]) -> torch.Tensor:
    """Karras et al.'s noise penalty: squared auto-correlation at 1-pixel shifts, over a pyramid down to 8x8."""
    loss = torch.zeros((), device=noise_buffers[0].device) if noise_buffers else torch.zeros(())
    for buffer in noise_buffers:
        noise = buffer[None, None, :, :]
        while True:
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return loss


@torch.no_grad()
def normalize_noise_(noise_buffers: Sequence[torch.Tensor]) -> None:
    """Renormalise each noise buffer in place to zero mean and unit variance."""
    for buffer in noise_buffers:
        buffer -= buffer.mean()
        buffer *= buffer.square().mean().rsqrt()
