"""A synthetic head model in exactly FLAME's layout, made from a seed.

FLAME may not be redistributed, so the project ships its own head model with
the same structure: template, shape basis, expression basis, pose correctives,
5 joints (root, neck, jaw, left eye, right eye) with a joint regressor, linear
blend skinning weights and triangles; plus a landmark embedding that places
MediaPipe's face-mesh landmarks on the surface. ``HeadModel`` loads it like a
FLAME file.

How the surface is made (FLAME axes and metres: face looks +z, y up, x to the
subject's left):

- The skin is one grid of rays from a point inside the head: rows of constant
  polar angle (the top pole to the neck), columns around the vertical axis,
  both denser on the face. Each ray stops on the surface.
- The face is MediaPipe's canonical face model (468 landmarks, ~852 triangles,
  Apache-2.0, bundled in ``assets/head``), so the face looks human and every
  face-mesh landmark has its true place; its eye and mouth holes are filled
  smoothly. The rest (skull, jaw, chin, ears, neck) is a smooth union of
  ellipsoids and a cylinder; the two blend over a band at the face border.
- The lips are cut along the mouth line (the vertices of the cut are doubled),
  so the mouth opens with the jaw. Each eye opening is recessed so that the
  eyeball, a separate sphere turned by its eye joint, shows through.
- Bases are smooth displacement fields: shape (head size, width, face length,
  nose, jaw, cheeks, chin, ...; then random smooth symmetric fields with
  decreasing variance) and expression (mouth open, smile, pucker, brow raise,
  blink left/right, frown, ...; then small random fields on the face).

The steps, in ``make_synthetic_head``'s order: plan the ray grid -> trace the
canonical face -> blend it into the skull -> cut the lips -> place the eyes and
recess their openings -> skin mesh -> eyeball meshes -> label the vertices ->
rig (skinning, pose correctives, shape and expression bases, landmarks, parts).

The bundled default head (``assets/head/synthetic_head.npz``) is
``make_synthetic_head(seed=0)`` saved by ``python -m gagavatar.tools.build_head``,
which also redraws ``docs/images/synthetic_head.png`` (``gagavatar.tools.head_preview``).
This is a build-time tool: the runtime only loads the npz.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gagavatar.assets import bundled
from gagavatar.head.flame_io import save_head_npz
from gagavatar.head.model import vertex_normals
from gagavatar.synthetic.basis_names import EXPRESSIONS, SHAPES
from gagavatar.tracking.landmarks import canonical_face

ASSETS = bundled("head")
BUNDLED_PATH = ASSETS / "synthetic_head.npz"
BUNDLED_SEED = 0
BUNDLED_COLUMNS = (100, 50)  # shape, expression columns kept in the bundled file (size)

# MediaPipe face-mesh topology facts used to place landmarks.
LIP_INNER_UPPER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LIP_INNER_LOWER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_CORNERS_INNER = (78, 308)
RIGHT_IRIS, LEFT_IRIS = (468, 469, 470, 471, 472), (473, 474, 475, 476, 477)  # centre, +x, up, -x, down

RAY_ORIGIN = np.array([0.0, 0.0, -0.03])  # the point inside the head the skin grid is cast from
EYEBALL_RADIUS = 0.0125
IRIS_RADIUS = 0.006


# ---------------------------------------------------------------------------
# small geometry helpers


def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(p, centre, sigma):
    """Isotropic or per-axis Gaussian bump of points p [N,3] around centre [3]."""
    d = (p - centre) / np.asarray(sigma, dtype=np.float64)
    return np.exp(-0.5 * (d * d).sum(-1))


def _directions(phi, theta):
    """Unit ray directions for polar angle phi (from +y) and azimuth theta (0 = +z, pi/2 = +x)."""
    phi, theta = np.broadcast_arrays(phi, theta)
    s = np.sin(phi)
    return np.stack([s * np.sin(theta), np.cos(phi), s * np.cos(theta)], -1)


def _angles(points, origin=RAY_ORIGIN):
    d = points - origin
    r = np.linalg.norm(d, axis=-1)
    return np.arccos(np.clip(d[..., 1] / r, -1, 1)), np.arctan2(d[..., 0], d[..., 2])


def ray_triangle_hits(origins, dirs, tri, chunk=512):
    """Möller-Trumbore: for rays [N,3] (origins [N,3] or [3]) against triangles [F,3,3].

    Returns (t [N], face [N], bary [N,3]) of the FARTHEST hit with t > 0 (the outer
    surface for rays cast from inside), t = nan where a ray hits nothing.
    """
    origins = np.broadcast_to(origins, dirs.shape)
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    N = len(dirs)
    t_out, f_out, b_out = np.full(N, np.nan), np.full(N, -1), np.zeros((N, 3))
    for s in range(0, N, chunk):
        o, d = origins[s:s + chunk, None], dirs[s:s + chunk, None]
        p = np.cross(d, e2)
        det = (e1 * p).sum(-1)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = o - v0
        u = (tv * p).sum(-1) * inv
        q = np.cross(tv, e1)
        v = (d * q).sum(-1) * inv
        t = (e2 * q).sum(-1) * inv
        eps = 1e-9
        hit = ok & (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps) & (t > 1e-9)
        t = np.where(hit, t, -np.inf)
        best = t.argmax(1)
        rows = np.arange(len(best))
        tb = t[rows, best]
        good = np.isfinite(tb)
        t_out[s:s + chunk] = np.where(good, tb, np.nan)
        f_out[s:s + chunk] = np.where(good, best, -1)
        ub, vb = u[rows, best], v[rows, best]
        b_out[s:s + chunk] = np.where(good[:, None], np.stack([1 - ub - vb, ub, vb], -1), 0.0)
    return t_out, f_out, b_out


def load_canonical_face():
    """MediaPipe's canonical face in this project's frame: points [468,3] (metres), triangles [852,3],
    moved 1.5 cm forward so its ears would sit about 4 cm behind the origin."""
    points, faces = canonical_face()
    return points + np.array([0.0, 0.0, 0.015]), faces


def _boundary_loops(faces):
    """Closed boundary loops (vertex index lists) of a triangle mesh."""
    from collections import Counter

    edges = Counter()
    for a, b, c in faces:
        for e in ((a, b), (b, c), (c, a)):
            edges[tuple(sorted(e))] += 1
    nbrs = {}
    for (a, b), count in edges.items():
        if count == 1:
            nbrs.setdefault(a, []).append(b)
            nbrs.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in nbrs:
        if start in seen:
            continue
        loop, prev, u = [start], None, start
        seen.add(start)
        while True:
            nxt = [w for w in nbrs[u] if w != prev and (w not in seen or (w == start and len(loop) > 2))]
            if not nxt or nxt[0] == start:
                break
            prev, u = u, nxt[0]
            seen.add(u)
            loop.append(u)
        loops.append(loop)
    return loops


# ---------------------------------------------------------------------------
# the skull, jaw, ears and neck: a smooth union of simple shapes


def _sd_ellipsoid(p, centre, radii):
    q = (p - centre) / radii
    return (np.linalg.norm(q, axis=-1) - 1.0) * np.min(radii)


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _base_sdf(p):
    """Approximate signed distance (metres) of the head without its face detail."""
    cranium = _sd_ellipsoid(p, np.array([0.0, 0.032, -0.028]), np.array([0.076, 0.104, 0.100]))
    jaw = _sd_ellipsoid(p, np.array([0.0, -0.040, 0.012]), np.array([0.064, 0.060, 0.062]))
    chin = _sd_ellipsoid(p, np.array([0.0, -0.080, 0.045]), np.array([0.026, 0.018, 0.018]))
    radial = np.sqrt(p[..., 0] ** 2 + ((p[..., 2] + 0.03) / 1.05) ** 2)
    neck = np.maximum(radial - 0.056, p[..., 1] - 0.0)  # vertical cylinder, open downwards
    ears = [_sd_ellipsoid(p, np.array([sx * 0.074, 0.004, -0.047]), np.array([0.013, 0.031, 0.019]))
            for sx in (1.0, -1.0)]
    d = _smin(cranium, jaw, 0.03)
    d = _smin(d, chin, 0.02)
    d = _smin(d, neck, 0.03)
    for e in ears:
        d = _smin(d, e, 0.006)
    return d


def _ray_to_sdf(dirs, sdf, origin=RAY_ORIGIN, r_max=0.35, iters=50):
    """Distance along each ray [N,3] from origin to the zero level of sdf (bisection)."""
    lo, hi = np.zeros(len(dirs)), np.full(len(dirs), r_max)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        inside = sdf(origin + mid[:, None] * dirs) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _inpaint(values, known, iters=400):
    """Fill grid cells where ``known`` is False by harmonic interpolation (rows x wrapped columns)."""
    v = np.where(known, values, np.nanmean(values[known]) if known.any() else 0.0).astype(np.float64)
    for _ in range(iters):
        up = np.vstack([v[:1], v[:-1]])
        down = np.vstack([v[1:], v[-1:]])
        avg = 0.25 * (up + down + np.roll(v, 1, 1) + np.roll(v, -1, 1))
        v = np.where(known, values, avg)
    return v


def _fibonacci_sphere(n):
    k = np.arange(n) + 0.5
    y = 1 - 2 * k / n
    r = np.sqrt(1 - y * y)
    a = math.pi * (3 - math.sqrt(5)) * k
    return np.stack([r * np.cos(a), y, r * np.sin(a)], -1)


def _sphere_mesh(n):
    """Unit sphere with n vertices (Fibonacci points, convex-hull triangles, outward)."""
    from scipy.spatial import ConvexHull

    pts = _fibonacci_sphere(n)
    faces = ConvexHull(pts).simplices.astype(np.int64)
    n_f = np.cross(pts[faces[:, 1]] - pts[faces[:, 0]], pts[faces[:, 2]] - pts[faces[:, 0]])
    flip = (n_f * pts[faces].mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return pts, faces


# ---------------------------------------------------------------------------
# the skin grid


def _grid_size(n_skin: int, th_corner: float):
    """Rows R and (even) columns C with 1 + R*C + cut <= n_skin and the leftover minimal.

    The mouth cut doubles the grid vertices of one row whose azimuth lies between
    the mouth corners (|theta| < th_corner).
    """
    best = None
    for C in range(8, 400, 2):
        n_cut = int((np.abs(_column_angles(C)) < th_corner).sum())
        R = (n_skin - 1 - n_cut) // C
        if R < 4 or C > 3.2 * R or C < 1.6 * R or n_cut < 1:
            continue
        left = n_skin - (1 + R * C + n_cut)
        if best is None or left < best[0]:
            best = (left, R, C, n_cut)
    if best is None:
        raise ValueError(f"{n_skin} skin vertices are too few for a head grid; use n_vertices >= 200")
    return best[1], best[2], best[3]


def _row_angles(R, phi_max):
    """Polar angles of R rows, denser over the face (around 90 degrees)."""
    phi = np.linspace(0, phi_max, 4001)
    density = 0.55 + np.exp(-(((phi - 1.62) / 0.62) ** 2))
    cdf = np.concatenate([[0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(phi))])
    cdf /= cdf[-1]
    targets = (np.arange(R) + 1) / R
    return np.interp(targets, cdf, phi)


def _column_angles(C, front=0.55):
    """Azimuths of C columns (C even): -pi (back) ... 0 (front) ..., denser at the front."""
    t = -1 + 2 * np.arange(C) / C
    return math.pi * (t - front * np.sin(math.pi * t) / math.pi)


# ---------------------------------------------------------------------------
# the generator: the steps in order


def make_synthetic_head(seed: int = 0, n_vertices: int = 5023, n_shape: int = 300, n_expression: int = 100) -> dict:
    """Generate a head model in FLAME's layout.

    Returns a dict with FLAME's keys (``v_template`` [V,3], ``shapedirs``
    [V,3,n_shape+n_expression] (shape columns first), ``posedirs`` [V,3,36],
    ``J_regressor`` [5,V], ``kintree_table`` [2,5], ``weights`` [V,5], ``f`` [F,3]),
    ``n_shape_basis``, ``version`` and ``landmarks`` (a MediaPipe landmark embedding,
    as ``flame_io.read_landmark_embedding`` returns), plus ``parts``: boolean masks
    [V] naming regions (skin, eyeball_left, eyeball_right, lips, upper_lip,
    lower_lip, iris_left, iris_right, ...) for colouring synthetic renders.

    The geometry is the same for every seed; the seed draws the random part of
    the bases (shape columns after the named ones, expression columns after the
    named ones) and small identity variations of the template are left to the
    shape coefficients.
    """
    _check_sizes(n_vertices, n_shape, n_expression)
    rng = np.random.default_rng(seed)
    canon, canon_faces = load_canonical_face()
    rays = _plan_ray_grid(n_vertices, canon)
    outer, holes = _face_loops(canon_faces)
    r_face, w_face, hit = _trace_canonical_face(canon, canon_faces, outer, rays)
    hole_masks = _hole_masks(canon, holes, rays)
    r_fill = _blend_face_into_skull(rays, r_face, w_face, hit, hole_masks)
    i_m, slit_cols = _mouth_cut(rays)
    r_skin = _curl_lips(r_fill, i_m, slit_cols)
    eyes = _place_eyes(canon, holes, hole_masks, rays, r_fill)
    r_skin = _recess_eye_openings(r_skin, eyes, rays, r_fill)
    skin, index, lower_index = _skin_vertices(rays, r_skin, i_m, slit_cols)
    skin_faces = _skin_triangles(skin, index, lower_index, i_m, rays.neck_cap)
    v_template, f_all, eye_slices = _add_eyeball_meshes(skin, skin_faces, eyes, rays.n_eye)
    assert len(v_template) == n_vertices, (len(v_template), n_vertices)
    geo = _label_vertices(v_template, f_all, len(skin), eye_slices, eyes, canon, rays, r_fill, index, lower_index,
                          i_m, slit_cols)
    return _rig(geo, f_all, n_shape, n_expression, rng, seed)


def _check_sizes(n_vertices: int, n_shape: int, n_expression: int) -> None:
    """Raise ValueError when the head would be too small or lack the named basis columns."""
    if n_vertices < 200:
        raise ValueError(f"n_vertices must be >= 200 for a recognisable head, got {n_vertices}")
    if n_shape < len(SHAPES) or n_expression < len(EXPRESSIONS):
        raise ValueError(f"need at least {len(SHAPES)} shape and {len(EXPRESSIONS)} expression columns "
                         f"(the named ones), got {n_shape}, {n_expression}")


@dataclass
class _RayGrid:
    """The skin's rays from ``RAY_ORIGIN`` (R rows x C columns) and the vertex budget."""

    R: int                # rows, top pole to neck
    C: int                # columns around the vertical axis (even)
    n_slit: int           # grid vertices doubled by the mouth cut
    n_eye: int            # vertices of each eyeball
    neck_cap: int         # 1: one centre vertex closes the neck, 0: the neck is open
    phi_mouth: float      # polar angle of the mouth line
    theta_corner: float   # azimuth of the inner mouth corner
    phis: np.ndarray      # [R] polar angles of the rows
    thetas: np.ndarray    # [C] azimuths of the columns
    dirs: np.ndarray      # [R,C,3] unit ray directions


