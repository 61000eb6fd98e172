"""A cap: a shell over the crown, thicker than hair, and a brim sticking out over the
forehead, rigid with the crown."""
from __future__ import annotations

import math

import numpy as np

from gagavatar.synthetic.gaussian_builder import GaussianBuilder, rigid
from gagavatar.synthetic.hair import scalp
from gagavatar.synthetic.look import Appearance
from gagavatar.synthetic.neutral_head import NeutralHead
from gagavatar.synthetic.noise import Noise3D
from gagavatar.synthetic.shapes import UP, frame_quaternions


def add_cap(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """A cap: a shell over the crown (thicker than hair, 18% of ``n_gaussians``) and a brim
    over the forehead (``_add_brim``)."""
    cap = nh.sample(rng, int(n_gaussians * 0.18), ~nh.face_is_eye, keep=lambda q, n_: scalp(nh, look, q, lower=-0.15))
    s = math.sqrt(nh.total_area * 0.3 / max(len(cap.p), 1))
    col = look.cap * (1 + 0.05 * noise(cap.p, 80.0, 1)[:, None])
    builder.add("cap", nh.faces[cap.face], cap.bary, frame_quaternions(cap.n, np.cross(cap.n, UP) + 1e-3),
                [1.0 * s, 1.0 * s, 0.3 * s], col, normal_offset=look.hair_thickness + 0.008, cullable=True,
                face=cap.face)
    _add_brim(builder, nh, look, rng, int(n_gaussians * 0.04))


def _add_brim(builder, nh: NeutralHead, look, rng, n):
    """A cap's brim: a flat half-disc of ``n`` Gaussians sticking out over the forehead."""
    X, anchor, eyes, iod = nh.X, nh.crown_vertex, nh.eyes, nh.iod
    y = eyes[1] + 0.95 * iod
    front = X[(np.abs(X[:, 1] - y) < 0.1 * iod) & (np.abs(X[:, 0]) < 0.3 * iod), 2].max()
    ang = rng.uniform(-1.25, 1.25, n)
    rad = np.sqrt(rng.uniform(0, 1, n))
    width, depth = 1.05 * iod, 1.1 * iod
    z0 = front - 0.35 * iod
    pts = np.stack([width * np.sin(ang) * (0.55 + 0.45 * rad), np.full(n, y) + 0.1 * iod * rad,
                    z0 + depth * np.cos(ang) * (0.4 + 0.6 * rad)], 1)
    s = math.sqrt(width * depth * 1.5 / n)
    rigid(builder, "brim", X, anchor, pts, np.tile([0.0, 1.0, 0.15], (n, 1)), np.tile([1.0, 0, 0], (n, 1)),
           [1.0 * s, 1.0 * s, 0.25 * s], look.cap * 0.9)
