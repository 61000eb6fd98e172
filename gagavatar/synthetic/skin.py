"""Skin: flat discs on the surface of the face, scalp and neck, coloured by a textured skin
tone with cheeks, eye sockets, freckles, lips, brows and nostrils, and a shirt below the neck."""
from __future__ import annotations

import math

import numpy as np

from gagavatar.synthetic.gaussian_builder import GaussianBuilder
from gagavatar.synthetic.hair import scalp
from gagavatar.synthetic.look import Appearance
from gagavatar.synthetic.neutral_head import NeutralHead
from gagavatar.synthetic.noise import Noise3D
from gagavatar.synthetic.shapes import UP, distance_to_polyline, frame_quaternions, inside_polygon


def add_skin(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """Skin, lips, brows and neck: flat discs on the surface (half of ``n_gaussians``),
    their colour from ``_skin_albedo``; where a shirt covers the neck, a slightly
    thicker shell above the skin so it reads as cloth."""
    faces = nh.faces
    n_skin = int(n_gaussians * 0.5)
    skin = nh.sample(rng, n_skin, ~nh.face_is_eye)
    spacing = math.sqrt(nh.total_area / max(n_skin, 1))
    p, nrm = skin.p, skin.n
    tone, shirt = _skin_albedo(nh, look, p, nrm, noise)
    neck = p[:, 1] < nh.chin[1]  # below the chin: not part of the head box
    quats = frame_quaternions(nrm, np.cross(nrm, UP) + 1e-3)
    sc = np.array([spacing, spacing, 0.2 * spacing])
    idx = faces[skin.face]
    builder.add("skin", idx, skin.bary, quats, sc, tone, opacity=1.0,
                in_head_box=~neck, cullable=True, face=skin.face)
    if look.shirt is not None and shirt.any():
        builder.add("shirt", idx[shirt], skin.bary[shirt], quats[shirt], sc * np.array([1.2, 1.2, 1]),
                    tone[shirt] * 0.95, normal_offset=0.004, in_head_box=False, face=skin.face[shirt])


def _skin_albedo(nh: NeutralHead, look: Appearance, p: np.ndarray, nrm: np.ndarray, noise: Noise3D):
    """Albedo [N,3] of skin points p [N,3] with normals nrm [N,3], and the shirt's mask [N] bool.

    Textured skin tone, redder cheeks, darker eye sockets, freckles, lips, brows,
    nostrils; the shirt below a wavy line under the chin; the scalp tinted by the hair.
    """
    eye_r, eye_l, eyes, iod, mouth, nose_bottom, chin = nh.eye_r, nh.eye_l, nh.eyes, nh.iod, nh.mouth, nh.nose_bottom, nh.chin
    style = look.hair_style
    tone = look.skin * (1 + 0.06 * noise(p, 40.0)[:, None] + 0.03 * noise(p, 300.0, 2)[:, None])
    el, az = nh.elev_azim(p)
    # cheeks a little redder, around the eye sockets a little darker
    for side in (-1, 1):
        cheek = np.array([side * 0.55 * iod, (eyes[1] + mouth[1]) / 2, nose_bottom[2] - 0.25 * iod])
        tone = tone * (1 - 0.12 * np.exp(-((p - cheek) ** 2).sum(1) / (0.3 * iod) ** 2)[:, None]
                       * np.array([0, 0.6, 0.5]))
    for e in (eye_r, eye_l):
        tone = tone * (1 - 0.15 * np.exp(-((p - e) ** 2).sum(1) / (0.28 * iod) ** 2)[:, None])
    if look.freckles:
        spots = (noise(p, 900.0, 1) > 0.55) & (p[:, 2] > eyes[2] - 0.5 * iod) & (p[:, 1] > mouth[1])
        tone[spots] *= 1 - 0.25 * look.freckles * np.array([0.6, 0.9, 1.0])
    xy = p[:, :2]
    front_facing = nrm[:, 2] > 0.2
    lips = inside_polygon(xy, nh.lm("lips_outer")[:, :2]) & front_facing & (p[:, 2] > mouth[2] - 0.4 * iod)
    lip_mix = np.clip(0.85 + 0.15 * noise(p, 400.0, 1), 0, 1)[:, None]
    tone[lips] = (lip_mix * look.lips + (1 - lip_mix) * look.skin)[lips]
    for name in ("brow_right", "brow_left"):
        line = nh.lm(name)
        d = distance_to_polyline(xy, line[:, :2])
        brow = (d < 0.09 * iod) & front_facing & (np.abs(p[:, 2] - line[:, 2].mean()) < 0.5 * iod)
        tone[brow] = 0.25 * tone[brow] + 0.75 * look.brows
    for side in (-1, 1):  # nostrils: dark ovals either side of the nose's base
        nostril = nose_bottom + np.array([side * 0.13 * iod, 0.04 * iod, 0.0])
        near = (((p - nostril) / np.array([0.07, 0.04, 0.12])) ** 2).sum(1) < iod ** 2
        tone[near & (nrm[:, 1] < 0.2)] *= 0.4
    shirt_line = chin[1] - 1.2 * iod + 0.1 * iod * noise(p, 20.0, 1)
    shirt = (p[:, 1] < shirt_line) if look.shirt is not None else np.zeros(len(p), bool)
    if look.shirt is not None:
        tone[shirt] = look.shirt * (1 + 0.08 * noise(p[shirt], 60.0)[:, None])
    hairy = scalp(nh, look, p) if style not in ("bald",) else np.zeros(len(p), bool)
    if style == "bald":  # shaved sides and back
        tone[scalp(nh, look, p, -0.2) & (np.abs(az) > 1.2)] *= 0.85
    if style in ("buzz",):
        tone[hairy] = 0.45 * tone[hairy] + 0.55 * look.hair
    elif style != "bald":
        tone[hairy] = 0.3 * tone[hairy] + 0.7 * look.hair * 0.7  # scalp under the hair: never bright skin
    return tone, shirt
