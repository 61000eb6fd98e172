"""Inside the mouth: a dark cavity, teeth and tongue between the inner lips, so an open mouth
shows a mouth and not the back of the head."""
from __future__ import annotations

import numpy as np

from gagavatar.synthetic.gaussian_builder import GaussianBuilder, between_landmarks
from gagavatar.synthetic.neutral_head import NeutralHead


def add_mouth(builder: GaussianBuilder, nh: NeutralHead, rng, n_gaussians: int) -> None:
    """Inside the mouth (3% of ``n_gaussians``): a dark cavity, teeth and tongue between the
    inner lips, anchored to both lips so an open mouth shows a mouth and not the back of
    the head. Nothing when the inner lip groups do not pair up."""
    iod = nh.iod
    upper, lower = nh.group("lips_inner_upper"), nh.group("lips_inner_lower")
    m = int(n_gaussians * 0.03)
    if len(upper) == len(lower) and len(upper) >= 2:
        u = rng.uniform(0.0, 1.0, m)
        along = u * (len(upper) - 1)
        seg = np.minimum(along.astype(int), len(upper) - 2)
        s_ = along - seg
        t = rng.random(m)
        ua, ub = np.array(upper)[seg], np.array(upper)[seg + 1]
        la, lb = np.array(lower)[seg], np.array(lower)[seg + 1]
        idx_u, w_u = between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, ua, ub, s_)
        idx_l, w_l = between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, la, lb, s_)
        idx = np.concatenate([idx_u, idx_l], 1)
        w = np.concatenate([w_u * (1 - t)[:, None], w_l * t[:, None]], 1)
        corner = np.clip(np.minimum(u, 1 - u) / 0.15, 0.25, 1.0)  # shallow and small at the corners: thin cheeks
        depth = np.where((t < 0.22) | (t > 0.85), 0.1, 0.2 + 0.15 * rng.random(m)) * iod * corner
        teeth = (t < 0.22) | ((t > 0.85) & (rng.random(m) < 0.7))
        col = np.where(teeth[:, None], np.array([0.9, 0.88, 0.8]), np.array([0.35, 0.08, 0.08]))
        col = np.where(((t > 0.55) & ~teeth)[:, None], np.array([0.6, 0.25, 0.25]), col)  # tongue
        quats = np.tile(np.array([1.0, 0, 0, 0], np.float32), (m, 1))
        builder.add("mouth", idx, w, quats, np.array([0.05, 0.035, 0.035]) * iod * corner[:, None], col,
                    offset=np.stack([np.zeros(m), np.zeros(m), -depth], 1), lit=np.where(teeth, 1.0, 0.0))
