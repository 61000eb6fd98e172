"""Pictures of a head model: its triangles drawn as flat Gaussians (build-time tool).

``contact_sheet`` renders a grid of expressions x views, coloured by the part masks
stored with a synthetic head file; it draws ``docs/images/synthetic_head.png``
(``python -m gagavatar.tools.head_preview [PATH]``, or with the head itself by
``python -m gagavatar.tools.build_head``).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from gagavatar.geometry import matrix_to_quaternion
from gagavatar.head.model import DEFAULT_HEAD_PATH, vertex_normals
from gagavatar.synthetic.basis_names import EXPRESSIONS

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "synthetic_head.png"


def load_parts(path: str | Path = DEFAULT_HEAD_PATH) -> dict:
    """Part masks ({name: bool [V]}) stored with a synthetic head file (empty for FLAME files)."""
    with np.load(path) as z:
        return {k[5:]: z[k].astype(bool) for k in z.files if k.startswith("part_")}


PART_COLORS = {  # albedo for renders of the synthetic head, in painting order
    "skin": (0.86, 0.66, 0.55), "scalp": (0.30, 0.22, 0.16), "neck": (0.82, 0.62, 0.52),
    "ears": (0.84, 0.62, 0.52), "eyebrows": (0.28, 0.20, 0.14), "lips": (0.74, 0.38, 0.38),
    "eyeball_left": (0.95, 0.95, 0.93), "eyeball_right": (0.95, 0.95, 0.93),
    "iris_left": (0.25, 0.42, 0.55), "iris_right": (0.25, 0.42, 0.55),
    "pupil_left": (0.03, 0.03, 0.03), "pupil_right": (0.03, 0.03, 0.03),
}


def part_colors(parts: dict, n_vertices: int) -> np.ndarray:
    """Per-vertex albedo [V,3] from part masks (``PART_COLORS``); grey where no part is named."""
    colors = np.full((n_vertices, 3), 0.7)
    for name, rgb in PART_COLORS.items():
        if name in parts:
            colors[parts[name]] = rgb
    return colors


def surface_gaussians(vertices, faces, vertex_colors=None, light=(0.35, 0.45, 1.0), thickness=0.15):
    """Flat Gaussians covering a mesh, one per triangle, shaded by a directional light.

    vertices [B,V,3], faces [F,3], vertex_colors [V,3] or None (grey). Returns
    means [B,F,3], quats [B,F,4] (wxyz), scales [B,F,3], opacities [B,F], colors [B,F,3].
    """
    tri = vertices[:, faces]  # [B,F,3,3]
    centre = tri.mean(2)
    e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
    n = torch.linalg.cross(e1, e2, dim=-1)
    area = 0.5 * n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # in-plane axes and spreads from the triangle's covariance (uniform density: sum d d^T / 12)
    d = tri - centre[:, :, None]
    cov = (d[..., :, None] * d[..., None, :]).sum(2) / 12
    evals, evecs = torch.linalg.eigh(cov)  # ascending: the smallest is the normal direction
    R = evecs.flip(-1)  # columns: major, minor, normal
    R = torch.cat([R[..., :2], torch.linalg.cross(R[..., 0], R[..., 1], dim=-1)[..., None]], -1)
    spread = 2.0 * evals.flip(-1)[..., :2].clamp_min(0).sqrt()
    scales = torch.cat([spread, spread[..., 1:2] * thickness], -1)
    n = n / (2 * area)
    if vertex_colors is None:
        albedo = torch.full_like(tri[:, :, 0], 0.75)
    else:
        vc = torch.as_tensor(vertex_colors, dtype=vertices.dtype, device=vertices.device)
        albedo = vc[faces].mean(1)[None].expand(vertices.shape[0], -1, -1)
    # shade with interpolated vertex normals (smooth), oriented like the face
    sn = torch.nn.functional.normalize(vertex_normals(vertices, faces)[:, faces].mean(2), dim=-1)
    ld = torch.nn.functional.normalize(torch.tensor(light, dtype=vertices.dtype, device=vertices.device), dim=0)
    shade = 0.25 + 0.75 * (sn @ ld).clamp_min(0)[..., None]
    opac = torch.full(n.shape[:2], 0.95, dtype=vertices.dtype, device=vertices.device)
    return centre, matrix_to_quaternion(R), scales, opac, albedo * shade


CONTACT_EXPRESSIONS = ("neutral", "jaw open", "smile", "pucker + brows", "blink + look left")


def contact_expression_params(model, which: str):
    """(expression [1,E], jaw_pose [1,3], eye_pose [1,6]) of a ``CONTACT_EXPRESSIONS`` entry."""
    E = model.n_expression
    e, jaw, eye = torch.zeros(1, E), torch.zeros(1, 3), torch.zeros(1, 6)
    col = {name: i for i, name in enumerate(EXPRESSIONS)}
    if which == "jaw open":
        jaw[0, 0] = 0.35
        e[0, col["mouth_open"]] = 0.5
    elif which == "smile":
        e[0, col["smile"]] = 1.0
        e[0, col["cheek_puff"]] = 0.2
    elif which == "pucker + brows":
        e[0, col["pucker"]] = 1.0
        e[0, col["brow_raise"]] = 1.0
    elif which == "blink + look left":
        e[0, col["blink_left"]] = 1.0
        eye[0, 1] = eye[0, 4] = 0.45  # both eyes turn towards +x (the subject's left)
    elif which != "neutral":
        raise ValueError(f"unknown contact-sheet expression {which!r}; choose from {CONTACT_EXPRESSIONS}")
    return e, jaw, eye


def render_head(model, vertices, yaw_degrees, size=160, vertex_colors=None, focal=5.2, distance=1.0,
                faces=None):
    """Render vertices [B,V,3] (model units) as surface Gaussians from one yaw angle.

    ``faces`` [F,3] defaults to the model's triangles. Returns (image [B,3,H,W],
    alpha [B,1,H,W]); the camera looks at (0, -0.02, 0).
    """
    from gagavatar.geometry import Camera
    from gagavatar.render.rasterize import rasterize

    B = vertices.shape[0]
    a = math.radians(yaw_degrees)
    target = torch.tensor([[0.0, -0.02, 0.0]])
    eye = target + distance * torch.tensor([[math.sin(a), 0.05, math.cos(a)]])
    cam = Camera.look_at(eye, target, size=size, focal=focal)
    faces = model.faces if faces is None else faces
    means, quats, scales, opac, colors = surface_gaussians(vertices.float(), faces, vertex_colors)
    out = rasterize(means, quats, scales, opac, colors, cam.viewmat.expand(B, 4, 4), cam.K.expand(B, 3, 3),
                    size, size, background=torch.ones(3) * 0.0)
    return out.image.clamp(0, 1), out.alpha


def visible_faces(faces, parts: dict | None):
    """Triangles to draw: all but the fan closing the neck (sliver triangles seen edge-on)."""
    if not parts or "neck_cap" not in parts or not parts["neck_cap"].any():
        return faces
    cap = torch.as_tensor(np.nonzero(parts["neck_cap"])[0], device=faces.device)
    return faces[~torch.isin(faces, cap).any(1)]


def contact_sheet(model=None, path: str | Path | None = None, yaws=(-60, -30, 0, 30, 60),
                  expressions=CONTACT_EXPRESSIONS, size: int = 160, vertex_colors=None,
                  parts: dict | None = None) -> np.ndarray:
    """Grid of renders: rows = ``expressions``, columns = camera ``yaws`` (degrees).

    ``model`` defaults to ``HeadModel.default()``, coloured by its part masks;
    ``parts`` (``load_parts()``) colour another synthetic head. Returns the sheet as
    uint8 [H,W,3] and writes it as PNG when ``path`` is given.
    """
    from PIL import Image

    from gagavatar.head import HeadModel

    if model is None:
        model = HeadModel.default()
        parts = load_parts(DEFAULT_HEAD_PATH) if parts is None else parts
    if vertex_colors is None and parts:
        vertex_colors = part_colors(parts, model.n_vertices)
    faces = visible_faces(model.faces, parts)
    with torch.no_grad():
        params = [contact_expression_params(model, which) for which in expressions]
        e, jaw, eye = (torch.cat(p, 0) for p in zip(*params))
        verts = model(torch.zeros(1, model.n_shape), e, jaw_pose=jaw, eye_pose=eye)
        columns = [render_head(model, verts, yaw, size, vertex_colors, faces=faces)[0] for yaw in yaws]
    sheet = torch.cat([torch.cat(list(col), -2) for col in columns], -1)  # rows: expressions, columns: views
    sheet = (sheet.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).save(path)
    return sheet


if __name__ == "__main__":  # python -m gagavatar.tools.head_preview [PATH]: redraw the docs picture
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_IMAGE
    contact_sheet(path=out)
    print(f"wrote {out}")
