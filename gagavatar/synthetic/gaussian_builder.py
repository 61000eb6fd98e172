"""Collecting Gaussian groups, each anchored to mesh vertices (surface points, points between
landmarks, rigid parts), and stacking them into a ``GaussianHead``."""
from __future__ import annotations

import numpy as np
import torch

from gagavatar.synthetic.gaussian_head import GaussianHead
from gagavatar.synthetic.shapes import frame_quaternions


class GaussianBuilder:
    """Collects Gaussian groups, then stacks them into a ``GaussianHead``."""

    def __init__(self, K: int, rest_area: np.ndarray):
        self.K = K
        self.rest_area = rest_area
        self.groups: list[tuple[str, dict]] = []

    def add(self, name: str, idx, w, quats, scales, albedo, opacity=1.0, normal_offset=0.0,
            offset=None, lit=1.0, in_head_box=True, fixed_normal=None, cullable=False, face=None):
        idx, w = np.asarray(idx), np.asarray(w, np.float32)
        n = len(idx)
        if n == 0:
            return
        pad = self.K - idx.shape[1]
        g = {
            "anchor_idx": np.pad(idx, ((0, 0), (0, pad))), "anchor_w": np.pad(w, ((0, 0), (0, pad))),
            "normal_offset": np.broadcast_to(np.asarray(normal_offset, np.float32), (n,)),
            "offset": np.broadcast_to(np.zeros(3, np.float32) if offset is None else np.asarray(offset, np.float32), (n, 3)),
            "quats": np.asarray(quats, np.float32), "scales": np.broadcast_to(np.asarray(scales, np.float32), (n, 3)),
            "albedo": np.clip(np.broadcast_to(np.asarray(albedo, np.float32), (n, 3)), 0, 1),
            "opacities": np.broadcast_to(np.asarray(opacity, np.float32), (n,)),
            "lit": np.broadcast_to(np.asarray(lit, np.float32), (n,)),
            "in_head_box": np.broadcast_to(np.asarray(in_head_box, bool), (n,)),
            "fixed_normal": np.zeros((n, 3), np.float32) if fixed_normal is None else
            np.asarray(fixed_normal, np.float32) / np.linalg.norm(fixed_normal, axis=1, keepdims=True),
            "cullable": np.broadcast_to(np.asarray(cullable, bool), (n,)),
            "face": np.full(n, -1, np.int64) if face is None else np.asarray(face, np.int64),
        }
        self.groups.append((name, g))

    def build(self) -> GaussianHead:
        parts, start = {}, 0
        for name, g in self.groups:
            n = len(g["anchor_idx"])
            parts[name] = slice(start, start + n)
            start += n
        cat = {k: torch.from_numpy(np.ascontiguousarray(np.concatenate([g[k] for _, g in self.groups])))
               for k in self.groups[0][1]}
        cat["anchor_idx"] = cat["anchor_idx"].long()
        return GaussianHead(parts=parts, rest_area=torch.from_numpy(self.rest_area.astype(np.float32)), **cat)


def between_landmarks(lmk_face, lmk_bary, faces, a_rows, b_rows, t):
    """Anchors [M,6] / weights [M,6] of points (1-t) landmark_a + t landmark_b."""
    idx = np.concatenate([faces[lmk_face[a_rows]], faces[lmk_face[b_rows]]], 1)
    w = np.concatenate([lmk_bary[a_rows] * (1 - t)[:, None], lmk_bary[b_rows] * t[:, None]], 1)
    return idx, w


def rigid(builder: GaussianBuilder, name: str, X: np.ndarray, anchor: int, points: np.ndarray, normals: np.ndarray,
           axes: np.ndarray, scales, albedo, opacity=1.0, in_head_box=True):
    """Gaussians that move rigidly with vertex ``anchor`` (long hair, a bun, a brim, glasses).

    The head is canonical (its pose lives in the camera), so their normals stay fixed.
    """
    n = len(points)
    builder.add(name, np.full((n, 1), anchor), np.ones((n, 1)), frame_quaternions(normals, axes), scales, albedo,
                opacity=opacity, offset=points - X[anchor], fixed_normal=normals, in_head_box=in_head_box)
