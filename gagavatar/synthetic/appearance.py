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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry import matrix_to_quaternion
from gagavatar.head.model import vertex_normals

# ---------------------------------------------------------------------------
# Landmark groups of the supported landmark formats (which points form the lips, eyes, ...)
# "right"/"left" are the subject's; FLAME's x axis points to the subject's left.

LANDMARK_GROUPS = {
    "ibug68": {
        "lips_outer": list(range(48, 60)),
        "lips_inner_upper": [60, 61, 62, 63, 64],
        "lips_inner_lower": [60, 67, 66, 65, 64],
        "eye_right": list(range(36, 42)), "eye_left": list(range(42, 48)),
        "lid_right": [36, 37, 38, 39], "lid_left": [42, 43, 44, 45],
        "brow_right": [17, 18, 19, 20, 21], "brow_left": [22, 23, 24, 25, 26],
        "nose_tip": [30], "nose_bottom": [33], "chin": [8], "nostrils": [31, 35],
    },
    "mediapipe": {
        "lips_outer": [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146],
        "lips_inner_upper": [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308],
        "lips_inner_lower": [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308],
        "eye_right": [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7],
        "eye_left": [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249],
        "lid_right": [33, 246, 161, 160, 159, 158, 157, 173, 133],
        "lid_left": [263, 466, 388, 387, 386, 385, 384, 398, 362],
        "brow_right": [70, 63, 105, 66, 107], "brow_left": [300, 293, 334, 296, 336],
        "nose_tip": [1], "nose_bottom": [2], "chin": [152], "nostrils": [98, 327],
    },
}
LANDMARK_GROUPS["ibug68+eyes"] = LANDMARK_GROUPS["ibug68"]

# sRGB colour palettes (0..255)
SKIN_TONES = [(255, 224, 196), (241, 198, 170), (230, 180, 146), (212, 160, 120), (188, 132, 96),
              (160, 108, 76), (128, 84, 58), (100, 66, 46), (76, 50, 36)]
HAIR_COLOURS = [(22, 18, 16), (40, 28, 22), (70, 46, 30), (105, 72, 46), (150, 112, 72), (205, 172, 112),
                (140, 62, 32), (150, 150, 150), (215, 212, 205)]
HAIR_WEIGHTS = [0.2, 0.2, 0.16, 0.12, 0.08, 0.08, 0.06, 0.06, 0.04]
IRIS_COLOURS = [(70, 42, 24), (45, 28, 18), (70, 105, 150), (80, 115, 70), (125, 95, 50), (115, 125, 135)]
HAIR_STYLES = ("short", "long", "curly", "bun", "cap", "bald", "buzz")
HAIR_STYLE_WEIGHTS = (0.28, 0.22, 0.1, 0.08, 0.12, 0.08, 0.12)


def _colour(c) -> np.ndarray:
    return np.asarray(c, np.float32) / 255.0


