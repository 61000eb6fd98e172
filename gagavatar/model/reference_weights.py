"""The released checkpoint's tensor listing, and SPEC §8's deterministic weights.

``official_listing()`` reads the 597 ``name shape`` lines of the released
GAGAvatar.pt (bundled as ``assets/official_state_dict.txt``), in file order.
``deterministic_tensor(i, name, shape, seed)`` gives the weights that the parity
fixture was computed with: the i-th tensor (0-based, file order) is drawn from
``torch.Generator().manual_seed(seed + i)`` in float64, then norm gains become
``1 + 0.1 w``, matrices/kernels are scaled by ``1 / sqrt(fan_in)``, and every
other vector by 0.1.
"""
from __future__ import annotations

import math

import torch

from gagavatar.assets import bundled

_NORM_GAIN_SUFFIXES = ("norm.weight", "norm1.weight", "norm2.weight", ".gamma")


def official_listing(path=None) -> list[tuple[str, tuple[int, ...]]]:
    """[(name, shape)] of the released checkpoint, in file order (597 entries)."""
    if path is None:
        text = bundled("official_state_dict.txt").read_text()
    else:
        text = open(path).read()
    listing = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, shape = line.split(" ", 1)
        listing.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return listing


def deterministic_tensor(index: int, name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The SPEC §8 weight for the ``index``-th tensor of the listing (float64)."""
    g = torch.Generator().manual_seed(seed + index)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    if name.endswith(_NORM_GAIN_SUFFIXES):
        return 1 + 0.1 * w
    if len(shape) >= 2:
        return w / math.sqrt(math.prod(shape[1:]))
    return 0.1 * w
