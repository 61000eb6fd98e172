"""Synthetic people: a random appearance, drawn as coloured 3D Gaussians bound to a head model.

An identity is a shape of the head model plus an ``Appearance`` (skin tone and
texture, hair style and colour or a cap, eye colour, lips, optional glasses,
beard, shirt). ``build_gaussian_head`` turns the two into a ``GaussianHead``:
Gaussians whose centres are fixed combinations of mesh vertices (surface
points, points between landmarks) plus offsets, so they follow every
expression, jaw and eye pose of the head model:

* skin, lips, brows and neck on the surface (flat discs along the surface);
* eyeballs (sclera, iris, pupil) on the eyeball meshes, which turn with ``eye_pose``;
* hair as strands in shells above the scalp (long hair also hangs below it),
  a cap with a brim, a beard above the lower face;
* lashes along the upper lids; the mouth interior and teeth between the inner
  lips, so an open mouth shows a mouth and not the back of the head;
* glasses on a rigid frame in front of the eyes.

All positions are in head-model units (x1: metres for FLAME). Orientation and
albedo are fixed per identity (head pose lives in the camera; expressions
barely turn the surface); shading is per frame (``shade``: Lambertian, from
the per-frame normals and a light given in world coordinates).

Here the parts are put together (``build_gaussian_head``); each has its own module:
``look`` (``Appearance``), ``landmark_groups``, ``neutral_head``, ``shapes``, ``noise``,
``gaussian_head`` (``GaussianHead``, ``shade``), ``gaussian_builder``, and the groups
``skin``, ``eyes``, ``hair``, ``headwear``, ``mouth``, ``glasses``. Their public names are
importable from here too.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from gagavatar.synthetic.eyes import add_eyeballs, add_lashes
from gagavatar.synthetic.gaussian_builder import GaussianBuilder
from gagavatar.synthetic.gaussian_head import GaussianHead, shade
from gagavatar.synthetic.glasses import add_glasses
from gagavatar.synthetic.hair import add_beard, add_hair
from gagavatar.synthetic.headwear import add_cap
from gagavatar.synthetic.landmark_groups import LANDMARK_GROUPS
from gagavatar.synthetic.look import (HAIR_COLOURS, HAIR_STYLE_WEIGHTS, HAIR_STYLES, HAIR_WEIGHTS, IRIS_COLOURS,
                                      SKIN_TONES, Appearance)
from gagavatar.synthetic.mouth import add_mouth
from gagavatar.synthetic.neutral_head import neutral_head
from gagavatar.synthetic.noise import Noise3D
from gagavatar.synthetic.shapes import frame_quaternions
from gagavatar.synthetic.skin import add_skin

__all__ = [
    "build_gaussian_head", "GaussianHead", "shade", "Appearance", "LANDMARK_GROUPS", "HAIR_STYLES",
    "HAIR_STYLE_WEIGHTS", "HAIR_COLOURS", "HAIR_WEIGHTS", "IRIS_COLOURS", "SKIN_TONES", "Noise3D",
    "frame_quaternions",
]


def build_gaussian_head(head, shape: Tensor, look: Appearance, rng: np.random.Generator,
                        n_gaussians: int = 16000) -> GaussianHead:
    """Bind ``look`` to the head model ``head`` with ``shape`` [S]: about ``n_gaussians`` Gaussians.

    ``head`` is a ``gagavatar.head.HeadModel`` (scale 1) with a landmark embedding in
    one of ``LANDMARK_GROUPS``' formats and FLAME's joints (root, neck, jaw, eyes).
    The groups are drawn in this order (``rng`` is used in this order too): skin and
    shirt, eyeballs, hair, cap, beard, lashes, mouth, glasses.
    """
    nh = neutral_head(head, shape)
    noise = Noise3D(np.random.default_rng(look.texture_seed))
    builder = GaussianBuilder(K=12, rest_area=nh.areas)
    add_skin(builder, nh, look, rng, noise, n_gaussians)
    add_eyeballs(builder, nh, look, rng, noise, n_gaussians)
    if look.hair_style not in ("bald", "buzz"):
        add_hair(builder, nh, look, rng, noise, n_gaussians)
    if look.hair_style == "cap":
        add_cap(builder, nh, look, rng, noise, n_gaussians)
    if look.beard > 0:
        add_beard(builder, nh, look, rng, noise, n_gaussians)
    add_lashes(builder, nh, look, rng)
    add_mouth(builder, nh, rng, n_gaussians)
    if look.glasses is not None:
        add_glasses(builder, nh, look, rng, int(n_gaussians * 0.04))
    return builder.build()