@dataclass
class Appearance:
    """The random look of one identity (colours in linear [0,1] RGB-ish sRGB values)."""

    skin: np.ndarray
    hair_style: str
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    brows: np.ndarray
    hairline: float          # forehead hairline height (elevation, radians above the eyes' direction)
    hair_thickness: float    # shell thickness (model units)
    hair_length: float       # how far long hair hangs below the ears (model units)
    cap: np.ndarray | None = None
    glasses: np.ndarray | None = None   # frame colour
    lens_tint: float = 0.0              # opacity of tinted lenses (0 = clear, not drawn)
    beard: float = 0.0                  # beard density (0 = none)
    shirt: np.ndarray | None = None
    freckles: float = 0.0
    texture_seed: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator, hair_styles=HAIR_STYLES, accessories: bool = True) -> "Appearance":
        """A random look; ``hair_styles`` limits the styles, ``accessories=False`` drops
        glasses, beards and shirts (plain heads, e.g. for geometric checks)."""
        t = rng.uniform(0, len(SKIN_TONES) - 1)
        i = int(t)
        skin = (1 - (t - i)) * _colour(SKIN_TONES[i]) + (t - i) * _colour(SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)])
        skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1).astype(np.float32)
        unknown = set(hair_styles) - set(HAIR_STYLES)
        if unknown or not hair_styles:
            raise ValueError(f"hair styles {sorted(unknown) or '()'}: choose from {HAIR_STYLES}")
        weights = np.array([w for h, w in zip(HAIR_STYLES, HAIR_STYLE_WEIGHTS) if h in hair_styles])
        style = str(rng.choice([h for h in HAIR_STYLES if h in hair_styles], p=weights / weights.sum()))
        if rng.random() < 0.05:  # dyed
            hair = np.clip(rng.uniform(0.1, 0.9, 3), 0, 1).astype(np.float32)
        else:
            hair = _colour(HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)]) * rng.uniform(0.85, 1.15)
        hair = np.clip(hair, 0, 1).astype(np.float32)
        lips = skin * np.array([0.88, 0.62, 0.62], np.float32) + np.array([0.06, 0.0, 0.0], np.float32)
        if rng.random() < 0.15:  # lipstick
            lips = np.array([rng.uniform(0.5, 0.85), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.3)], np.float32)
        brows = np.clip(np.minimum(hair, skin * 0.45) * rng.uniform(0.8, 1.1), 0, 1).astype(np.float32)
        glasses = None
        lens_tint = 0.0
        if rng.random() < 0.22:
            glasses = _colour([(15, 15, 15), (60, 35, 20), (150, 150, 155), (120, 20, 30), (25, 40, 90)][rng.integers(5)])
            lens_tint = float(rng.uniform(0.55, 0.85)) if rng.random() < 0.25 else 0.0
        beard = float(rng.uniform(0.5, 1.0)) if rng.random() < 0.18 else 0.0
        shirt = np.clip(rng.uniform(0.05, 0.9, 3), 0, 1).astype(np.float32) if rng.random() < 0.6 else None
        if not accessories:
            glasses, lens_tint, beard, shirt = None, 0.0, 0.0, None
        return cls(
            skin=skin, hair_style=style, hair=hair,
            iris=np.clip(_colour(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]) * rng.uniform(0.85, 1.15), 0, 1),
            lips=np.clip(lips, 0, 1).astype(np.float32), brows=brows,
            hairline=float(rng.uniform(0.55, 0.8)),
            hair_thickness=float(rng.uniform(0.006, 0.014) if style != "curly" else rng.uniform(0.02, 0.035)),
            hair_length=float(rng.uniform(0.06, 0.16)),
            cap=np.clip(rng.uniform(0.05, 0.95, 3), 0, 1).astype(np.float32) if style == "cap" else None,
            glasses=glasses, lens_tint=lens_tint,
            beard=beard, shirt=shirt,
            freckles=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.12 else 0.0,
            texture_seed=int(rng.integers(2**31)),
        )


# ---------------------------------------------------------------------------
# Geometry helpers

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


