"""Small geometry for placing Gaussians: frames (quaternions) from a normal and a direction,
and 2D tests against the landmarks' outlines (inside a polygon, distance to a polyline)."""
from __future__ import annotations

import numpy as np
import torch

from gagavatar.geometry import matrix_to_quaternion

UP = np.array([0.0, 1.0, 0.0])


def frame_quaternions(normal: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Quaternions [N,4] of frames whose z is ``normal`` [N,3] and x is ``axis`` [N,3] made tangent."""
    n = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    a = axis - (axis * n).sum(1, keepdims=True) * n
    bad = np.linalg.norm(a, axis=1) < 1e-6
    a[bad] = np.cross(n[bad], np.array([0.0, 0.0, 1.0]) + 0.3)  # any tangent
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = np.cross(n, a)
    frames = torch.from_numpy(np.stack([a, b, n], axis=2))  # columns = local axes
    return matrix_to_quaternion(frames).numpy().astype(np.float32)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which 2D points [N,2] are inside the polygon [M,2]."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[None, :, 0], polygon[None, :, 1]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(1) % 2 == 1


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance from 2D points [N,2] to a polyline [M,2]."""
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)