def _plan_ray_grid(n_vertices: int, canon: np.ndarray) -> _RayGrid:
    """Split n_vertices between skin and eyeballs and lay out the skin's rays.

    canon: the canonical face [468,3]. Each eyeball gets ~10.9% of the vertices, as in
    FLAME (546 of 5023), the rest is skin; the grid's (even) leftover goes to the eyeballs.
    """
    n_eye = max(24, int(round(0.1087 * n_vertices)))
    n_skin = n_vertices - 2 * n_eye
    phi_m, _ = _angles(0.5 * (canon[13] + canon[14]))  # the mouth line
    _, th_corner = _angles(canon[308])
    R, C, n_slit = _grid_size(n_skin, th_corner)
    leftover = n_skin - (1 + R * C + n_slit)
    neck_cap = leftover % 2  # an odd leftover closes the neck with one centre vertex (keeps the symmetry)
    n_eye += leftover // 2
    phi_max = math.radians(162)
    phis = _row_angles(R, phi_max)
    thetas = _column_angles(C)
    dirs = _directions(phis[:, None], thetas[None, :])  # [R,C,3]
    return _RayGrid(R, C, n_slit, n_eye, neck_cap, phi_m, th_corner, phis, thetas, dirs)


def _face_loops(canon_faces: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """The canonical face's outer border loop and its holes (eyes, mouth), as vertex index lists."""
    loops = _boundary_loops(canon_faces)
    outer = max(loops, key=len)
    holes = [lp for lp in loops if lp is not outer]
    return outer, holes


def _trace_canonical_face(canon, canon_faces, outer, rays: _RayGrid):
    """Where each ray meets the canonical face and how much the face counts there.

    Returns r_face [R,C] (distance along the ray, nan where the ray misses the face),
    w_face [R,C] (1 inside the face, 0 at its outer border: a 2 cm blend band; 0 where
    missed) and hit [R,C] bool.
    """
    R, C = rays.R, rays.C
    flat = rays.dirs.reshape(-1, 3)
    t_face, f_face, b_face = ray_triangle_hits(RAY_ORIGIN, flat, canon[canon_faces])
    hit = np.isfinite(t_face).reshape(R, C)
    border = _densify_loop(canon, outer)
    dist_border = np.min(np.linalg.norm(canon[:, None] - border[None], axis=-1), axis=1)
    w_vertex = _smoothstep(0.0, 0.02, dist_border)
    w_face = np.where(np.isfinite(t_face), (w_vertex[canon_faces[f_face]] * b_face).sum(-1), 0.0).reshape(R, C)
    r_face = np.where(hit, t_face.reshape(R, C), np.nan)
    return r_face, w_face, hit


def _hole_masks(canon, holes, rays: _RayGrid) -> dict:
    """{"mouth" | "eye_left" | "eye_right": bool [R,C]}: the rays through each hole of the face.

    Rays inside a hole polygon (in (azimuth, polar angle)) miss the canonical mesh.
    """
    from matplotlib.path import Path as PolyPath

    phi_grid, theta_grid = np.meshgrid(rays.phis, rays.thetas, indexing="ij")
    grid_pts = np.stack([theta_grid.ravel(), phi_grid.ravel()], -1)
    hole_masks = {}
    for lp in holes:
        ph, th = _angles(canon[lp])
        inside = PolyPath(np.stack([th, ph], -1)).contains_points(grid_pts).reshape(rays.R, rays.C)
        centre = canon[lp].mean(0)
        name = "mouth" if abs(centre[0]) < 0.01 else ("eye_left" if centre[0] > 0 else "eye_right")
        hole_masks[name] = inside
    return hole_masks


def _blend_face_into_skull(rays: _RayGrid, r_face, w_face, hit, hole_masks) -> np.ndarray:
    """The filled surface's distance along each ray, r_fill [R,C].

    The skull (``_base_sdf``) outside the face, the canonical face inside it (its holes
    filled by harmonic interpolation), blended by w_face [R,C]; then softened a little.
    """
    r_base = _ray_to_sdf(rays.dirs.reshape(-1, 3), _base_sdf).reshape(rays.R, rays.C)
    in_hole = np.zeros((rays.R, rays.C), bool)
    for m in hole_masks.values():
        in_hole |= m
    known = hit & ~in_hole
    inside_face = known | in_hole
    r_face = _inpaint(np.where(known, r_face, 0.0), known)
    w_face = np.where(in_hole, 1.0, np.where(hit, w_face, 0.0))
    w_face = np.where(inside_face, w_face, 0.0)
    r_fill = w_face * r_face + (1 - w_face) * r_base
    # soften the canonical model's facets a little
    r = r_fill.copy()
    for _ in range(2):
        avg = 0.25 * (np.vstack([r[:1], r[:-1]]) + np.vstack([r[1:], r[-1:]]) + np.roll(r, 1, 1) + np.roll(r, -1, 1))
        r = 0.7 * r + 0.3 * avg
    return r


def _mouth_cut(rays: _RayGrid) -> tuple[int, np.ndarray]:
    """The mouth cut: the grid row i_m of the mouth line and its columns between the inner corners."""
    i_m = int(np.argmin(np.abs(rays.phis - rays.phi_mouth)))
    slit_cols = np.nonzero(np.abs(rays.thetas) < rays.theta_corner)[0]  # interior columns of the cut
    assert len(slit_cols) == rays.n_slit
    return i_m, slit_cols


def _curl_lips(r_fill, i_m, slit_cols) -> np.ndarray:
    """r_skin [R,C]: r_fill with the lips curling in where they meet (along the cut)."""
    r_skin = r_fill.copy()
    r_skin[i_m, slit_cols] -= 0.0025
    for di in (-1, 1):
        r_skin[i_m + di, slit_cols] -= 0.0008
    return r_skin


@dataclass
class _Eye:
    mask: np.ndarray     # [R,C] bool: the rays through the eye opening
    centre: np.ndarray   # [3] the eyeball's centre


def _place_eyes(canon, holes, hole_masks, rays: _RayGrid, r_fill) -> dict:
    """{"eye_left", "eye_right": _Eye}: each eyeball's front 1 mm behind the filled opening's centre."""
    eyes = {}
    for name, sign in (("eye_left", 1.0), ("eye_right", -1.0)):
        mask = hole_masks.get(name, np.zeros((rays.R, rays.C), bool))
        lp = next(lp for lp in holes if np.sign(canon[lp].mean(0)[0]) == sign and abs(canon[lp].mean(0)[0]) > 0.01)
        ring = canon[lp]
        ctr_dir = ring.mean(0) - RAY_ORIGIN
        ctr_dir /= np.linalg.norm(ctr_dir)
        ph_c, th_c = _angles(ring.mean(0))
        # fill surface at the opening's centre: interpolate the filled radius at its angles
        r_c = _interp_grid(r_fill, rays.phis, rays.thetas, ph_c, th_c)
        apex = RAY_ORIGIN + r_c * ctr_dir - np.array([0.0, 0.0, 0.001])
        eyes[name] = _Eye(mask=mask, centre=apex - np.array([0.0, 0.0, EYEBALL_RADIUS]))
    return eyes


def _recess_eye_openings(r_skin, eyes: dict, rays: _RayGrid, r_fill) -> np.ndarray:
    """r_skin [R,C] with the skin in each eye opening pushed behind the eyeball's front."""
    o = RAY_ORIGIN
    for eye in eyes.values():
        mask, centre = eye.mask, eye.centre
        if mask.any():
            d = rays.dirs[mask]
            # where the ray crosses the eyeball's front, put the skin 3 mm inside it; elsewhere 4 mm back
            oc = o - centre
            bq = (d * oc).sum(-1)
            disc = bq * bq - ((oc * oc).sum() - EYEBALL_RADIUS ** 2)
            t_front = -bq + np.sqrt(np.maximum(disc, 0))
            recessed = np.where(disc > 0, t_front - 0.003, r_fill[mask] - 0.004)
            r_skin[mask] = np.minimum(r_skin[mask], recessed)
    return r_skin


def _skin_vertices(rays: _RayGrid, r_skin, i_m, slit_cols):
    """Skin vertices and the grid's vertex numbering.

    Returns skin [1 + R*C + n_slit (+1), 3] (the top pole, the grid row by row, the
    doubled lower-lip copies of the cut, the neck's centre if it is closed), index
    [R,C] (vertex of each grid point) and lower_index [R,C] (the same, but the cut's
    lower copies: the row of the cut as the triangles below it see it).
    """
    R, C, o = rays.R, rays.C, RAY_ORIGIN
    points = o + r_skin[..., None] * rays.dirs  # [R,C,3]
    top = o + _ray_to_sdf(np.array([[0.0, 1.0, 0.0]]), _base_sdf)[0] * np.array([0.0, 1.0, 0.0])
    index = 1 + np.arange(R * C).reshape(R, C)
    lower_index = index.copy()  # the row of the cut seen from below uses the doubled vertices
    n_grid = 1 + R * C
    lower_index[i_m, slit_cols] = n_grid + np.arange(len(slit_cols))
    skin = np.concatenate([top[None], points.reshape(-1, 3), points[i_m, slit_cols]])
    if rays.neck_cap:
        skin = np.concatenate([skin, points[R - 1].mean(0, keepdims=True)])
    return skin, index, lower_index


def _skin_triangles(skin, index, lower_index, i_m, neck_cap) -> np.ndarray:
    """Triangles [F,3] of the skin grid, oriented outward and left-right symmetric.

    A fan around the top pole, two triangles per grid quad (the quads under the
    mouth cut start from its lower copies), a fan closing the neck if neck_cap.
    """
    R, C = index.shape
    faces = []
    for j in range(C):  # fan around the top pole
        faces.append((0, index[0, j], index[0, (j + 1) % C]))
    for i in range(R - 1):
        below = lower_index if i == i_m else index
        for j in range(C):
            j1 = (j + 1) % C
            a, b, c_, d = index[i, j], index[i, j1], below[i + 1, j], below[i + 1, j1]
            if i == i_m:  # quads under the cut start from the lower copies
                a, b = lower_index[i, j], lower_index[i, j1]
            if j < C // 2:  # mirror the diagonals so the mesh is left-right symmetric
                faces += [(a, c_, d), (a, d, b)]
            else:
                faces += [(a, c_, b), (b, c_, d)]
    if neck_cap:
        faces += [(len(skin) - 1, index[R - 1, (j + 1) % C], index[R - 1, j]) for j in range(C)]
    faces = np.array(faces, dtype=np.int64)
    # orient outward (normals away from the ray origin)
    tri = skin[faces]
    n_f = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (n_f * (tri.mean(1) - RAY_ORIGIN)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _add_eyeball_meshes(skin, skin_faces, eyes: dict, n_eye: int):
    """Append the two eyeball spheres (left first, as FLAME's joint order) to the skin.

    Returns v_template [V,3], faces [F,3] and eye_slices {"eye_left", "eye_right": slice
    of their vertices}.
    """
    verts = [skin]
    all_faces = [skin_faces]
    eye_slices = {}
    start = len(skin)
    pts, f_e = _sphere_mesh(n_eye)
    for name, mirror in (("eye_left", False), ("eye_right", True)):
        # the right eyeball is the left one mirrored (x -> -x, triangles flipped to stay outward)
        p = pts * np.array([-1.0, 1.0, 1.0]) if mirror else pts
        verts.append(eyes[name].centre + EYEBALL_RADIUS * p)
        all_faces.append((f_e[:, [0, 2, 1]] if mirror else f_e) + start)
        eye_slices[name] = slice(start, start + n_eye)
        start += n_eye
    return np.concatenate(verts), np.concatenate(all_faces), eye_slices


@dataclass
class _Geometry:
    """The neutral head and how its vertices were made, for the rigging steps (V vertices)."""

    v: np.ndarray            # [V,3] template vertices
    n: np.ndarray            # [V,3] vertex normals
    skin: np.ndarray         # [V] bool: skin (not an eyeball)
    eye_slices: dict         # {"eye_left", "eye_right": slice of the eyeball's vertices}
    eyes: dict               # {"eye_left", "eye_right": _Eye}
    canon: np.ndarray        # [468,3] the canonical face (landmark positions)
    lip_side: np.ndarray     # [V] +1 above the mouth cut, -1 below, 0 elsewhere
    row: np.ndarray          # [V] grid row of each skin vertex (-1: top pole and eyeballs, R: neck cap)
    i_m: int                 # grid row of the mouth cut
    slit_cols: np.ndarray    # [n_slit] grid columns of the cut
    index: np.ndarray        # [R,C] vertex of each grid point
    lower_index: np.ndarray  # [R,C] the same with the cut's lower-lip copies
    phis: np.ndarray         # [R] polar angles of the grid rows
    thetas: np.ndarray       # [C] azimuths of the grid columns
    r_fill: np.ndarray       # [R,C] the filled surface's distance along each ray (eye openings closed)
    R: int                   # grid rows
    w: np.ndarray | None = None  # [V,5] skinning weights, once ``_skinning`` made them


def _label_vertices(v_template, faces, n_skin_v, eye_slices, eyes, canon, rays: _RayGrid, r_fill, index,
                    lower_index, i_m, slit_cols) -> _Geometry:
    """The per-vertex bookkeeping of the template: grid rows, skin mask, lip sides, normals."""
    R, C = rays.R, rays.C
    V = len(v_template)
    n_grid = 1 + R * C
    row_of = np.full(V, -1)  # grid row of every skin vertex (-1: top pole and eyeballs, R: neck cap)
    row_of[index.ravel()] = np.repeat(np.arange(R), C)
    cut = slice(n_grid, n_grid + rays.n_slit)  # the doubled (lower-lip) vertices of the cut
    row_of[cut] = i_m
    if rays.neck_cap:
        row_of[n_skin_v - 1] = R
    is_skin = np.zeros(V, bool)
    is_skin[:n_skin_v] = True
    lip_side = np.zeros(V)  # +1 above the cut, -1 below (near the mouth)
    lip_side[:n_skin_v] = np.where(row_of[:n_skin_v] < i_m, 1.0, np.where(row_of[:n_skin_v] > i_m, -1.0, 0.0))
    lip_side[index[i_m, slit_cols]] = 1.0
    lip_side[cut] = -1.0
    normals = vertex_normals(torch.from_numpy(v_template)[None], torch.from_numpy(faces))[0].numpy()
    return _Geometry(v=v_template, n=normals, skin=is_skin, eye_slices=eye_slices, eyes=eyes, canon=canon,
                     lip_side=lip_side, row=row_of, i_m=i_m, slit_cols=slit_cols, index=index,
                     lower_index=lower_index, phis=rays.phis, thetas=rays.thetas, r_fill=r_fill, R=R)


def _rig(geo: _Geometry, faces, n_shape: int, n_expression: int, rng: np.random.Generator, seed: int) -> dict:
    """Skinning, pose correctives, shape and expression bases, landmarks and parts of the
    template: ``make_synthetic_head``'s dict (the seed only names the version)."""
    weights, J_regressor = _skinning(geo)
    geo.w = weights
    posedirs = _pose_correctives(geo)
    shapedirs = np.concatenate([_shape_basis(geo, n_shape, rng), _expression_basis(geo, n_expression, rng)], -1)
    # drop the far tails of the smooth bumps (below a micrometre): exact zeros keep the file small
    shapedirs[np.abs(shapedirs) < 1e-6] = 0.0
    posedirs[np.abs(posedirs) < 1e-6] = 0.0
    landmarks = _landmark_embedding(geo, faces)
    parts = _parts(geo)
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": geo.v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": J_regressor,
        "kintree_table": kintree, "weights": weights, "f": faces, "n_shape_basis": n_shape,
        "version": f"synthetic-seed{seed}", "landmarks": landmarks, "parts": parts,
    }


def _densify_loop(points, loop, per_edge=6):
    """Points [len(loop)*per_edge, 3] spaced along the closed loop of points[loop]."""
    p = points[loop]
    q = np.roll(p, -1, 0)
    t = np.linspace(0, 1, per_edge, endpoint=False)[None, :, None]
    return (p[:, None] * (1 - t) + q[:, None] * t).reshape(-1, 3)


def _interp_grid(values, phis, thetas, phi, theta):
    """Bilinear interpolation of a [R,C] grid (wrapped columns) at one (phi, theta)."""
    i = np.clip(np.searchsorted(phis, phi) - 1, 0, len(phis) - 2)
    a = np.clip((phi - phis[i]) / (phis[i + 1] - phis[i]), 0, 1)
    C = len(thetas)
    j = int(np.searchsorted(thetas, theta) - 1) % C
    j1 = (j + 1) % C
    span = (thetas[j1] - thetas[j]) % (2 * math.pi)
    b = np.clip(((theta - thetas[j]) % (2 * math.pi)) / span, 0, 1)
    return ((1 - a) * ((1 - b) * values[i, j] + b * values[i, j1])
            + a * ((1 - b) * values[i + 1, j] + b * values[i + 1, j1]))


# ---------------------------------------------------------------------------
# joints and skinning


def _joint_cluster(v, candidates, target, k=12):
    """Indices of the k candidate vertices nearest to target and to its mirror image (x -> -x)."""
    out = []
    for t in (target, target * np.array([-1.0, 1.0, 1.0])):
        d = np.linalg.norm(v[candidates] - t, axis=-1)
        out.append(candidates[np.argsort(d)[:k]])
    return np.concatenate(out)


def _skinning(geo):
    """Linear blend skinning weights [V,5] and joint regressor [5,V] (root, neck, jaw, eye_l, eye_r)."""
    v, skin, canon = geo.v, geo.skin, geo.canon
    V = len(v)
    skin_idx = np.nonzero(skin)[0]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    i_m, slit_cols, index = geo.i_m, geo.slit_cols, geo.index

    # jaw: below a line from the mouth cut back to the jaw hinge, above the neck, in front of the ears
    cut = v[index[i_m, slit_cols]]
    y_mouth, x_corner = cut[:, 1].mean(), np.abs(v[index[i_m, [slit_cols[0] - 1, slit_cols[-1] + 1]], 0]).mean()
    z_front, y_hinge, z_hinge = canon[61, 2], -0.004, -0.032
    s = np.clip((z_front - z) / (z_front - z_hinge), 0, 1)
    y_line = y_mouth + (y_hinge - y_mouth) * s * s
    sigma = 0.0015 + 0.014 * _smoothstep(x_corner, x_corner + 0.035, np.abs(x))
    jaw_top = 1 - _smoothstep(-1, 1, (y - y_line) / sigma)
    # not the neck: below the jaw line only what lies in front of the neck (under the chin) follows the jaw
    below = _smoothstep(-0.055, -0.085, y)
    in_front = _smoothstep(0.058, 0.082, np.hypot(x, (z + 0.03) / 1.05))
    jaw_bottom = (1 - below * (1 - in_front)) * _smoothstep(-0.13, -0.105, y)
    jaw_back = _smoothstep(z_hinge - 0.025, z_hinge + 0.01, z)
    w_jaw = jaw_top * jaw_bottom * jaw_back
    # the lips: exact 0 above the cut and 1 below it between the corners
    near_mouth = skin & (np.abs(x) < x_corner) & (geo.row >= i_m - 2) & (geo.row <= i_m + 3)
    w_jaw = np.where(near_mouth & (geo.lip_side > 0), 0.0, w_jaw)
    w_jaw = np.where(near_mouth & (geo.lip_side < 0), 1.0, w_jaw)
    w_jaw[~skin] = 0.0

    head_part = _smoothstep(-0.15, -0.08, y)  # the neck joint carries the head, the root the neck base
    W = np.zeros((V, 5))
    W[:, 2] = w_jaw
    W[:, 1] = (1 - w_jaw) * head_part
    W[:, 0] = (1 - w_jaw) * (1 - head_part)
    for j, name in ((3, "eye_left"), (4, "eye_right")):
        sl = geo.eye_slices[name]
        W[sl] = 0.0
        W[sl, j] = 1.0

    # joint regressor: each joint is a mean of vertices around it (like FLAME's sparse regressor)
    J = np.zeros((5, V))
    bottom_row = index[geo.R - 1]
    J[0, bottom_row] = 1.0 / len(bottom_row)
    neck = _joint_cluster(v, skin_idx, np.array([0.057, -0.045, -0.035]))
    J[1, neck] = 1.0 / len(neck)
    jaw = _joint_cluster(v, skin_idx, np.array([0.070, y_hinge, z_hinge]))
    J[2, jaw] = 1.0 / len(jaw)
    for j, name in ((3, "eye_left"), (4, "eye_right")):
        sl = geo.eye_slices[name]
        J[j, sl] = 1.0 / (sl.stop - sl.start)
    return W, J


def _pose_correctives(geo):
    """posedirs [V,3,36]: small skin corrections driven by (R - I) of neck, jaw and eyes."""
    v, n, w = geo.v, geo.n, geo.w
    V = len(v)
    P = np.zeros((V, 3, 36))
    # neck (features 0..8): the skin of the neck bulges on the side it bends towards
    band = 4 * w[:, 1] * w[:, 0]  # where the head blends into the neck base
    radial = np.stack([v[:, 0], np.zeros(V), v[:, 2] + 0.03], -1)
    radial /= np.maximum(np.linalg.norm(radial, axis=-1, keepdims=True), 1e-9)
    front, side = radial[:, 2], radial[:, 0]
    nod = 0.006 * (band * front)[:, None] * n  # R_x: (2,1) = +sin, (1,2) = -sin
    P[:, :, 7] += nod
    P[:, :, 5] -= nod
    tilt = 0.006 * (band * side)[:, None] * n  # R_z: (1,0) = +sin, (0,1) = -sin
    P[:, :, 3] -= tilt
    P[:, :, 1] += tilt
    # jaw (features 9..17): opening hollows the cheeks and bunches the skin under the chin
    jaw_band = 4 * w[:, 2] * (1 - w[:, 2]) * geo.skin
    under = jaw_band * (v[:, 1] < -0.06)
    cheeks = jaw_band * (v[:, 1] >= -0.06)
    open_dir = (-0.008 * cheeks + 0.006 * under)[:, None] * n
    P[:, :, 16] += 0.5 * open_dir  # R_x of the jaw: (2,1) = +sin
    P[:, :, 14] -= 0.5 * open_dir  # (1,2) = -sin
    return P  # the eyes turn rigidly: no correctives


# ---------------------------------------------------------------------------
# shape and expression bases


def _eyeball_follow(geo, disp):
    """Eyeballs move rigidly with the skin around their socket (mean displacement of the rim)."""
    v = geo.v
    for name, eye in geo.eyes.items():
        sl = geo.eye_slices[name]
        d = np.linalg.norm(v - eye.centre, axis=-1)
        rim = geo.skin & (d < 0.024) & (d > 0.014)
        disp[sl] = disp[rim].mean(0) if rim.any() else 0.0
    return disp


def _random_field(geo, rng, amplitude, region=None, symmetric=True, bumps=4):
    """A smooth random displacement field [V,3] of a few Gaussian bumps on the skin."""
    v, n, skin = geo.v, geo.n, geo.skin
    cand = np.nonzero(skin if region is None else skin & (region > 0.5))[0]
    disp = np.zeros_like(v)
    for _ in range(bumps):
        c = v[rng.choice(cand)]
        sigma = rng.uniform(0.012, 0.045)
        direction = rng.normal(size=3) * 0.4
        along_normal = rng.normal()
        for mirror in ((False, True) if symmetric else (False,)):
            cc = c * np.array([-1.0, 1, 1]) if mirror else c
            dd = direction * np.array([-1.0, 1, 1]) if mirror else direction
            g = _gauss(v, cc, sigma)[:, None]
            disp += g * (along_normal * n + dd)
    if region is not None:
        disp *= region[:, None]
    disp[~skin] = 0.0
    rms = np.sqrt((disp[skin] ** 2).sum(-1).mean())
    return disp * (amplitude / max(rms, 1e-12))


def _shape_basis(geo, n_shape, rng):
    """[V,3,n_shape]: named identity variations, then random smooth symmetric fields."""
    v, n, canon, skin = geo.v, geo.n, geo.canon, geo.skin
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    V = len(v)
    zero = np.zeros(V)
    eye_l, eye_r = geo.eyes["eye_left"].centre, geo.eyes["eye_right"].centre
    mouth = 0.5 * (canon[13] + canon[14])
    lips = _gauss(v, mouth, (0.028, 0.012, 0.03))
    ears = _gauss(v, np.array([0.08, 0.004, -0.047]), 0.02) + _gauss(v, np.array([-0.08, 0.004, -0.047]), 0.02)
    brows = _gauss(v, canon[105], 0.014) + _gauss(v, canon[334], 0.014)
    nose = _gauss(v, canon[4], (0.012, 0.022, 0.02))
    neck = _smoothstep(-0.07, -0.11, y)
    fields = {
        "head_size": 0.03 * (v - np.array([0.0, 0.0, -0.02])),
        "head_width": np.stack([0.04 * x, zero, zero], -1),
        "face_length": np.stack([zero, 0.06 * np.clip(y - 0.02, -0.12, 0), zero], -1),
        "head_depth": np.stack([zero, zero, 0.05 * np.minimum(z + 0.01, 0)], -1),
        "nose_size": nose[:, None] * np.array([0, -0.001, 0.004]) + 0.08 * nose[:, None] * (v - canon[168]),
        "nose_width": np.stack([0.25 * x * _gauss(v, canon[4] - [0, 0.008, 0.01], 0.013), zero, zero], -1),
        "jaw_width": np.stack([0.08 * x * _smoothstep(0.0, -0.06, y) * (1 - neck), zero, zero], -1),
        "cheek_fullness": 0.004 * (_gauss(v, canon[50], 0.02) + _gauss(v, canon[280], 0.02))[:, None] * n,
        "chin_forward": _gauss(v, canon[152], 0.022)[:, None] * np.array([0, -0.001, 0.005]),
        "forehead_slope": _gauss(v, canon[151], (0.05, 0.03, 0.05))[:, None] * np.array([0, 0.001, 0.004]),
        "eye_distance": np.stack([0.003 * (_gauss(v, eye_l, 0.02) - _gauss(v, eye_r, 0.02)), zero, zero], -1),
        "lip_thickness": 0.002 * lips[:, None] * n,
        "ear_size": ears[:, None] * np.stack([0.004 * np.sign(x), 0.001 * np.ones(V), -0.002 * np.ones(V)], -1),
        "brow_ridge": 0.003 * brows[:, None] * n,
        "neck_thickness": 0.004 * neck[:, None] * np.stack([x, zero, z + 0.03], -1)
        / np.maximum(np.hypot(x, z + 0.03), 1e-6)[:, None],
    }
    cols = []
    for name in SHAPES:
        d = fields[name].copy()
        d[~skin] = 0.0
        cols.append(_eyeball_follow(geo, d))
    for k in range(len(SHAPES), n_shape):
        amp = 0.0025 * (k - len(SHAPES) + 1) ** -0.6
        d = _random_field(geo, rng, amp, symmetric=rng.random() < 0.8)
        cols.append(_eyeball_follow(geo, d))
    return np.stack(cols, -1)


def _blink(geo, eye_name):
    """Displacement [V,3] closing one eye: the upper lid comes down over the eyeball."""
    v, phis = geo.v, geo.phis
    r_fill, index, R = geo.r_fill, geo.index, geo.R
    mask = geo.eyes[eye_name].mask
    disp = np.zeros_like(v)
    for j in np.nonzero(mask.any(0))[0]:
        rows = np.nonzero(mask[:, j])[0]
        u, low = rows.min() - 1, rows.max() + 1  # upper and lower lid margins
        if u < 1 or low >= R:
            continue
        phi_close = phis[low] - 0.2 * (phis[low] - phis[u])
        phi_top = phis[u] + 0.25 * (phis[low] - phis[u])
        moving = list(range(u, low))
        for k, i in enumerate(moving):
            phi_t = phi_top + (phi_close - phi_top) * k / max(len(moving) - 1, 1) if len(moving) > 1 else phi_close
            r_t = np.interp(phi_t, phis, r_fill[:, j]) + 0.0015
            d = _directions(phi_t, geo.thetas[j])
            disp[index[i, j]] = RAY_ORIGIN + r_t * d - v[index[i, j]]
        for i, f in ((u - 1, 0.35), (u - 2, 0.1)):  # the skin above follows a little
            if i >= 0:
                disp[index[i, j]] = f * disp[index[u, j]]
        phi_l = phis[low] - 0.2 * (phis[low] - phis[u]) * 0.5
        r_l = np.interp(phi_l, phis, r_fill[:, j])
        disp[index[low, j]] = RAY_ORIGIN + r_l * _directions(phi_l, geo.thetas[j]) - v[index[low, j]]
    return disp


def _expression_basis(geo, n_expression, rng):
    """[V,3,n_expression]: named expressions (``EXPRESSIONS``), then small random face fields."""
    v, n, canon, skin, w = geo.v, geo.n, geo.canon, geo.skin, geo.w
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    lip_side = geo.lip_side
    mouth = 0.5 * (canon[13] + canon[14])
    g_mouth = _gauss(v, mouth, (0.02, 0.012, 0.025))
    g_lips = _gauss(v, mouth, (0.026, 0.010, 0.03))
    corner_l, corner_r = _gauss(v, canon[291], 0.013), _gauss(v, canon[61], 0.013)
    cheek_l, cheek_r = _gauss(v, canon[280], 0.016), _gauss(v, canon[50], 0.016)
    upper, lower = (lip_side > 0).astype(float), (lip_side < 0).astype(float)
    face_jaw = w[:, 2] * _smoothstep(-0.115, -0.095, y)
    y_brow = 0.5 * (canon[105, 1] + canon[334, 1])
    brow = np.exp(-(((y - y_brow) / 0.016) ** 2)) * np.exp(-((x / 0.055) ** 4)) * _smoothstep(0.0, 0.03, z)

    def smile(side_l, side_r):
        d = side_l * corner_l[:, None] * np.array([0.004, 0.005, -0.003])
        d = d + side_r * corner_r[:, None] * np.array([-0.004, 0.005, -0.003])
        d = d + (side_l * cheek_l + side_r * cheek_r)[:, None] * np.array([0.0, 0.002, 0.0015])
        return d

    fields = {
        "mouth_open": face_jaw[:, None] * np.array([0, -0.009, -0.003])
        + (upper * g_mouth)[:, None] * np.array([0, 0.0012, 0.0]),
        "smile": smile(1, 1) + g_mouth[:, None] * np.stack([0.08 * x, 0 * x, 0 * x], -1),
        "pucker": g_mouth[:, None] * np.stack([-0.35 * x, 0 * x, 0.006 + 0 * x], -1),
        "brow_raise": brow[:, None] * np.array([0, 0.005, 0.0005]),
        "blink_left": _blink(geo, "eye_left"),
        "blink_right": _blink(geo, "eye_right"),
        "frown": (_gauss(v, canon[336], 0.013)[:, None] * np.array([-0.002, -0.003, 0.001])
                  + _gauss(v, canon[107], 0.013)[:, None] * np.array([0.002, -0.003, 0.001])),
        "mouth_stretch": g_mouth[:, None] * np.stack([0.25 * x, -0.0008 * lip_side, -0.001 + 0 * x], -1),
        "lip_press": g_lips[:, None] * np.stack([0 * x, -0.0015 * lip_side, -0.002 + 0 * x], -1),
        "cheek_puff": 0.006 * (_gauss(v, canon[205], 0.02) + _gauss(v, canon[425], 0.02))[:, None] * n,
        "mouth_left": _gauss(v, mouth, (0.03, 0.02, 0.03))[:, None] * np.array([0.004, 0, 0]),
        "nose_wrinkle": (_gauss(v, canon[48], 0.01) + _gauss(v, canon[278], 0.01))[:, None] * np.array([0, 0.003, 0.001])
        + _gauss(v, canon[6], 0.01)[:, None] * np.array([0, 0, -0.001]),
        "upper_lip_raise": (upper * g_mouth)[:, None] * np.array([0, 0.003, 0.001]),
        "lower_lip_down": (lower * g_mouth)[:, None] * np.array([0, -0.003, 0.001]),
        "jaw_forward": face_jaw[:, None] * np.array([0, 0, 0.005]),
        "smile_left": smile(1, 0),
        "smile_right": smile(0, 1),
    }
    face = _smoothstep(-0.03, 0.01, z) * _smoothstep(-0.115, -0.09, y) * _smoothstep(0.1, 0.07, y)
    cols = []
    for name in EXPRESSIONS:
        d = fields[name].copy()
        d[~skin] = 0.0
        cols.append(d)  # eyeballs stay put: expressions move skin only
    for k in range(len(EXPRESSIONS), n_expression):
        amp = 0.0015 * (k - len(EXPRESSIONS) + 1) ** -0.5
        cols.append(_random_field(geo, rng, amp, region=face, symmetric=rng.random() < 0.5, bumps=3))
    return np.stack(cols, -1)


# ---------------------------------------------------------------------------
# landmarks and parts


def _faces_with(faces, a, b=None):
    has = (faces == a).any(1)
    if b is not None:
        has &= (faces == b).any(1)
    return np.nonzero(has)[0]


def _bary_on_edge(faces, f, a, b, t):
    """Barycentric row for the point (1-t) a + t b on face f (which contains a and b)."""
    row = np.zeros(3)
    row[list(faces[f]).index(a)] = 1 - t
    row[list(faces[f]).index(b)] += t
    return row


def _landmark_embedding(geo, faces):
    """MediaPipe face-mesh landmarks (all 478) as face index + barycentric coordinates."""
    v, canon, o = geo.v, geo.canon, RAY_ORIGIN
    skin_faces = np.nonzero(geo.skin[faces].all(1))[0]
    face_idx, bary, ids = [], [], []
    # the 468 mesh landmarks: cast from the ray origin through the canonical point
    dirs = canon - o
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    t, f, b = ray_triangle_hits(o, dirs, v[faces[skin_faces]])
    for i in range(len(canon)):
        if np.isfinite(t[i]):
            face_idx.append(skin_faces[f[i]])
            bary.append(b[i])
            ids.append(i)
    # inner lips: exactly on the cut, on the side of their lip; corners on the corner vertices
    i_m, cols, index, lower_index, thetas = geo.i_m, geo.slit_cols, geo.index, geo.lower_index, geo.thetas
    span = np.arange(cols[0] - 1, cols[-1] + 2)
    for lmks, rows, other_row in ((LIP_INNER_UPPER, index, i_m - 1), (LIP_INNER_LOWER, lower_index, i_m + 1)):
        for lm in lmks:
            _, th = _angles(canon[lm])
            k = int(np.clip(np.searchsorted(thetas[span], th) - 1, 0, len(span) - 2))
            j0, j1 = span[k], span[k + 1]
            tt = float(np.clip((th - thetas[j0]) / (thetas[j1] - thetas[j0]), 0, 1))
            a, bb = rows[i_m, j0], rows[i_m, j1]
            cand = [fi for fi in _faces_with(faces, a, bb) if (geo.row[faces[fi]] == other_row).any()]
            fi = cand[0]
            pos = ids.index(lm)
            face_idx[pos], bary[pos] = fi, _bary_on_edge(faces, fi, a, bb, tt)
    for lm, j in zip(MOUTH_CORNERS_INNER, (cols[0] - 1, cols[-1] + 1)):
        a = index[i_m, j]
        fi = _faces_with(faces, a)[0]
        pos = ids.index(lm)
        face_idx[pos], bary[pos] = fi, _bary_on_edge(faces, fi, a, a, 0.0)
    # irises on the eyeballs: centre, then +x, up, -x, down (MediaPipe's order)
    alpha = math.asin(IRIS_RADIUS / EYEBALL_RADIUS)
    offsets = [np.array([0, 0, 1.0])] + [np.array([sx * math.sin(alpha), sy * math.sin(alpha), math.cos(alpha)])
                                          for sx, sy in ((1, 0), (0, 1), (-1, 0), (0, -1))]
    for name, lmks in (("eye_right", RIGHT_IRIS), ("eye_left", LEFT_IRIS)):
        sl = geo.eye_slices[name]
        eye_faces = np.nonzero(((faces >= sl.start) & (faces < sl.stop)).all(1))[0]
        centre = geo.eyes[name].centre
        t, f, b = ray_triangle_hits(centre, np.array(offsets), v[faces[eye_faces]])
        for lm, fi, bi in zip(lmks, f, b):
            face_idx.append(eye_faces[fi])
            bary.append(bi)
            ids.append(lm)
    order = np.argsort(ids)
    return {"face_idx": np.array(face_idx)[order], "bary": np.array(bary)[order],
            "indices": np.array(ids)[order], "format": "mediapipe"}


LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
BROW_RIGHT = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
BROW_LEFT = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)


