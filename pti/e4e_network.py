"""The e4e encoder network ("Encoder4Editing": IR-SE-50 backbone, feature pyramid, map2style blocks).

Module and parameter names follow the released encoder4editing code, so the `encoder.*` part of
`e4e_ffhq_encode.pt` loads with `load_state_dict(..., strict=True)`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# IR-SE-50 stages: (input channels, output channels, number of units); the first unit of each stage has stride 2.
IR_SE_50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
# Body units whose outputs feed the pyramid: fine (128 ch, 64x64), middle (256 ch, 32x32), coarse (512 ch, 16x16).
FINE_FEATURE_UNIT = 6
MIDDLE_FEATURE_UNIT = 20
COARSE_FEATURE_UNIT = 23
# Styles [0, 3) read the coarse map, [3, 7) the middle map, the rest the fine map (as in the release).
FIRST_MIDDLE_STYLE = 3
FIRST_FINE_STYLE = 7
INPUT_RESOLUTION = 256
STYLE_DIM = 512  # the released encoder's style width (the FFHQ generator's w_dim)
PYRAMID_CHANNELS = 512  # channels of the feature pyramid the style heads read (fixed by the backbone)


def num_styles_for_resolution(stylegan_resolution: int) -> int:
    """Number of W+ layers of a StyleGAN2 generator of this output resolution (1024 -> 18, 512 -> 16)."""
    log_size = int(math.log2(stylegan_resolution))
    if stylegan_resolution < 16 or 2**log_size != stylegan_resolution:
        raise ValueError(f"StyleGAN2 resolution must be a power of two >= 16, got {stylegan_resolution}")
    return 2 * log_size - 2


class SqueezeExcitation(nn.Module):
    """Channel attention of an IR-SE unit (the release's `SEModule`): x * sigmoid(fc2(relu(fc1(mean(x)))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each channel of x by its attention weight."""
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class BottleneckIRSE(nn.Module):
    """One IR-SE residual unit (the release's `bottleneck_IR_SE`): BN-conv-PReLU-conv-BN-SE plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if in_channels == out_channels:
            # The release subsamples with a 1x1 max pool (identity when stride is 1).
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, (1, 1), stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcitation(out_channels, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut."""
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """Linear layer with the StyleGAN2 equalized learning rate (rosinality's `EqualLinear`, no activation)."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = (1 / math.sqrt(in_features)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ (weight * scale).T + bias * lr_mul."""
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class GradualStyleBlock(nn.Module):
    """The release's "map2style" head: stride-2 convs down to 1x1, then an EqualLinear to one style vector."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        self.out_channels = out_channels
        layers: list[nn.Module] = []
        for index in range(int(math.log2(spatial))):
            conv_in = in_channels if index == 0 else out_channels
            layers += [nn.Conv2d(conv_in, out_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, spatial, spatial) feature map -> (N, out_channels) style vector."""
        return self.linear(self.convs(features).view(-1, self.out_channels))


def upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinear (align_corners=True) upsampling of `coarse` to `lateral`'s size, plus `lateral`."""
    _, _, height, width = lateral.shape
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """e4e encoder: 256x256 image in [-1, 1] -> W+ offsets (N, num_styles, style_dim), before `latent_avg` is added.

    `style_dim` is the generator's w_dim (512 in the release); only the style heads' widths depend on it.
    """

    def __init__(self, num_styles: int = 18, style_dim: int = STYLE_DIM):
        super().__init__()
        if num_styles <= FIRST_FINE_STYLE:
            raise ValueError(f"num_styles must be more than {FIRST_FINE_STYLE}, got {num_styles}")
        if style_dim < 1:
            raise ValueError(f"style_dim must be at least 1, got {style_dim}")
        self.num_styles = num_styles
        self.style_dim = style_dim
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_channels, out_channels, num_units in IR_SE_50_STAGES:
            units.append(BottleneckIRSE(in_channels, out_channels, stride=2))
            units += [BottleneckIRSE(out_channels, out_channels, stride=1) for _ in range(num_units - 1)]
        self.body = nn.Sequential(*units)
        self.styles = nn.ModuleList()
        for index in range(num_styles):
            spatial = 16 if index < FIRST_MIDDLE_STYLE else 32 if index < FIRST_FINE_STYLE else 64
            self.styles.append(GradualStyleBlock(PYRAMID_CHANNELS, style_dim, spatial))
        self.latlayer1 = nn.Conv2d(256, PYRAMID_CHANNELS, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, PYRAMID_CHANNELS, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, 256, 256) in [-1, 1] -> codes (N, num_styles, style_dim): w0 on every layer plus deltas."""
        x = self.input_layer(x)
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index == FINE_FEATURE_UNIT:
                fine_lateral = x
            elif index == MIDDLE_FEATURE_UNIT:
                middle_lateral = x
            elif index == COARSE_FEATURE_UNIT:
                coarse = x
        w0 = self.styles[0](coarse)
        codes = [w0]
        features = coarse
        for index in range(1, self.num_styles):
            if index == FIRST_MIDDLE_STYLE:
                middle = upsample_add(coarse, self.latlayer1(middle_lateral))
                features = middle
            elif index == FIRST_FINE_STYLE:
                features = upsample_add(middle, self.latlayer2(fine_lateral))
            codes.append(w0 + self.styles[index](features))
        return torch.stack(codes, dim=1)
