"""Rotation conversions, in one place (torch, any batch shape, float32 or float64, differentiable).

Conventions: axis-angle vectors [..., 3] (angle = norm, right-handed); rotation
matrices [..., 3, 3] act on column vectors (``R @ x``); quaternions [..., 4] are
w-first (w, x, y, z), as 3D Gaussian splatting stores them; the 6D representation
[..., 6] is the first two ROWS of the matrix (PyTorch3D's ``matrix_to_rotation_6d``,
which the reference tracker's smoothing uses).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues' formula: axis-angle [..., 3] -> rotation matrices [..., 3, 3].

    Uses the Taylor series near zero, so values and gradients are exact at rest pose.
    """
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)  # sin(t)/t
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)  # (1-cos t)/t^2
    return torch.eye(3, dtype=rotvec.dtype, device=rotvec.device) + a * hat(rotvec) + b * (hat(rotvec) @ hat(rotvec))


def hat(v: Tensor) -> Tensor:
    """Cross-product matrices [..., 3, 3] of vectors [..., 3]: ``hat(v) @ x = v x x``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3] (angle in [0, pi]), through the quaternion."""
    q = matrix_to_quaternion(R)  # w >= 0
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle/2) -> 2 as the angle -> 0
    factor = torch.where(sin_half < 1e-6, 2.0 + angle * angle / 12, angle / sin_half.clamp_min(1e-12))
    return xyz * factor


def quaternion_to_matrix(quats: Tensor, normalize: bool = True) -> Tensor:
    """Quaternions [..., 4] (w, x, y, z) -> matrices [..., 3, 3].

    ``normalize=False`` applies the formula to the quaternion AS GIVEN: for a
    non-unit q the result is not a rotation (the reference rasterizer does this,
    see ``gagavatar.model.lifting.reference_covariances``).
    """
    if normalize:
        quats = F.normalize(quats, dim=-1)
    w, x, y, z = quats.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quats.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] (det +1) -> unit quaternions [..., 4] (w first, w >= 0).

    Shepperd's method: whichever of 4w^2, 4x^2, 4y^2, 4z^2 is largest is the pivot,
    so nothing is divided by a small number.
    """
    m = R
    t0 = 1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    t1 = 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2]
    t2 = 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2]
    t3 = 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]
    a, b, c = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    d, e, f = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]
    candidates = torch.stack([
        torch.stack([t0, a, b, c], -1),  # pivot w
        torch.stack([a, t1, d, e], -1),  # pivot x
        torch.stack([b, d, t2, f], -1),  # pivot y
        torch.stack([c, e, f, t3], -1),  # pivot z
    ], dim=-2)  # each row is 4 q_k q (up to the pivot's factor)
    pivot = torch.stack([t0, t1, t2, t3], -1).argmax(-1)
    q = torch.gather(candidates, -2, pivot[..., None, None].expand(*pivot.shape, 1, 4))[..., 0, :]
    q = F.normalize(q, dim=-1)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)


def axis_rotation(axis: str, angle: Tensor) -> Tensor:
    """Rotations [..., 3, 3] by ``angle`` [...] (radians, right-handed) about the world axis "x", "y" or "z"."""
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    c, s = torch.cos(angle), torch.sin(angle)
    R = torch.zeros(*angle.shape, 3, 3, dtype=angle.dtype, device=angle.device)
    k = 3 - i - j  # the axis itself
    R[..., k, k] = 1
    R[..., i, i], R[..., i, j], R[..., j, i], R[..., j, j] = c, -s, s, c
    return R


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """[..., 3, 3] -> [..., 6]: the first two rows."""
    return R[..., :2, :].reshape(*R.shape[:-2], 6)


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt on the two rows (the nearest rotation with that first row)."""
    b1 = F.normalize(d6[..., :3], dim=-1)
    a2 = d6[..., 3:]
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2, dim=-1)], dim=-2)
