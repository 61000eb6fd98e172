"""A dataset's images as pixels and tensors: reading a frame or matte file, uint8 from floats,
uint8 to float tensors, and compositing a frame on a background with its matte."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gagavatar.data.errors import DatasetError, MissingFileError


def composite(image: torch.Tensor, matte: torch.Tensor, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """``image * matte + background * (1 - matte)``.

    image [..., 3, H, W] in [0, 1]; matte [..., 1, H, W] in [0, 1]; background a
    colour (3 floats or one float) or an image broadcastable to [..., 3, H, W].
    The reference trains on frames matted on black, i.e. background (0, 0, 0).
    """
    if not torch.is_tensor(background):
        background = torch.as_tensor(background, dtype=image.dtype, device=image.device)
        if background.dim() == 1:
            background = background.reshape(-1, 1, 1)
    background = background.to(image)
    return image * matte + background * (1.0 - matte)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H,W,3] -> float [3,H,W] in [0,1]; uint8 [H,W] -> float [1,H,W]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def to_uint8(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"images must be uint8 or float in [0,1], got {a.dtype}")


def read_image(path: Path, mode: str) -> np.ndarray:
    if not path.is_file():
        raise MissingFileError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file is corrupt - "
                           f"regenerate or re-track this video") from e
