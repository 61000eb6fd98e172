"""Eyes: sclera, iris and pupil on the eyeball meshes, which turn with ``eye_pose``, and
lashes along the upper lids, which follow blinks."""
from __future__ import annotations

import math

import numpy as np

from gagavatar.synthetic.gaussian_builder import GaussianBuilder, between_landmarks
from gagavatar.synthetic.look import Appearance
from gagavatar.synthetic.neutral_head import NeutralHead
from gagavatar.synthetic.noise import Noise3D
from gagavatar.synthetic.shapes import UP, frame_quaternions


def add_eyeballs(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng, noise: Noise3D,
                  n_gaussians: int) -> None:
    """Sclera, iris and pupil on each eyeball mesh (3% of ``n_gaussians`` each), coloured by
    the angle from the eye's forward axis; they turn with ``eye_pose``."""
    X, faces, weights, areas = nh.X, nh.faces, nh.weights, nh.areas
    for j, name in ((3, "eye_left"), (4, "eye_right")):  # FLAME's eye joints
        if weights.shape[1] <= j:
            continue
        verts = np.flatnonzero(weights[:, j] > 0.5)
        if len(verts) == 0:
            continue
        c = X[verts].mean(0)
        radius = np.linalg.norm(X[verts] - c, axis=1).mean()
        fmask = np.isin(faces, verts).all(1)
        fmask &= ((X[faces].mean(1) - c)[:, 2] > -0.2 * radius)  # the back of the eye is never seen
        eye = nh.sample(rng, int(n_gaussians * 0.03), fmask)
        d = (eye.p - c) / radius
        ang = np.arccos(np.clip(d[:, 2], -1, 1))
        iris_r = 0.55
        col = np.where(ang[:, None] < iris_r, look.iris * (0.7 + 0.5 * (ang[:, None] / iris_r)), np.array([0.82, 0.8, 0.77]))
        col = np.where(ang[:, None] < 0.24, np.array([0.03, 0.03, 0.03]), col)
        col = col * (1 + 0.1 * noise(eye.p, 500.0, 1)[:, None])
        area = (areas * fmask).sum()
        s = math.sqrt(area / max(len(eye.p), 1))
        builder.add(name, faces[eye.face], eye.bary, frame_quaternions(eye.n, np.cross(eye.n, UP) + 1e-3),
                    [0.8 * s, 0.8 * s, 0.2 * s], col, cullable=True, face=eye.face)


def add_lashes(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng) -> None:
    """40 lashes along each upper lid, anchored between lid landmarks so they follow blinks."""
    iod = nh.iod
    for name in ("lid_right", "lid_left"):
        rws = nh.group(name)
        m = 40
        seg = rng.integers(0, len(rws) - 1, m)
        t = rng.random(m)
        idx, w = between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, np.array(rws)[seg], np.array(rws)[seg + 1], t)
        out = np.tile(np.array([0.0, 0.15, 1.0]), (m, 1))
        builder.add(f"lashes_{name[4:]}", idx, w, frame_quaternions(out, np.tile(UP, (m, 1))),
                    [0.04 * iod, 0.012 * iod, 0.01 * iod], look.brows * 0.6, offset=np.array([0, 0.01, 0.02]) * iod,
                    opacity=0.6)