class Noise3D:
    """Smooth random field: trilinear value noise on a periodic lattice, summed over octaves."""

    def __init__(self, rng: np.random.Generator, size: int = 32):
        self.table = rng.uniform(-1, 1, (size, size, size)).astype(np.float32)
        self.size = size

    def __call__(self, p: np.ndarray, frequency: float, octaves: int = 3) -> np.ndarray:
        """Noise in about [-1, 1] at points p [N,3]; ``frequency`` = lattice cells per unit."""
        total, norm, amp = np.zeros(len(p), np.float32), 0.0, 1.0
        for o in range(octaves):
            q = p * frequency * 2 ** o + 7.31 * o
            i0 = np.floor(q).astype(np.int64)
            f = q - i0
            f = f * f * (3 - 2 * f)  # smoothstep: no lattice creases
            v = 0.0
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                        v = v + w * self.table[(i0[:, 0] + dx) % self.size, (i0[:, 1] + dy) % self.size,
                                               (i0[:, 2] + dz) % self.size]
            total += amp * v
            norm += amp
            amp *= 0.5
        return total / norm


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which 2D points [N,2] are inside the polygon [M,2]."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[None, :, 0], polygon[None, :, 1]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(1) % 2 == 1


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance from 2D points [N,2] to a polyline [M,2]."""
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - closest, axis=-1).min(1)


# ---------------------------------------------------------------------------
# Gaussians bound to the mesh

@dataclass
class GaussianHead:
    """Gaussians of one identity bound to a head model's mesh (N Gaussians, K anchors each).

    centre = sum_k anchor_w[k] * vertex[anchor_idx[k]] + normal_offset * normal + offset,
    where normal is the anchors' interpolated vertex normal (all in head-model units).
    """

    anchor_idx: Tensor      # [N,K] long
    anchor_w: Tensor        # [N,K]
    normal_offset: Tensor   # [N]
    offset: Tensor          # [N,3]
    quats: Tensor           # [N,4] (w, x, y, z)
    scales: Tensor          # [N,3] standard deviations, model units
    opacities: Tensor       # [N]
    albedo: Tensor          # [N,3]
    lit: Tensor             # [N] 1 = Lambertian shading, 0 = dim constant (inside the mouth)
    in_head_box: Tensor     # [N] bool: counts for the head bounding box (not neck/shirt)
    fixed_normal: Tensor    # [N,3] shading normal of rigid parts (zero: use the mesh's normal)
    cullable: Tensor        # [N] bool: on a closed surface, so hidden when it faces away from the camera
    face: Tensor            # [N] long: the mesh face a surface Gaussian sits on (-1: none)
    rest_area: Tensor       # [F] face areas of the identity's neutral mesh
    parts: dict = field(default_factory=dict)  # name -> slice, for inspection

    def __len__(self) -> int:
        return self.anchor_idx.shape[0]

    def _blend(self, V: int) -> Tensor:
        """The anchor weights as a sparse [N,V] matrix (one sparse product per frame batch)."""
        if getattr(self, "_blend_cache", None) is None or self._blend_cache.shape[1] != V:
            N, K = self.anchor_idx.shape
            rows = torch.arange(N).repeat_interleave(K)
            self._blend_cache = torch.sparse_coo_tensor(
                torch.stack([rows, self.anchor_idx.reshape(-1)]), self.anchor_w.reshape(-1).float(), (N, V),
                check_invariants=True).coalesce()
        return self._blend_cache

    def centres(self, vertices: Tensor, normals: Tensor) -> tuple[Tensor, Tensor]:
        """Centres [B,N,3] and shading normals [B,N,3] for vertices / vertex normals [B,V,3]."""
        B, V, _ = vertices.shape
        W = self._blend(V)
        both = torch.cat([vertices, normals], -1).float()  # [B,V,6]
        mixed = (W @ both.permute(1, 0, 2).reshape(V, B * 6)).reshape(-1, B, 6).permute(1, 0, 2)
        p, n = mixed[..., :3].to(vertices), mixed[..., 3:].to(vertices)
        n = torch.nn.functional.normalize(n, dim=-1, eps=1e-12)
        p = p + self.normal_offset.to(vertices)[None, :, None] * n + self.offset.to(vertices)[None]
        fixed = self.fixed_normal.to(vertices)[None]
        n = torch.where(fixed.abs().sum(-1, keepdim=True) > 0, fixed, n)
        return p, n

    def scales_at(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """Scales [B,N,3] for vertices [B,V,3]: surface Gaussians grow with their face's stretch.

        An open jaw stretches the skin around the mouth; without this, the Gaussians
        sampled on the neutral face would leave gaps there.
        """
        tri = vertices[:, faces]
        area = 0.5 * torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1).norm(dim=-1)
        ratio = (area / self.rest_area.to(area).clamp_min(1e-12)).sqrt().clamp(1.0, 3.0)  # [B,F]
        on_face = self.face >= 0
        grow = torch.ones(vertices.shape[0], len(self), dtype=vertices.dtype, device=vertices.device)
        grow[:, on_face] = ratio[:, self.face[on_face]]
        scales = self.scales.to(vertices)[None].repeat(vertices.shape[0], 1, 1)
        scales[..., :2] *= grow[..., None]  # tangent axes only: the surface stays thin
        return scales

    def facing(self, centres: Tensor, normals: Tensor, eye: Tensor, threshold: float = -0.6) -> Tensor:
        """[B,N] bool: False for cullable Gaussians turned away from cameras at ``eye`` [B,3].

        They are behind the surface they sit on; skipping them saves the rasterizer
        half its work without changing the picture.
        """
        view = torch.nn.functional.normalize(eye[:, None] - centres, dim=-1)
        return ~self.cullable.to(centres.device)[None] | ((normals * view).sum(-1) > threshold)


def shade(head: GaussianHead, normals: Tensor, light_dir: Tensor, light_colour: Tensor,
          ambient: Tensor) -> Tensor:
    """Colours [B,N,3]: albedo x (ambient + light x wrapped Lambert(n . l)).

    normals [B,N,3]; light_dir [B,3] unit vectors towards the light (world); light_colour,
    ambient [B,3]. Gaussians inside the mouth get a dim fraction of the ambient only.
    """
    ndl = (normals * light_dir[:, None]).sum(-1, keepdim=True)
    lambert = ((ndl + 0.25) / 1.25).clamp(min=0)  # soft "wrap" light: skin is not chalk
    lit = head.lit.to(normals)[None, :, None]
    light = lit * (ambient[:, None] + light_colour[:, None] * lambert) + (1 - lit) * 0.5 * ambient[:, None]
    return (head.albedo.to(normals)[None] * light).clamp(0, 1)


class _Builder:
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


@dataclass
class _Surface:
    """Points sampled on the neutral mesh: faces, barycentrics, positions and normals."""

    face: np.ndarray   # [N]
    bary: np.ndarray   # [N,3]
    p: np.ndarray      # [N,3]
    n: np.ndarray      # [N,3]


_UP = np.array([0.0, 1.0, 0.0])


@dataclass
class _NeutralHead:
    """One identity's neutral mesh and a frame on its face, in head-model units (float64).

    The Gaussian groups are placed with it: the inter-ocular distance ``iod`` is
    the unit of facial proportions, ``centre`` the skull's centre.
    """

    X: np.ndarray            # [V,3] vertices
    normals: np.ndarray      # [V,3] vertex normals
    faces: np.ndarray        # [F,3]
    areas: np.ndarray        # [F] triangle areas
    landmarks: np.ndarray    # [L,3] landmark positions
    fmt: str                 # the landmark format (a key of LANDMARK_GROUPS)
    landmark_rows: dict      # landmark id -> row of ``landmarks``
    lmk_face: np.ndarray     # [L] face of each landmark
    lmk_bary: np.ndarray     # [L,3] its barycentric coordinates
    weights: np.ndarray      # [V,J] skinning weights
    skin_v: np.ndarray       # [V] bool: not an eyeball
    face_is_eye: np.ndarray  # [F] bool: an eyeball's triangle
    total_area: float        # area of the skin (every triangle not on an eyeball)
    eye_r: np.ndarray        # [3] centre of the right eye's landmarks (the subject's right)
    eye_l: np.ndarray        # [3] centre of the left eye's landmarks
    eyes: np.ndarray         # [3] midpoint of the eyes
    iod: float               # inter-ocular distance
    chin: np.ndarray         # [3]
    nose_bottom: np.ndarray  # [3]
    mouth: np.ndarray        # [3] centre of the outer lip landmarks
    centre: np.ndarray       # [3] the skull's centre (on the symmetry plane, a little above the eyes)
    top: float               # height of the top of the head
    crown: np.ndarray        # [3] the point hair flows away from
    crown_vertex: int        # the skin vertex nearest the crown: anchor of long hair, a bun, a brim

    def group(self, name: str) -> list[int]:
        """Rows of the landmarks of group ``name`` (``LANDMARK_GROUPS``) that the head has."""
        return _group_rows(self.fmt, self.landmark_rows, name)

    def lm(self, name: str) -> np.ndarray:
        """Positions [k,3] of the landmarks of group ``name``."""
        return self.landmarks[self.group(name)]

    def sample(self, rng: np.random.Generator, n: int, face_mask: np.ndarray, keep=None) -> _Surface:
        """About ``n`` area-uniform points on the faces where ``face_mask`` [F] is True,
        then filtered by ``keep(p [N,3], n [N,3]) -> bool [N]``."""
        faces, areas, X, N_v = self.faces, self.areas, self.X, self.normals
        prob = areas * face_mask
        if prob.sum() <= 0 or n <= 0:
            return _Surface(np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
        # stratified: each face gets its expected count, rounded at random (fewer gaps than i.i.d.)
        counts = np.floor(prob / prob.sum() * n + rng.random(len(faces))).astype(np.int64)
        f = np.repeat(np.arange(len(faces)), counts)
        n = len(f)
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
        p = (X[faces[f]] * bary[..., None]).sum(1)
        nn = (N_v[faces[f]] * bary[..., None]).sum(1)
        nn /= np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-12)
        if keep is not None:
            k = keep(p, nn)
            f, bary, p, nn = f[k], bary[k], p[k], nn[k]
        return _Surface(f, bary, p, nn)

    def elev_azim(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Elevation and azimuth [N] (radians; azimuth 0 = the face's direction) of p [N,3] seen from ``centre``."""
        d = p - self.centre
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        return np.arcsin(np.clip(d[:, 1], -1, 1)), np.arctan2(d[:, 0], d[:, 2])


