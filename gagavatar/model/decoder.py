"""DPT-style decoder: four ViT token maps -> one dense feature map (SPEC §2, §7.4).

Parameter names are the reference's (``projects``, ``resize_layers``,
``layer_rn``, ``refinenet.{i}.resConfUnit1/2``, ``out_conv``, ``output_conv``),
so its tensors load after dropping the ``base_model.`` prefix.

Map k (patch grid g x g):
  1x1 conv to ``project_dims[k]`` -> resample (x4 / x2 / x1 / half) ->
  concatenate [the normalised image resized to that size, map] (image FIRST) ->
  3x3 conv (no bias) to ``hidden``.
Fusion, coarse to fine:
  p4 = F0(rn4 -> size of rn3); p3 = F1(p4, rn3 -> size of rn2);
  p2 = F2(p3, rn2 -> size of rn1); p1 = F3(p2, rn1, x2)
then a 3x3 output conv, resized (bilinear, align_corners=True) to the plane size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.io import resize_image


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """F(x, skip): x + RCU1(skip) (when given); RCU2; bilinear resize
    (align_corners=True) to ``size`` or x2; 1x1 conv. ``skip_unit=False`` leaves
    out RCU1 (for a block that never gets a skip input)."""

    def __init__(self, channels: int, skip_unit: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels, 1)
        self.resConfUnit1 = ResidualConvUnit(channels) if skip_unit else None
        self.resConfUnit2 = ResidualConvUnit(channels)

    def forward(self, x: Tensor, skip: Tensor | None = None, size=None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTDecoder(nn.Module):
    """Token maps [B, D, g, g] x 4 + normalised image -> features [B, out_dim, S, S].

    ``unused_skip_unit``: build refinenet.0.resConfUnit1, which the forward never
    calls (needed to load the released checkpoint)."""

    def __init__(self, embed_dim: int = 768, project_dims=(256, 512, 1024, 1024), hidden: int = 256,
                 out_dim: int = 256, unused_skip_unit: bool = True):
        super().__init__()
        d = list(project_dims)
        self.projects = nn.ModuleList([nn.Conv2d(embed_dim, c, 1) for c in d])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(d[0], d[0], kernel_size=4, stride=4),  # x4
            nn.ConvTranspose2d(d[1], d[1], kernel_size=2, stride=2),  # x2
            nn.Identity(),                                            # x1
            nn.Conv2d(d[3], d[3], kernel_size=3, stride=2, padding=1),  # /2 (rounded up)
        ])
        self.layer_rn = nn.ModuleList([nn.Conv2d(c + 3, hidden, 3, padding=1, bias=False) for c in d])
        # refinenet.0 never gets a skip input; the reference still builds its
        # resConfUnit1 (in the released checkpoint, never trained): unused_skip_unit
        self.refinenet = nn.ModuleList([FeatureFusionBlock(hidden, skip_unit=(i > 0 or unused_skip_unit))
                                        for i in range(4)])
        self.output_conv = nn.Conv2d(hidden, out_dim, 3, padding=1)

    def forward(self, maps: list[Tensor], image: Tensor, output_size: int | None = None) -> Tensor:
        """``maps``: 4 token maps [B, D, g, g] (earliest block first); ``image``:
        the normalised backbone input [B, 3, H, W]. Returns [B, out_dim, S, S]."""
        rn = []
        for k, m in enumerate(maps):
            m = self.resize_layers[k](self.projects[k](m))
            m = torch.cat([resize_image(image, m.shape[-2:]), m], dim=1)
            rn.append(self.layer_rn[k](m))
        p4 = self.refinenet[0](rn[3], size=rn[2].shape[-2:])
        p3 = self.refinenet[1](p4, rn[2], size=rn[1].shape[-2:])
        p2 = self.refinenet[2](p3, rn[1], size=rn[0].shape[-2:])
        p1 = self.refinenet[3](p2, rn[0])
        out = self.output_conv(p1)
        if output_size is not None and tuple(out.shape[-2:]) != (output_size, output_size):
            out = F.interpolate(out, size=(output_size, output_size), mode="bilinear", align_corners=True)
        return out


def identity_feature(last_map: Tensor, last_cls: Tensor, token: str) -> Tensor:
    """The global identity feature F_id [B, D] from the last block's normalised output.

    ``token="first_patch"``: the top-left patch token (what the reference code
    computes, ``features[-1][:, 0]`` after the CLS token was dropped, and what
    the released weights expect, SPEC §7.3); ``token="cls"``: the CLS token.
    ``last_map`` [B, D, g, g], ``last_cls`` [B, D].
    """
    if token == "first_patch":
        return last_map[:, :, 0, 0]
    if token == "cls":
        return last_cls
    raise ValueError(f"fid_token must be 'first_patch' or 'cls', got {token!r}")
