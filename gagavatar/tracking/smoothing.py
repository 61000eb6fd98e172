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

import numpy as np

REFERENCE_POSE_WEIGHT = 0.6  # EMA weight of the new frame for rotation and translation
REFERENCE_EYE_WEIGHT = 0.7


def ema_sequence(x: np.ndarray, alpha: float) -> np.ndarray:
    """Causal EMA along the first axis: s_0 = x_0, s_t = alpha x_t + (1 - alpha) s_{t-1}. [F, ...]"""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    if len(x) == 0:
        return out
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = alpha * x[t] + (1.0 - alpha) * out[t - 1]
    return out


def rotation_to_6d(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 6]: the first two rows (PyTorch3D's matrix_to_rotation_6d)."""
    return np.asarray(R)[..., :2, :].reshape(*np.shape(R)[:-2], 6)


def rotation_from_6d(d6: np.ndarray) -> np.ndarray:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt on the two rows (PyTorch3D's rotation_6d_to_matrix)."""
    a1, a2 = np.asarray(d6)[..., :3], np.asarray(d6)[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def weights_for(strength: float) -> tuple[float, float]:
    """EMA weights (pose, eyes) of a new frame for a smoothing strength (1 = reference)."""
    if strength < 0:
        raise ValueError(f"smoothing strength must be >= 0, got {strength}")
    pose = 1.0 - strength * (1.0 - REFERENCE_POSE_WEIGHT)
    eyes = 1.0 - strength * (1.0 - REFERENCE_EYE_WEIGHT)
    if pose <= 0:
        raise ValueError(f"smoothing strength {strength} is too large: at most "
                         f"{1 / (1 - REFERENCE_POSE_WEIGHT):.2f} (beyond it nothing would move)")
    return pose, eyes


def smooth_track(transforms: np.ndarray, eye_pose: np.ndarray, strength: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth reference transforms [F, 3, 4] and eye poses [F, 6] over consecutive frames.

    Returns new (transforms, eye_pose), float32. Only pass the frames that were
    tracked, in order (the reference smooths the tracked frames, sorted by index).
    """
    if strength == 0 or len(transforms) == 0:
        return np.asarray(transforms, np.float32).copy(), np.asarray(eye_pose, np.float32).copy()
    a_pose, a_eyes = weights_for(strength)
    transforms = np.asarray(transforms, dtype=np.float64)
    rot = rotation_from_6d(ema_sequence(rotation_to_6d(transforms[:, :3, :3]), a_pose))
    trans = ema_sequence(transforms[:, :3, 3], a_pose)
    out = np.concatenate([rot, trans[..., None]], axis=-1)
    return out.astype(np.float32), ema_sequence(eye_pose, a_eyes).astype(np.float32)
