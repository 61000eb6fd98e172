"""One identity's neutral mesh and a frame on its face (eyes, mouth, chin, the skull's centre
and crown), in head-model units: what the Gaussian groups are placed with, and area-uniform
samples of its surface."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gagavatar.head.model import vertex_normals
from gagavatar.synthetic.landmark_groups import LANDMARK_GROUPS, group_rows


@dataclass
class Surface:
    """Points sampled on the neutral mesh: faces, barycentrics, positions and normals."""

    face: np.ndarray   # [N]
    bary: np.ndarray   # [N,3]
    p: np.ndarray      # [N,3]
    n: np.ndarray      # [N,3]


@dataclass
class NeutralHead:
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
        return group_rows(self.fmt, self.landmark_rows, name)

    def lm(self, name: str) -> np.ndarray:
        """Positions [k,3] of the landmarks of group ``name``."""
        return self.landmarks[self.group(name)]

    def sample(self, rng: np.random.Generator, n: int, face_mask: np.ndarray, keep=None) -> Surface:
        """About ``n`` area-uniform points on the faces where ``face_mask`` [F] is True,
        then filtered by ``keep(p [N,3], n [N,3]) -> bool [N]``."""
        faces, areas, X, N_v = self.faces, self.areas, self.X, self.normals
        prob = areas * face_mask
        if prob.sum() <= 0 or n <= 0:
            return Surface(np.zeros(0, int), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
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
        return Surface(f, bary, p, nn)

    def elev_azim(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Elevation and azimuth [N] (radians; azimuth 0 = the face's direction) of p [N,3] seen from ``centre``."""
        d = p - self.centre
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        return np.arcsin(np.clip(d[:, 1], -1, 1)), np.arctan2(d[:, 0], d[:, 2])


def neutral_head(head, shape: Tensor) -> NeutralHead:
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
        return L[group_rows(fmt, rows, name)]

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
    return NeutralHead(
        X=X, normals=N_v, faces=faces, areas=areas, landmarks=L, fmt=fmt, landmark_rows=rows,
        lmk_face=head.lmk_face_idx.numpy(), lmk_bary=head.lmk_b_coords.double().numpy(), weights=weights,
        skin_v=skin_v, face_is_eye=face_is_eye, total_area=(areas * ~face_is_eye).sum(),
        eye_r=eye_r, eye_l=eye_l, eyes=eyes, iod=iod, chin=lm("chin")[0], nose_bottom=lm("nose_bottom")[0],
        mouth=lm("lips_outer").mean(0), centre=centre, top=top, crown=crown, crown_vertex=crown_vertex)