def _group_rows(fmt: str, rows: dict, name: str) -> list[int]:
    """Rows (``rows``: landmark id -> row) of the landmarks of group ``name`` in format ``fmt``."""
    got = [rows[i] for i in LANDMARK_GROUPS[fmt][name] if i in rows]
    if not got:
        raise ValueError(f"the head model's {fmt} landmark embedding has none of the {name} points")
    return got


def _neutral_head(head, shape: Tensor) -> _NeutralHead:
    """The neutral mesh of ``head`` with ``shape`` [S] and the frame on its face."""
    with torch.no_grad():
        X = head(shape[None].float())[0].double()
        N_v = vertex_normals(X[None], head.faces)[0].numpy()
        L = head.landmarks(X[None])[0].numpy()
    X = X.numpy()
    faces = head.faces.numpy()
    fmt = head.landmark_format
    if fmt not in LANDMARK_GROUPS:
        raise ValueError(f"synthetic appearance needs landmarks in one of {sorted(LANDMARK_GROUPS)}, "
                         f"the head model has {fmt!r}")
    rows = {int(i): r for r, i in enumerate(head.landmark_indices.tolist())}

    def lm(name: str) -> np.ndarray:
        return L[_group_rows(fmt, rows, name)]

    weights = head.lbs_weights.numpy()
    eyeball = weights[:, 3:5].max(1) > 0.5 if weights.shape[1] >= 5 else np.zeros(len(X), bool)
    face_is_eye = eyeball[faces].all(1)
    areas = 0.5 * np.linalg.norm(np.cross(X[faces[:, 1]] - X[faces[:, 0]], X[faces[:, 2]] - X[faces[:, 0]]), axis=1)
    # A frame on the face: eyes, mouth, chin, and the skull's centre.
    eye_r, eye_l = lm("eye_right").mean(0), lm("eye_left").mean(0)
    eyes = (eye_r + eye_l) / 2
    iod = np.linalg.norm(eye_l - eye_r)  # inter-ocular distance: the unit of facial proportions
    skin_v = ~eyeball
    above = skin_v & (X[:, 1] > eyes[1])
    centre = np.array([0.0, eyes[1] + 0.1 * iod, (X[above, 2].max() + X[above, 2].min()) / 2])
    top = X[above, 1].max()
    crown = centre + np.array([0.0, 1.0, -0.35]) * (top - centre[1])
    crown_vertex = int(np.argmin(np.where(skin_v, np.linalg.norm(X - crown, axis=1), np.inf)))
    return _NeutralHead(
        X=X, normals=N_v, faces=faces, areas=areas, landmarks=L, fmt=fmt, landmark_rows=rows,
        lmk_face=head.lmk_face_idx.numpy(), lmk_bary=head.lmk_b_coords.double().numpy(), weights=weights,
        skin_v=skin_v, face_is_eye=face_is_eye, total_area=(areas * ~face_is_eye).sum(),
        eye_r=eye_r, eye_l=eye_l, eyes=eyes, iod=iod, chin=lm("chin")[0], nose_bottom=lm("nose_bottom")[0],
        mouth=lm("lips_outer").mean(0), centre=centre, top=top, crown=crown, crown_vertex=crown_vertex)