def _parts(geo):
    """Boolean vertex masks naming regions, for colouring renders of the synthetic head."""
    from matplotlib.path import Path as PolyPath

    v, canon, skin = geo.v, geo.canon, geo.skin
    V = len(v)
    parts = {"skin": skin.copy()}
    ph, th = _angles(v)
    pts = np.stack([th, ph], -1)

    def inside(loop):
        lph, lth = _angles(canon[list(loop)])
        return PolyPath(np.stack([lth, lph], -1)).contains_points(pts) & skin

    lips = inside(LIPS_OUTER)
    parts["lips"] = lips
    parts["upper_lip"] = lips & (geo.lip_side > 0)
    parts["lower_lip"] = lips & (geo.lip_side < 0)
    brows = np.zeros(V, bool)
    for loop in (BROW_RIGHT, BROW_LEFT):
        brows |= inside(loop)
    parts["eyebrows"] = brows
    cos_iris = math.cos(math.asin(IRIS_RADIUS / EYEBALL_RADIUS))
    cos_pupil = math.cos(math.asin(0.45 * IRIS_RADIUS / EYEBALL_RADIUS))
    for name, side in (("eye_left", "left"), ("eye_right", "right")):
        sl = geo.eye_slices[name]
        m = np.zeros(V, bool)
        m[sl] = True
        parts[f"eyeball_{side}"] = m
        front = np.zeros(V)
        front[sl] = (v[sl] - geo.eyes[name].centre)[:, 2] / EYEBALL_RADIUS
        parts[f"iris_{side}"] = m & (front > cos_iris)
        parts[f"pupil_{side}"] = m & (front > cos_pupil)
    parts["neck_cap"] = np.zeros(V, bool)  # the centre of the disk closing the neck, if there is one
    parts["neck_cap"][: len(geo.skin)] = geo.row == geo.R
    parts["ears"] = skin & (np.abs(v[:, 0]) > 0.068) & (np.abs(v[:, 1] - 0.004) < 0.035) & (np.abs(v[:, 2] + 0.047) < 0.025)
    parts["neck"] = skin & (v[:, 1] < -0.1) & (v[:, 2] < 0.03)
    # hair: the scalp above the forehead and behind the ears
    parts["scalp"] = skin & ((v[:, 1] > canon[10, 1] - 0.005) | ((v[:, 2] < -0.07) & (v[:, 1] > -0.04))) & ~parts["ears"]
    return parts


