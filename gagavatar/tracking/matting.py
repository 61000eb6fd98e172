"""Foreground mattes from MediaPipe's selfie segmentation (shipped in the mediapipe wheel).

The released GAGAvatar model was trained on frames matted on black (SPEC §9);
the reference tracker used a separate matting network (StyleMatte), we use the
selfie-segmentation model MediaPipe ships, which runs on a CPU in ~6 ms.
"""
from __future__ import annotations

import numpy as np

from gagavatar.tracking.landmarks import _import_mediapipe, native_logs_silenced, wait_until_open


class Segmenter:
    """Person matte of an RGB uint8 image [H, W, 3] -> float32 [H, W] in [0, 1]."""

    def __init__(self):
        mp = _import_mediapipe()
        with native_logs_silenced():
            # model 0 = the "general" 256x256 model, made for square-ish portrait crops.
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
            wait_until_open(self._seg)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
        mask = self._seg.process(np.ascontiguousarray(image)).segmentation_mask
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def close(self) -> None:
        self._seg.close()


def composite_on_black(image: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """image [H, W, 3] uint8 * matte [H, W] in [0, 1] -> uint8 [H, W, 3] on black."""
    out = image.astype(np.float32) * matte[..., None]
    return (out + 0.5).astype(np.uint8)