def _scalp(nh: _NeutralHead, look: Appearance, p: np.ndarray, lower: float = 0.0) -> np.ndarray:
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


def build_gaussian_head(head, shape: Tensor, look: Appearance, rng: np.random.Generator,
                        n_gaussians: int = 16000) -> GaussianHead:
    """Bind ``look`` to the head model ``head`` with ``shape`` [S]: about ``n_gaussians`` Gaussians.

    ``head`` is a ``gagavatar.head.HeadModel`` (scale 1) with a landmark embedding in
    one of ``LANDMARK_GROUPS``' formats and FLAME's joints (root, neck, jaw, eyes).
    The groups are drawn in this order (``rng`` is used in this order too): skin and
    shirt, eyeballs, hair, cap, beard, lashes, mouth, glasses.
    """
    nh = _neutral_head(head, shape)
    noise = Noise3D(np.random.default_rng(look.texture_seed))
    builder = _Builder(K=12, rest_area=nh.areas)
    _add_skin(builder, nh, look, rng, noise, n_gaussians)
    _add_eyeballs(builder, nh, look, rng, noise, n_gaussians)
    if look.hair_style not in ("bald", "buzz"):
        _add_hair(builder, nh, look, rng, noise, n_gaussians)
    if look.hair_style == "cap":
        _add_cap(builder, nh, look, rng, noise, n_gaussians)
    if look.beard > 0:
        _add_beard(builder, nh, look, rng, noise, n_gaussians)
    _add_lashes(builder, nh, look, rng)
    _add_mouth(builder, nh, rng, n_gaussians)
    if look.glasses is not None:
        _add_glasses(builder, nh, look, rng, int(n_gaussians * 0.04))
    return builder.build()


def _add_skin(builder: _Builder, nh: _NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
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
    quats = frame_quaternions(nrm, np.cross(nrm, _UP) + 1e-3)
    sc = np.array([spacing, spacing, 0.2 * spacing])
    idx = faces[skin.face]
    builder.add("skin", idx, skin.bary, quats, sc, tone, opacity=1.0,
                in_head_box=~neck, cullable=True, face=skin.face)
    if look.shirt is not None and shirt.any():
        builder.add("shirt", idx[shirt], skin.bary[shirt], quats[shirt], sc * np.array([1.2, 1.2, 1]),
                    tone[shirt] * 0.95, normal_offset=0.004, in_head_box=False, face=skin.face[shirt])


def _skin_albedo(nh: _NeutralHead, look: Appearance, p: np.ndarray, nrm: np.ndarray, noise: Noise3D):
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
    lips = _inside_polygon(xy, nh.lm("lips_outer")[:, :2]) & front_facing & (p[:, 2] > mouth[2] - 0.4 * iod)
    lip_mix = np.clip(0.85 + 0.15 * noise(p, 400.0, 1), 0, 1)[:, None]
    tone[lips] = (lip_mix * look.lips + (1 - lip_mix) * look.skin)[lips]
    for name in ("brow_right", "brow_left"):
        line = nh.lm(name)
        d = _distance_to_polyline(xy, line[:, :2])
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
    hairy = _scalp(nh, look, p) if style not in ("bald",) else np.zeros(len(p), bool)
    if style == "bald":  # shaved sides and back
        tone[_scalp(nh, look, p, -0.2) & (np.abs(az) > 1.2)] *= 0.85
    if style in ("buzz",):
        tone[hairy] = 0.45 * tone[hairy] + 0.55 * look.hair
    elif style != "bald":
        tone[hairy] = 0.3 * tone[hairy] + 0.7 * look.hair * 0.7  # scalp under the hair: never bright skin
    return tone, shirt


def _add_eyeballs(builder: _Builder, nh: _NeutralHead, look: Appearance, rng, noise: Noise3D,
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
        builder.add(name, faces[eye.face], eye.bary, frame_quaternions(eye.n, np.cross(eye.n, _UP) + 1e-3),
                    [0.8 * s, 0.8 * s, 0.2 * s], col, cullable=True, face=eye.face)


def _add_hair(builder: _Builder, nh: _NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """Hair strands in a shell above the scalp (30% of ``n_gaussians``, 36% curly): flat
    streaks flowing away from the crown, or round curls; long hair also hangs below the
    scalp (``_add_long_hair``), a bun sits on the crown (``_add_bun``)."""
    faces, style, thickness = nh.faces, look.hair_style, look.hair_thickness
    n_hair = int(n_gaussians * (0.3 if style != "curly" else 0.36))
    hair = nh.sample(rng, n_hair, ~nh.face_is_eye, keep=lambda q, n_: _scalp(nh, look, q))
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
                          keep=lambda q, n_: _scalp(nh, look, q) & ~_scalp(nh, look, q, lower=-0.35))
        _add_long_hair(builder, nh, roots, look, rng, int(n_gaussians * 0.12), s, noise)
    if style == "bun":
        _add_bun(builder, nh, look, rng, int(n_gaussians * 0.05), noise)


def _add_cap(builder: _Builder, nh: _NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """A cap: a shell over the crown (thicker than hair, 18% of ``n_gaussians``) and a brim
    over the forehead (``_add_brim``)."""
    cap = nh.sample(rng, int(n_gaussians * 0.18), ~nh.face_is_eye, keep=lambda q, n_: _scalp(nh, look, q, lower=-0.15))
    s = math.sqrt(nh.total_area * 0.3 / max(len(cap.p), 1))
    col = look.cap * (1 + 0.05 * noise(cap.p, 80.0, 1)[:, None])
    builder.add("cap", nh.faces[cap.face], cap.bary, frame_quaternions(cap.n, np.cross(cap.n, _UP) + 1e-3),
                [1.0 * s, 1.0 * s, 0.3 * s], col, normal_offset=look.hair_thickness + 0.008, cullable=True,
                face=cap.face)
    _add_brim(builder, nh, look, rng, int(n_gaussians * 0.04))


def _add_beard(builder: _Builder, nh: _NeutralHead, look: Appearance, rng, noise: Noise3D, n_gaussians: int) -> None:
    """Beard and moustache: short hairs pointing down over the lower face (up to 12% of
    ``n_gaussians``), patchy where ``look.beard`` is thin, never on the lips or the neck."""
    iod, chin, nose_bottom, centre = nh.iod, nh.chin, nh.nose_bottom, nh.centre
    lip_loop = np.vstack([nh.lm("lips_outer"), nh.lm("lips_outer")[:1]])[:, :2]

    def beard_region(q, n_):
        below_nose = q[:, 1] < nose_bottom[1] - 0.05 * iod
        under_chin = q[:, 1] > chin[1] - 0.25 * iod  # the beard stops where the neck starts
        front = (q[:, 2] > centre[2] + 0.15 * iod) & (n_[:, 2] > -0.2)  # in front of the ears
        off_lips = ~_inside_polygon(q[:, :2], lip_loop) & (_distance_to_polyline(q[:, :2], lip_loop) > 0.05 * iod)
        return below_nose & under_chin & front & off_lips

    patchy = lambda q, n_: beard_region(q, n_) & (noise(q, 150.0, 2) > 0.6 - 1.2 * look.beard)  # noqa: E731
    beard = nh.sample(rng, int(n_gaussians * 0.12), ~nh.face_is_eye, keep=patchy)
    s = math.sqrt(nh.total_area * 0.12 / max(len(beard.p), 1))
    h = rng.uniform(0.2, 1.0, len(beard.p)) * 0.006
    q = frame_quaternions(beard.n, np.tile(np.array([0.0, -1.0, 0.0]), (len(beard.p), 1)))
    col = look.hair * 0.8 * (1 + 0.3 * noise(beard.p, 700.0, 1)[:, None])
    builder.add("beard", nh.faces[beard.face], beard.bary, q, [1.6 * s, 0.6 * s, 0.4 * s], col, normal_offset=h,
                opacity=rng.uniform(0.5, 1.0, len(beard.p)), cullable=True, face=beard.face)


def _add_lashes(builder: _Builder, nh: _NeutralHead, look: Appearance, rng) -> None:
    """40 lashes along each upper lid, anchored between lid landmarks so they follow blinks."""
    iod = nh.iod
    for name in ("lid_right", "lid_left"):
        rws = nh.group(name)
        m = 40
        seg = rng.integers(0, len(rws) - 1, m)
        t = rng.random(m)
        idx, w = _between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, np.array(rws)[seg], np.array(rws)[seg + 1], t)
        out = np.tile(np.array([0.0, 0.15, 1.0]), (m, 1))
        builder.add(f"lashes_{name[4:]}", idx, w, frame_quaternions(out, np.tile(_UP, (m, 1))),
                    [0.04 * iod, 0.012 * iod, 0.01 * iod], look.brows * 0.6, offset=np.array([0, 0.01, 0.02]) * iod,
                    opacity=0.6)


def _add_mouth(builder: _Builder, nh: _NeutralHead, rng, n_gaussians: int) -> None:
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
        idx_u, w_u = _between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, ua, ub, s_)
        idx_l, w_l = _between_landmarks(nh.lmk_face, nh.lmk_bary, nh.faces, la, lb, s_)
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


def _between_landmarks(lmk_face, lmk_bary, faces, a_rows, b_rows, t):
    """Anchors [M,6] / weights [M,6] of points (1-t) landmark_a + t landmark_b."""
    idx = np.concatenate([faces[lmk_face[a_rows]], faces[lmk_face[b_rows]]], 1)
    w = np.concatenate([lmk_bary[a_rows] * (1 - t)[:, None], lmk_bary[b_rows] * t[:, None]], 1)
    return idx, w


def _rigid(builder: _Builder, name: str, X: np.ndarray, anchor: int, points: np.ndarray, normals: np.ndarray,
           axes: np.ndarray, scales, albedo, opacity=1.0, in_head_box=True):
    """Gaussians that move rigidly with vertex ``anchor`` (long hair, a bun, a brim, glasses).

    The head is canonical (its pose lives in the camera), so their normals stay fixed.
    """
    n = len(points)
    builder.add(name, np.full((n, 1), anchor), np.ones((n, 1)), frame_quaternions(normals, axes), scales, albedo,
                opacity=opacity, offset=points - X[anchor], fixed_normal=normals, in_head_box=in_head_box)


def _add_long_hair(builder, nh: _NeutralHead, roots: _Surface, look, rng, n, s, noise):
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
    _rigid(builder, "long_hair", X, anchor, pts, np.repeat(radial, per, 0), np.tile([0.0, -1.0, 0.0], (m, 1)),
           np.array([3.0, 0.8, 0.4]) * s, col, in_head_box=False)  # a head detector's box stops at the chin


def _add_bun(builder, nh: _NeutralHead, look, rng, n, noise):
    """A ball of ``n`` hair Gaussians at the back of the crown, rigid with it."""
    X, anchor, centre, top = nh.X, nh.crown_vertex, nh.centre, nh.top
    c = centre + np.array([0.0, 0.85, -0.75]) * (top - centre[1])
    r = 0.35 * (top - centre[1])
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = c + d * r * rng.uniform(0.8, 1.0, (n, 1))
    col = look.hair * (0.75 + 0.3 * noise(pts, 500.0, 2))[:, None]
    s = math.sqrt(4 * math.pi * r * r / n)
    _rigid(builder, "bun", X, anchor, pts, d, np.cross(d, [0, 1.0, 0]) + 1e-3, [1.5 * s, 0.8 * s, 0.4 * s], col)


def _add_brim(builder, nh: _NeutralHead, look, rng, n):
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
    _rigid(builder, "brim", X, anchor, pts, np.tile([0.0, 1.0, 0.15], (n, 1)), np.tile([1.0, 0, 0], (n, 1)),
           [1.0 * s, 1.0 * s, 0.25 * s], look.cap * 0.9)


def _add_glasses(builder, nh: _NeutralHead, look, rng, n):
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
    _rigid(builder, "glasses", X, anchor, pts, normals, axes, [0.05 * iod, 0.02 * iod, 0.02 * iod], look.glasses)
    if look.lens_tint > 0:
        m = n // 2
        lens = []
        for e in (eye_r, eye_l):
            a, r = rng.uniform(0, 2 * np.pi, m), np.sqrt(rng.uniform(0, 0.9, m))
            lens.append(np.stack([e[0] + half_w * r * np.cos(a), e[1] + 0.05 * iod + half_h * r * np.sin(a),
                                  np.full(m, z - 0.005 * iod)], 1))
        lens = np.concatenate(lens)
        s = math.sqrt(np.pi * half_w * half_h / m)
        _rigid(builder, "lenses", X, anchor, lens, np.tile([0.0, 0, 1], (len(lens), 1)),
               np.tile([1.0, 0, 0], (len(lens), 1)), [0.9 * s, 0.9 * s, 0.1 * s], look.glasses * 0.3 + 0.05,
               opacity=look.lens_tint)