# ---------------------------------------------------------------------------
# the head model object and the bundled file


def synthetic_head_model(seed: int = 0, n_vertices: int = 5023, n_shape: int = 300, n_expression: int = 100):
    """``HeadModel`` of ``make_synthetic_head(seed, n_vertices, ...)`` (built in memory)."""
    from gagavatar.head import HeadModel

    arrays = make_synthetic_head(seed, n_vertices, n_shape, n_expression)
    return HeadModel(arrays, n_shape=n_shape, n_expression=n_expression,
                     landmarks=arrays["landmarks"], name=f"synthetic head (seed {seed}, {n_vertices} vertices)")


def save_synthetic_head(path: str | Path = BUNDLED_PATH, seed: int = BUNDLED_SEED, n_vertices: int = 5023,
                        columns: tuple[int, int] = BUNDLED_COLUMNS) -> Path:
    """Generate and write a synthetic head in the project's npz layout (FLAME's keys, float32).

    ``columns`` = (shape, expression) columns written; the bundled file keeps
    (100, 50) to stay small: ``HeadModel`` treats the missing columns of its 300 / 100
    coefficients as zero. The part masks are stored as ``part_<name>``.
    """
    arrays = make_synthetic_head(seed, n_vertices, columns[0], columns[1])
    save_head_npz(path, arrays, arrays["landmarks"])
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update({f"part_{k}": m for k, m in arrays["parts"].items()})
    np.savez_compressed(path, **data)
    return Path(path)


def main() -> None:
    """Regenerate the bundled head and its picture in docs/images."""
    from gagavatar.tools.head_preview import DOCS_IMAGE, contact_sheet

    out = save_synthetic_head()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    contact_sheet(path=DOCS_IMAGE)
    print(f"wrote {DOCS_IMAGE}")


if __name__ == "__main__":  # python -m gagavatar.tools.build_head
    main()
