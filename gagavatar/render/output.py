"""What ``rasterize`` returns, whichever backend drew it."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class RasterOutput(NamedTuple):
    """What ``rasterize`` returns.

    image: [B, C, H, W] composited features, background included.
    alpha: [B, 1, H, W] accumulated opacity, 1 - final transmittance.
    depth: [B, 1, H, W] expected camera-space z, normalised by alpha
        (sum_i w_i z_i / alpha; 0 where alpha is 0).
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor
