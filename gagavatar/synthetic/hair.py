"""Hair: the hairline on the scalp (``scalp``), strands or curls in a shell above it, long
hair hanging below it, a bun on the crown, and beards over the lower face."""
from __future__ import annotations

import math

import numpy as np

from gagavatar.synthetic.gaussian_builder import GaussianBuilder, rigid
from gagavatar.synthetic.look import Appearance
from gagavatar.synthetic.neutral_head import NeutralHead, Surface
from gagavatar.synthetic.noise import Noise3D
from gagavatar.synthetic.shapes import distance_to_polyline, frame_quaternions, inside_polygon


def scalp(nh: NeutralHead, look: Appearance, p: np.ndarray, lower: float = 0.0) -> np.ndarray:
    """bool [N]: which points p [N,3] lie above the hairline (raised by ``-lower`` radians).

    The hairline is high on the forehead (``look.hairline``), above the ears at the
    sides, low at the nape; the temples down (ears, cheeks) stay bare.
    """
    el, az = nh.elev_azim(p)
    front = np.cos(az).clip(0, 1) ** 2            # 1 at the forehead, 0 at the sides and back
    back = (-np.cos(az)).clip(0, 1)
    line = look.hairline * front + 0.2 * (1 - front) - 0.75 * back - lower
    side_face = (np.abs(az) < 1.3) & (p[:, 1] < nh.eyes[1] + 0.6 * nh.iod)  # temples down: ears and cheeks stay bare
    return (el > line) & ~side_face


def add_hair(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """Hair strands in a shell above the scalp (30% of ``n_gaussians``, 36% curly): flat
    streaks flowing away from the crown, or round curls; long hair also hangs below the
    scalp (``_add_long_hair``), a bun sits on the crown (``_add_bun``)."""
    faces, style, thickness = nh.faces, look.hair_style, look.hair_thickness
    n_hair = int(n_gaussians * (0.3 if style != "curly" else 0.36))
    hair = nh.sample(rng, n_hair, ~nh.face_is_eye, keep=lambda q, n_: scalp(nh, look, q))
    h = rng.uniform(0.25, 1.0, len(hair.p)) * thickness
    flow = hair.p - nh.crown  # strands run away from the crown
    if style == "curly":
        flow = rng.normal(size=flow.shape)
    q = frame_quaternions(hair.n, flow)
    s = math.sqrt(nh.total_area * 0.4 / max(n_hair, 1))
    strand = noise(hair.p * np.array([1.0, 0.2, 1.0]), 600.0, 2)  # streaks along the flow
    shade_ = (0.7 + 0.3 * h / thickness)[:, None] * (1 + 0.25 * strand[:, None])
    col = look.hair * shade_
    sc = np.array([2.6, 0.7, 0.35]) * s if style != "curly" else np.array([1.3, 1.3, 1.0]) * s
    builder.add("hair", faces[hair.face], hair.bary, q, sc, col, normal_offset=h, cullable=True, face=hair.face)
    if style in ("long",):
        roots = nh.sample(rng, int(n_gaussians * 0.02), ~nh.face_is_eye,  # just above the hairline
                          keep=lambda q, n_: scalp(nh, look, q) & ~scalp(nh, look, q, lower=-0.35))
        _add_long_hair(builder, nh, roots, look, rng, int(n_gaussians * 0.12), s, noise)
    if style == "bun":
        _add_bun(builder, nh, look, rng, int(n_gaussians * 0.05), noise)


def _add_long_hair(builder, nh: NeutralHead, roots: Surface, look, rng, n, s, noise):
    """About ``n`` strands hanging from the sides and back of the scalp (``roots``) down past
    the ears, ``s`` wide; rigid with the crown."""
    X, anchor, centre = nh.X, nh.crown_vertex, nh.centre
    d = roots.p - centre
    keep = np.abs(np.arctan2(d[:, 0], d[:, 2])) > 1.0  # not over the face
    p0, n0, d = roots.p[keep], roots.n[keep], d[keep]
    if len(p0) == 0:
        return
    per = max(n // len(p0), 2)
    t = rng.random((len(p0), per))
    length = look.hair_length * (0.8 + 0.4 * rng.random((len(p0), 1)))
    out = n0 * (look.hair_thickness * (0.6 + 0.6 * rng.random((len(p0), 1))))
    radial = np.stack([d[:, 0], np.zeros(len(p0)), d[:, 2]], 1)
    radial /= np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
    # fall straight down from the root, flaring slightly outwards
    pts = (p0 + out)[:, None] + t[..., None] * length[..., None] * (np.array([0, -1.0, 0]) + 0.15 * radial[:, None])
    pts = pts.reshape(-1, 3)
    m = len(pts)
    col = look.hair * (0.75 + 0.25 * noise(pts * np.array([1.0, 0.1, 1.0]), 500.0, 2))[:, None]
    rigid(builder, "long_hair", X, anchor, pts, np.repeat(radial, per, 0), np.tile([0.0, -1.0, 0.0], (m, 1)),
           np.array([3.0, 0.8, 0.4]) * s, col, in_head_box=False)  # a head detector's box stops at the chin


def _add_bun(builder, nh: NeutralHead, look, rng, n, noise):
    """A ball of ``n`` hair Gaussians at the back of the crown, rigid with it."""
    X, anchor, centre, top = nh.X, nh.crown_vertex, nh.centre, nh.top
    c = centre + np.array([0.0, 0.85, -0.75]) * (top - centre[1])
    r = 0.35 * (top - centre[1])
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = c + d * r * rng.uniform(0.8, 1.0, (n, 1))
    col = look.hair * (0.75 + 0.3 * noise(pts, 500.0, 2))[:, None]
    s = math.sqrt(4 * math.pi * r * r / n)
    rigid(builder, "bun", X, anchor, pts, d, np.cross(d, [0, 1.0, 0]) + 1e-3, [1.5 * s, 0.8 * s, 0.4 * s], col)


def add_beard(builder: GaussianBuilder, nh: NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """Beard and moustache: short hairs pointing down over the lower face (up to 12% of
    ``n_gaussians``), patchy where ``look.beard`` is thin, never on the lips or the neck."""
    iod, chin, nose_bottom, centre = nh.iod, nh.chin, nh.nose_bottom, nh.centre
    lip_loop = np.vstack([nh.lm("lips_outer"), nh.lm("lips_outer")[:1]])[:, :2]

    def beard_region(q, n_):
        below_nose = q[:, 1] < nose_bottom[1] - 0.05 * iod
        under_chin = q[:, 1] > chin[1] - 0.25 * iod  # the beard stops where the neck starts
        front = (q[:, 2] > centre[2] + 0.15 * iod) & (n_[:, 2] > -0.2)  # in front of the ears
        off_lips = ~inside_polygon(q[:, :2], lip_loop) & (distance_to_polyline(q[:, :2], lip_loop) > 0.05 * iod)
        return below_nose & under_chin & front & off_lips

    patchy = lambda q, n_: beard_region(q, n_) & (noise(q, 150.0, 2) > 0.6 - 1.2 * look.beard)  # noqa: E731
    beard = nh.sample(rng, int(n_gaussians * 0.12), ~nh.face_is_eye, keep=patchy)
    s = math.sqrt(nh.total_area * 0.12 / max(len(beard.p), 1))
    h = rng.uniform(0.2, 1.0, len(beard.p)) * 0.006
    q = frame_quaternions(beard.n, np.tile(np.array([0.0, -1.0, 0.0]), (len(beard.p), 1)))
    col = look.hair * 0.8 * (1 + 0.3 * noise(beard.p, 700.0, 1)[:, None])
    builder.add("beard", nh.faces[beard.face], beard.bary, q, [1.6 * s, 0.6 * s, 0.4 * s], col, normal_offset=h,
                opacity=rng.uniform(0.5, 1.0, len(beard.p)), cullable=True, face=beard.face)
