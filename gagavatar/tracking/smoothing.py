"""Temporal smoothing of a tracked video, as the reference's ``smoothed.pkl`` does.

The reference runs a causal exponential moving average over frames,
``s_t = a x_t + (1 - a) s_{t-1}``, on the camera rotation (as the 6D
representation: the first two rows of the matrix, re-orthonormalised after
averaging), the camera translation (a = 0.6) and the eye rotations (a = 0.7).
Expression, jaw and shape are left alone.

``strength`` scales how much is smoothed: 0 = nothing, 1 = the reference's
weights, 2 = twice the reference's smoothing (a = 0.2 and 0.4).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry import matrix_to_rotation_6d, rotation_6d_to_matrix

REFERENCE_POSE_WEIGHT = 0.6  # EMA weight of the new frame for rotation and translation
REFERENCE_EYE_WEIGHT = 0.7


def weights_for(strength: float) -> tuple[float, float]:
    """EMA weights (pose, eyes) of a new frame for a smoothing strength (1 = reference)."""
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"smoothing strength must be a number >= 0, got {strength}")
    pose = 1.0 - strength * (1.0 - REFERENCE_POSE_WEIGHT)
    eyes = 1.0 - strength * (1.0 - REFERENCE_EYE_WEIGHT)
    if pose <= 0:
        raise ValueError(f"smoothing strength {strength} is too large: at most "
                         f"{1 / (1 - REFERENCE_POSE_WEIGHT):.2f} (beyond it nothing would move)")
    return pose, eyes


class Smoother:
    """The causal EMA over a stream of frames: each call smooths the next frames, continuing
    from the last frame of the previous call (so a live stream is smoothed over time)."""

    def __init__(self, strength: float = 1.0):
        self.strength = strength
        self.pose_weight, self.eye_weight = weights_for(strength)
        self._last = None  # (rotation 6D [6], translation [3], eyes [6]) of the last smoothed frame

    def __call__(self, transforms: Tensor, eye_pose: Tensor) -> tuple[Tensor, Tensor]:
        """Reference transforms [F, 3, 4] and eye poses [F, 6] -> smoothed ones (same dtype)."""
        if self.strength == 0 or len(transforms) == 0:
            return transforms.clone(), eye_pose.clone()
        x = transforms.double()
        rot, trans, eyes = matrix_to_rotation_6d(x[:, :3, :3]), x[:, :3, 3], eye_pose.double()
        out_rot, out_trans, out_eyes = torch.empty_like(rot), torch.empty_like(trans), torch.empty_like(eyes)
        a, b = self.pose_weight, self.eye_weight
        last = self._last or (rot[0], trans[0], eyes[0])  # s_0 = x_0
        for t in range(len(x)):
            last = (a * rot[t] + (1 - a) * last[0], a * trans[t] + (1 - a) * last[1], b * eyes[t] + (1 - b) * last[2])
            out_rot[t], out_trans[t], out_eyes[t] = last
        self._last = last
        smoothed = torch.cat([rotation_6d_to_matrix(out_rot), out_trans[..., None]], dim=-1)
        return smoothed.to(transforms.dtype), out_eyes.to(eye_pose.dtype)


def smooth_track(transforms: np.ndarray, eye_pose: np.ndarray, strength: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth reference transforms [F, 3, 4] and eye poses [F, 6] over consecutive frames.

    Returns new (transforms, eye_pose), float32. Only pass the frames that were
    tracked, in order (the reference smooths the tracked frames, sorted by index).
    """
    out = Smoother(strength)(torch.as_tensor(np.asarray(transforms, np.float64)),
                             torch.as_tensor(np.asarray(eye_pose, np.float64)))
    return tuple(a.numpy().astype(np.float32) for a in out)
