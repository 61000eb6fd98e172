"""The parts of a head that speech is judged on: the lips, the upper face, the mouth's opening.

Found from the head model's own landmark embedding (the named groups of
``gagavatar.synthetic.landmark_groups``: MediaPipe's 478 points or the 68 classic ones), so
the same rule serves the bundled synthetic head and any FLAME-layout file given its
embedding (FLAME's ``mediapipe_landmark_embedding.npz``):

- lips: the vertices inside the outer lip contour, seen from the front (x-y, FLAME's face looks
  along +z), and in front of the head (no further behind the lip landmarks than half the
  mouth's width: the back of the head projects onto the same spot);
- upper face: the same rule for the region around the eyes and brows, reaching up above the
  brows by the eye-to-brow distance (lids, brows, lower forehead), eyeballs left out (they
  follow the eye pose, which speech motion does not drive);
- mouth opening: the mean distance between matching points of the inner upper and inner
  lower lip (landmarks, barycentric on the mesh).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gagavatar.errors import InputError
from gagavatar.synthetic.landmark_groups import LANDMARK_GROUPS, group_rows

EYE_JOINTS = (3, 4)  # FLAME's joints: global, neck, jaw, left eye, right eye


def _landmark_rows(head) -> tuple[str, dict[int, int]]:
    """(landmark format, landmark id -> row) of the head's embedding, or a one-line error."""
    fmt = head.landmark_format
    if head.n_landmarks == 0 or fmt not in LANDMARK_GROUPS:
        raise InputError(f"{head.name}: the lips and upper face are found from a landmark embedding "
                         f"({', '.join(LANDMARK_GROUPS)}), and this head has {fmt or 'none'}; give one "
                         f"(--landmark-embedding mediapipe_landmark_embedding.npz, FLAME's)")
    return fmt, {int(i): r for r, i in enumerate(head.landmark_indices.tolist())}


def _neutral_points(head, groups: list[str]) -> np.ndarray:
    """Landmarks [P, 3] of the named groups on the head's template mesh."""
    fmt, rows = _landmark_rows(head)
    with torch.no_grad():
        points = head.landmarks(head.v_template[None].float())[0].cpu().numpy()
    return np.concatenate([points[group_rows(fmt, rows, g)] for g in groups])


def _front_inside(head, outline: np.ndarray, around: np.ndarray) -> np.ndarray:
    """Vertex ids inside the polygon ``outline`` [K, 2] (x-y) and in front: z no further behind
    the ``around`` [P, 3] points than half their width."""
    from matplotlib.path import Path as Polygon

    vertices = head.v_template.float().cpu().numpy()
    inside = Polygon(outline).contains_points(vertices[:, :2])
    depth = around[:, 2].min() - 0.5 * np.ptp(around[:, 0])
    return np.nonzero(inside & (vertices[:, 2] >= depth))[0]


def lip_vertices(head) -> np.ndarray:
    """Vertex ids [L] of the lips (inside the outer lip contour, front of the head)."""
    outer = _neutral_points(head, ["lips_outer"])  # an ordered contour in both formats
    ids = _front_inside(head, outer[:, :2], outer)
    if len(ids) == 0:
        raise InputError(f"{head.name}: no vertex lies inside its lip landmarks; the landmark embedding does not "
                         f"fit this mesh")
    return ids


def upper_face_vertices(head) -> np.ndarray:
    """Vertex ids [U] of the upper face: eyes, lids, brows and the forehead just above them
    (the convex outline of those landmarks, seen from the front), eyeballs left out."""
    from scipy.spatial import ConvexHull

    eyes = _neutral_points(head, ["eye_right", "eye_left"])
    brows = _neutral_points(head, ["brow_right", "brow_left"])
    raised = brows + [0.0, brows[:, 1].mean() - eyes[:, 1].mean(), 0.0]
    points = np.concatenate([eyes, brows, raised])
    outline = points[ConvexHull(points[:, :2]).vertices, :2]
    ids = _front_inside(head, outline, points)
    if head.n_joints > max(EYE_JOINTS):
        on_eyes = head.lbs_weights[:, list(EYE_JOINTS)].sum(1).cpu().numpy() > 0.5
        ids = ids[~on_eyes[ids]]
    if len(ids) == 0:
        raise InputError(f"{head.name}: no vertex lies inside its eye and brow landmarks; the landmark embedding "
                         f"does not fit this mesh")
    return ids


def inner_lip_rows(head) -> tuple[list[int], list[int]]:
    """Landmark rows of the inner upper lip and the inner lower lip, matching point by point
    (the mouth's corners, which both share, left out)."""
    fmt, rows = _landmark_rows(head)
    groups = LANDMARK_GROUPS[fmt]
    pairs = [(rows[u], rows[lo]) for u, lo in zip(groups["lips_inner_upper"], groups["lips_inner_lower"])
             if u != lo and u in rows and lo in rows]
    if not pairs:
        raise InputError(f"{head.name}: its {fmt} landmark embedding has no inner lip points; give a full one")
    return [u for u, _ in pairs], [lo for _, lo in pairs]


def mouth_opening(landmarks: Tensor, rows: tuple[list[int], list[int]]) -> Tensor:
    """Mouth opening [F]: mean distance between matching inner upper / lower lip landmarks
    (``landmarks`` [F, L, 3], ``rows`` from ``inner_lip_rows``), in the landmarks' units."""
    upper, lower = rows
    return (landmarks[:, upper] - landmarks[:, lower]).norm(dim=-1).mean(-1)
