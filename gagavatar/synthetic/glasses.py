"""Glasses: two rims, a bridge and temples on a rigid frame in front of the eyes, and tinted
lenses."""
from __future__ import annotations

import math

import numpy as np

from gagavatar.synthetic.gaussian_builder import rigid
from gagavatar.synthetic.neutral_head import NeutralHead


def add_glasses(builder, nh: NeutralHead, look, rng, n):
    """Two rims, a bridge and temples (about ``n`` Gaussians) on a rigid frame in front of
    the eyes, and tinted lenses when ``look.lens_tint`` > 0."""
    X, skin_v, eyes, eye_r, eye_l, iod = nh.X, nh.skin_v, nh.eyes, nh.eye_r, nh.eye_l, nh.iod
    half_w, half_h = 0.42 * iod, 0.3 * iod
    behind_rims = skin_v & (np.abs(X[:, 1] - eyes[1]) < half_h) & (np.abs(np.abs(X[:, 0]) - 0.55 * iod) < 0.35 * iod)
    z = X[behind_rims, 2].max() + 0.1 * iod  # rims just in front of the brow ridge and cheeks
    bridge = skin_v & (np.abs(X[:, 1] - eyes[1] - 0.15 * iod) < 0.1 * iod) & (np.abs(X[:, 0]) < 0.1 * iod)
    z_bridge = max(z, X[bridge, 2].max() + 0.05 * iod)  # the bridge rests on the nose
    pts, normals, axes = [], [], []
    n_rim = n // 3
    for e in (eye_r, eye_l):
        a = rng.uniform(0, 2 * np.pi, n_rim)
        pts.append(np.stack([e[0] + half_w * np.cos(a), e[1] + 0.05 * iod + half_h * np.sin(a), np.full(n_rim, z)], 1))
        axes.append(np.stack([-np.sin(a), np.cos(a), np.zeros(n_rim)], 1))
        normals.append(np.tile([0.0, 0.0, 1.0], (n_rim, 1)))
    m = n // 12  # bridge
    t = rng.uniform(-1, 1, m)
    pts.append(np.stack([t * (abs(eye_l[0] - eye_r[0]) / 2 - half_w), np.full(m, eyes[1] + 0.15 * iod),
                         z + (z_bridge - z) * (1 - t * t)], 1))
    axes.append(np.tile([1.0, 0, 0], (m, 1)))
    normals.append(np.tile([0.0, 0.0, 1.0], (m, 1)))
    back = X[skin_v & (np.abs(X[:, 1] - eyes[1]) < 0.3 * iod), 2].min()
    for side in (-1, 1):  # temples run back to the ears, outside the head
        m = n // 6
        t = rng.uniform(0, 1, m)
        temple = skin_v & (np.abs(X[:, 1] - eyes[1]) < 0.4 * iod) & (X[:, 2] > eyes[2] - 0.9 * iod)  # not the ears
        x_out = np.abs(X[temple, 0]).max() + 0.02 * iod
        x0 = side * (abs(eye_l[0] - eyes[0]) + half_w)
        x = x0 + (side * x_out - x0) * np.clip(t * 4, 0, 1)
        pts.append(np.stack([x, np.full(m, eyes[1] + 0.1 * iod), z + (back + 0.45 * (z - back) - z) * t], 1))
        axes.append(np.tile([0.0, 0, 1.0], (m, 1)))
        normals.append(np.tile([side * 1.0, 0, 0], (m, 1)))
    pts, axes, normals = np.concatenate(pts), np.concatenate(axes), np.concatenate(normals)
    anchor = int(np.argmin(np.where(skin_v, np.linalg.norm(X - np.array([0, eyes[1], z]), axis=1), np.inf)))
    rigid(builder, "glasses", X, anchor, pts, normals, axes, [0.05 * iod, 0.02 * iod, 0.02 * iod], look.glasses)
    if look.lens_tint > 0:
        m = n // 2
        lens = []
        for e in (eye_r, eye_l):
            a, r = rng.uniform(0, 2 * np.pi, m), np.sqrt(rng.uniform(0, 0.9, m))
            lens.append(np.stack([e[0] + half_w * r * np.cos(a), e[1] + 0.05 * iod + half_h * r * np.sin(a),
                                  np.full(m, z - 0.005 * iod)], 1))
        lens = np.concatenate(lens)
        s = math.sqrt(np.pi * half_w * half_h / m)
        rigid(builder, "lenses", X, anchor, lens, np.tile([0.0, 0, 1], (len(lens), 1)),
               np.tile([1.0, 0, 0], (len(lens), 1)), [0.9 * s, 0.9 * s, 0.1 * s], look.glasses * 0.3 + 0.05,
               opacity=look.lens_tint)
