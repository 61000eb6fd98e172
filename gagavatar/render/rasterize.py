"""Differentiable 3D Gaussian splatting on CPU and GPU.

``rasterize(...)`` draws batches of 3D Gaussians that carry any number of
feature channels. Two backends compute the same thing:

* ``"torch"``: pure PyTorch (CPU and CUDA), tiled and memory bounded;
* ``"gsplat"``: ``gsplat.rasterization`` (CUDA only, ``pip install gsplat``).

``backend="auto"`` uses gsplat for CUDA tensors when it can be imported and the
torch backend otherwise.

How the torch backend works: project every Gaussian (EWA), bound it by an
opacity-aware box, list the (tile, Gaussian) pairs whose tile has a pixel the
Gaussian reaches (8x8 or 16x16 pixel tiles), sort them by tile then depth, and
composite groups of tiles as dense [tiles, Gaussians, pixels] blocks of
depth-sorted Gaussians, dropping tiles whose pixels are all saturated. Within
a tile, alpha logits are one matrix product: the exponent of a 2D Gaussian is
a quadratic in the pixel position, i.e. a dot product of the pixel's
(u^2, uv, v^2, u, v, 1) with six per-(tile, Gaussian) coefficients. The
backward pass replays the forward without storing it and applies hand-written
gradients block by block, so memory stays bounded by the block size.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry.rotation import quaternion_to_matrix
from gagavatar.render.conventions import ALPHA_MAX, ALPHA_MIN, EPS2D, EXTENT_MAX, T_MIN
from gagavatar.render.gsplat_backend import gsplat_available, rasterize_gsplat
from gagavatar.render.output import RasterOutput

BACKENDS = ("auto", "torch", "gsplat")


_LOG_ALPHA_MIN = math.log(ALPHA_MIN)
_LOG_ALPHA_MAX = math.log(ALPHA_MAX)
_LOG_ALPHA_FLOOR = -20.0
# Work sizes of the torch backend: pixels composited together and Gaussians
# per block; a block holds a few [pixels, Gaussians] float buffers.
_CHUNK_PIXELS = 16384
_BLOCK = 32


def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, features: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, background: Tensor | None = None,
              backend: str = "auto", near_plane: float = 0.01) -> RasterOutput:
    """Splat 3D Gaussians with feature vectors into images (standard 3DGS semantics).

    Args:
        means: [B, N, 3] centres in world coordinates.
        quats: [B, N, 4] rotations as quaternions (w, x, y, z); normalised here.
        scales: [B, N, 3] standard deviations along the rotated axes (linear, not log).
        opacities: [B, N] opacities, expected in [0, 1].
        features: [B, N, C] per-Gaussian features, any C (3 for RGB, 32 in the paper).
        viewmats: [B, 4, 4] world-to-camera transforms (OpenCV: x right, y down,
            z forward), see ``gagavatar.geometry.camera``. [1, 4, 4] is broadcast.
        Ks: [B, 3, 3] pinhole intrinsics in pixels (skew ignored). [1, 3, 3] is broadcast.
        width, height: image size in pixels.
        background: per-channel background [C] or [B, C]; None means zeros.
        backend: "torch", "gsplat" or "auto" (gsplat for CUDA tensors when importable).
        near_plane: Gaussians whose centre has camera z < near_plane are dropped.

    Returns:
        ``RasterOutput(image [B, C, H, W], alpha [B, 1, H, W], depth [B, 1, H, W])``,
        differentiable with respect to means, quats, scales, opacities and features.

    Semantics (those of the original 3DGS rasterizer and gsplat's "classic" mode):

    1. Camera space: t = R m + T from ``viewmats``. Gaussians with t_z < near_plane
       or opacity < 1/255 are dropped.
    2. 3D covariance Sigma = R(q) diag(s)^2 R(q)^T; 2D covariance by EWA,
       J W Sigma W^T J^T with the perspective Jacobian J at (t_x, t_y, t_z). For J
       only, t_x / t_z is clamped to [-(c_x / f_x + 0.15 W / f_x),
       (W - c_x) / f_x + 0.15 W / f_x] (1.3x the half field of view for a centred
       principal point), likewise y. Then 0.3 px^2 is added to both diagonal
       entries (the screen-space dilation).
    3. Projected centre mu = (f_x t_x / t_z + c_x, f_y t_y / t_z + c_y); pixel
       (i, j) (column, row) is sampled at its centre p = (i + 0.5, j + 0.5).
    4. alpha = min(0.99, opacity * exp(-0.5 d^T S^-1 d)), d = p - mu, S the 2D
       covariance; a Gaussian with alpha < 1/255 at a pixel is skipped there.
    5. Per pixel, Gaussians are composited front to back in order of t_z:
       w_i = alpha_i T_i with T_i = prod_{j<i} (1 - alpha_j) over the Gaussians
       not skipped. Compositing stops at the first Gaussian that would bring
       the transmittance below 1e-4; that Gaussian is not added.
    6. image = sum_i w_i f_i + T_final * background, alpha = 1 - T_final,
       depth = sum_i w_i t_z,i / alpha: the expected depth normalised by alpha
       (gsplat's "ED" mode), 0 where alpha = 0.

    A Gaussian only touches the pixels in its box |d_x| <= r_x, |d_y| <= r_y with
    r = ceil(e sqrt(diag S)), e = min(3.33, sqrt(2 ln(255 opacity))) (gsplat's
    opacity-aware bound), and the torch backend also skips the tiles where its
    alpha >= 1/255 ellipse has no pixel centre. Outside the box alpha < 1/255
    whenever opacity <= 1, so neither cut changes the result: it equals
    compositing every Gaussian at every pixel.

    gsplat (>= 1.5, which uses the same opacity-aware bound) clamps alpha at
    0.999 rather than 0.99 and stops at T <= 1e-4; the gsplat backend clamps
    opacities to 0.99 so both backends agree to float32 rounding for opacities
    <= 0.99 (and within 0.01 in alpha above it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    means, quats, scales, opacities, features, viewmats, Ks, background = _check_inputs(
        means, quats, scales, opacities, features, viewmats, Ks, width, height, background)
    if backend == "auto":
        backend = "gsplat" if means.is_cuda and gsplat_available() else "torch"
    if backend == "gsplat":
        return rasterize_gsplat(means, quats, scales, opacities, features, viewmats, Ks,
                                width, height, background, near_plane)
    return _rasterize_torch(means, quats, scales, opacities, features, viewmats, Ks,
                            width, height, background, near_plane)


def _check_inputs(means, quats, scales, opacities, features, viewmats, Ks, width, height, background):
    """Validate shapes and dtypes; broadcast cameras and background to the batch."""
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive ints, got {width!r} x {height!r}")
    if means.dim() != 3 or means.shape[-1] != 3:
        raise ValueError(f"means must be [B, N, 3], got {tuple(means.shape)}; add a batch "
                         "dimension with means[None] for a single scene")
    B, N = means.shape[:2]
    expected = {"quats": (quats, (B, N, 4)), "scales": (scales, (B, N, 3)),
                "opacities": (opacities, (B, N))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} to match means {list(means.shape)}, "
                             f"got {list(tensor.shape)}")
    if features.dim() != 3 or tuple(features.shape[:2]) != (B, N):
        raise ValueError(f"features must be [B, N, C] = [{B}, {N}, C], got {list(features.shape)}")
    if not means.is_floating_point():
        raise TypeError(f"means must be a floating-point tensor, got {means.dtype}")
    dtype, device = means.dtype, means.device
    for name, t in (("quats", quats), ("scales", scales), ("opacities", opacities), ("features", features)):
        if t.dtype != dtype or t.device != device:
            raise TypeError(f"{name} is {t.dtype} on {t.device} but means is {dtype} on {device}; "
                            "convert all Gaussian attributes to one dtype and device")

    def camera(name, tensor, shape):
        tensor = torch.as_tensor(tensor, dtype=dtype, device=device)
        tensor = tensor[None] if tensor.dim() == len(shape) else tensor
        if tensor.dim() != len(shape) + 1 or tuple(tensor.shape[1:]) != shape or tensor.shape[0] not in (1, B):
            raise ValueError(f"{name} must be [B, {', '.join(map(str, shape))}] with B = {B} (or 1), "
                             f"got {list(tensor.shape)}")
        return tensor.expand(B, *shape)

    viewmats = camera("viewmats", viewmats, (4, 4))
    Ks = camera("Ks", Ks, (3, 3))
    C = features.shape[-1]
    if background is not None:
        background = torch.as_tensor(background, dtype=dtype, device=device)
        if background.dim() == 1:
            background = background[None]
        if background.dim() != 2 or background.shape[-1] != C or background.shape[0] not in (1, B):
            raise ValueError(f"background must be [C] or [B, C] with C = {C} feature channels, "
                             f"got {list(background.shape)}")
        background = background.expand(B, C)
    return means, quats, scales, opacities, features, viewmats, Ks, background


# ---------------------------------------------------------------------------
# torch backend
# ---------------------------------------------------------------------------

class Projection(NamedTuple):
    """Screen-space Gaussians, all [B, N, ...]."""

    mean2d: Tensor   # [B, N, 2] pixel coordinates of the centres
    conic: Tensor    # [B, N, 3] inverse 2D covariance (a, b, c) = [[a, b], [b, c]]
    depth: Tensor    # [B, N] camera-space z
    radius: Tensor   # [B, N, 2] half-size of the bounding box in pixels (float, integral values)
    visible: Tensor  # [B, N] bool: in front of the near plane, opaque enough, box on screen


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                      viewmats: Tensor, Ks: Tensor, width: int, height: int,
                      near_plane: float = 0.01) -> Projection:
    """EWA projection of [B, N] Gaussians (steps 1-3 of ``rasterize``'s semantics)."""
    R, T = viewmats[:, :3, :3], viewmats[:, None, :3, 3]  # [B, 3, 3], [B, 1, 3]
    # one matrix product per camera, not one per Gaussian (thousands of 3x3 products are slow)
    cam = means @ R.transpose(1, 2) + T
    x, y, z = cam.unbind(-1)
    in_front = z >= near_plane
    z = torch.where(in_front, z, torch.ones_like(z))  # keeps culled Gaussians finite
    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]

    # Jacobian of the projection, at a position clamped to 1.3x the field of view
    lim_x = 0.15 * width / fx
    lim_y = 0.15 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -cx / fx - lim_x), (width - cx) / fx + lim_x)
    ty = z * torch.minimum(torch.maximum(y / z, -cy / fy - lim_y), (height - cy) / fy + lim_y)
    # covariance in camera space = M M^T with M = R_view R(q) diag(s); J M row by row
    M = torch.einsum("bij,bnjk->bnik", R, quaternion_to_matrix(quats)) * scales[..., None, :]  # [B, N, 3, 3]
    JM_x = (fx / z)[..., None] * M[..., 0, :] - (fx * tx / (z * z))[..., None] * M[..., 2, :]
    JM_y = (fy / z)[..., None] * M[..., 1, :] - (fy * ty / (z * z))[..., None] * M[..., 2, :]
    cov_xx = (JM_x * JM_x).sum(-1) + EPS2D
    cov_xy = (JM_x * JM_y).sum(-1)
    cov_yy = (JM_y * JM_y).sum(-1) + EPS2D
    det = cov_xx * cov_yy - cov_xy * cov_xy
    conic = torch.stack([cov_yy, -cov_xy, cov_xx], dim=-1) / det[..., None]
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        # opacity-aware box: outside it alpha < 1/255 (for opacity <= 1)
        extent = torch.sqrt(2 * torch.log((opacities / ALPHA_MIN).clamp_min(1.0))).clamp_max(EXTENT_MAX)
        radius = torch.ceil(extent[..., None] * torch.stack([cov_xx, cov_yy], -1).sqrt())
        size = mean2d.new_tensor([width, height])
        on_screen = ((mean2d + radius > 0) & (mean2d - radius < size)).all(-1)
        visible = (in_front & (opacities >= ALPHA_MIN) & (det > 0) & (radius > 0).any(-1) & on_screen
                   & torch.isfinite(mean2d).all(-1) & torch.isfinite(conic).all(-1))
    return Projection(mean2d, conic, cam[..., 2], radius, visible)


class _TilePlan(NamedTuple):
    """(tile, Gaussian) pairs sorted by tile, then depth."""

    pair_gaussian: Tensor  # [P] index into the flattened visible Gaussians
    pair_tile: Tensor      # [P] global tile index (batch * tiles per image + tile)
    tile_start: Tensor     # [B * tiles] first pair of each tile
    tile_count: Tensor     # [B * tiles] number of pairs of each tile
    tile: int              # tile side in pixels
    tiles_x: int
    tiles_y: int


def _choose_tile(radius: Tensor) -> int:
    """Tile side: small tiles waste less work on small splats, large ones make fewer pairs."""
    if radius.numel() == 0:
        return 16
    return 8 if float(radius.amax(dim=-1).median()) <= 8.0 else 16


def _tile_reached(params: Tensor, tx: Tensor, ty: Tensor, tile: int) -> Tensor:
    """[P] bool: does any pixel centre of tile (tx, ty) get alpha >= 1/255 from the Gaussian?

    params [P, 6] = (mean x, mean y, conic a, b, c, log opacity). alpha >= 1/255
    exactly where q = d^T S^-1 d <= 2 ln(255 opacity); the minimum of this convex
    q over the rectangle of pixel centres is 0 if the centre is inside, else on
    one of the four edges, where it has a closed form.
    """
    mx, my, a, b, c, log_opacity = params.unbind(-1)
    x0 = tx.to(mx.dtype) * tile + 0.5
    y0 = ty.to(mx.dtype) * tile + 0.5
    x1, y1 = x0 + (tile - 1), y0 + (tile - 1)

    def q(dx, dy):
        return dx * (a * dx + 2 * b * dy) + c * dy * dy

    def along_y(x):  # min over y in [y0, y1] at fixed x
        dx = x - mx
        return q(dx, torch.minimum(torch.maximum(my - b * dx / c, y0), y1) - my)

    def along_x(y):  # min over x in [x0, x1] at fixed y
        dy = y - my
        return q(torch.minimum(torch.maximum(mx - b * dy / a, x0), x1) - mx, dy)

    q_min = torch.minimum(torch.minimum(along_y(x0), along_y(x1)), torch.minimum(along_x(y0), along_x(y1)))
    inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
    # a little slack so rounding never drops a pair that contributes
    return inside | (q_min <= (2 * (log_opacity - _LOG_ALPHA_MIN)) * (1 + 1e-4) + 1e-4)


def _plan_tiles(params: Tensor, radius: Tensor, batch: Tensor, n_batch: int, width: int,
                height: int) -> _TilePlan:
    """List the tiles each Gaussian reaches.

    params [G, 6] (mean x, mean y, conic a, b, c, log opacity), radius [G, 2] and
    batch [G] of the visible Gaussians, which come in depth order.
    """
    tile = _choose_tile(radius)
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    device = params.device
    # gsplat's box: tiles floor((m - r) / tile) to ceil((m + r) / tile), the upper end excluded
    lo = torch.floor((params[:, :2] - radius) / tile).long()
    hi = torch.ceil((params[:, :2] + radius) / tile).long() - 1
    lo[:, 0].clamp_(0, tiles_x - 1)
    lo[:, 1].clamp_(0, tiles_y - 1)
    hi[:, 0].clamp_(0, tiles_x - 1)
    hi[:, 1].clamp_(0, tiles_y - 1)
    span = hi - lo + 1  # [G, 2] tiles of the box along x and y
    count = span[:, 0] * span[:, 1]

    # pairs in Gaussian (= depth) order, so a stable sort by tile keeps depth order
    pair_gaussian = torch.repeat_interleave(torch.arange(count.numel(), device=device), count)
    first = torch.cumsum(count, 0) - count
    local = torch.arange(pair_gaussian.numel(), device=device) - first.index_select(0, pair_gaussian)
    nx = span[:, 0].index_select(0, pair_gaussian)
    row = ((local + 0.5) / nx).floor_().long()  # local // nx: exact in float for these small counts, and faster
    tx = lo[:, 0].index_select(0, pair_gaussian) + local - row * nx
    ty = lo[:, 1].index_select(0, pair_gaussian) + row
    reached = _tile_reached(params.index_select(0, pair_gaussian), tx, ty, tile)
    kept = torch.nonzero(reached)[:, 0]
    pair_gaussian, tx, ty = (t.index_select(0, kept) for t in (pair_gaussian, tx, ty))
    pair_tile = (batch.index_select(0, pair_gaussian) * tiles_y + ty) * tiles_x + tx
    n_tiles = n_batch * tiles_x * tiles_y
    sort = _stable_argsort_tiles(pair_tile, n_tiles)
    pair_gaussian, pair_tile = pair_gaussian.index_select(0, sort), pair_tile.index_select(0, sort)
    tile_count = torch.bincount(pair_tile, minlength=n_tiles)
    tile_start = torch.cumsum(tile_count, 0) - tile_count
    return _TilePlan(pair_gaussian, pair_tile, tile_start, tile_count, tile, tiles_x, tiles_y)


def _stable_argsort_tiles(tile: Tensor, n_tiles: int) -> Tensor:
    """[P] the order that sorts tile indices [P] (in [0, n_tiles)) keeping equal ones in order.

    On the CPU, with fewer than 2^15 tiles, numpy's stable sort of 16-bit keys (a radix sort:
    about 10x faster than ``torch.sort`` for the ~30k pairs of a 128x128 frame); elsewhere
    ``torch.sort``."""
    if tile.device.type == "cpu" and n_tiles < 2**15:
        return torch.from_numpy(np.argsort(tile.to(torch.int16).numpy(), kind="stable"))
    key = tile.to(torch.int32 if n_tiles < 2**31 else torch.int64)
    return torch.sort(key, stable=True)[1]


def _pixel_basis(tile: int, dtype, device) -> Tensor:
    """[6, tile^2] (u^2, uv, v^2, u, v, 1) of each pixel centre relative to its tile's centre."""
    offsets = torch.arange(tile, dtype=dtype, device=device) + 0.5 - tile / 2
    v, u = torch.meshgrid(offsets, offsets, indexing="ij")  # row-major pixels
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)])


def _pair_coefficients(params: Tensor, plan: _TilePlan) -> Tensor:
    """[P, 6] coefficients of log(opacity * G(p)) as a quadratic in tile-local pixel positions.

    params [G, 6] = (mean x, mean y, conic a, b, c, log opacity). With m the
    centre relative to the tile centre and conic (a, b, c):
    log(o) - 0.5 (p - m)^T [[a, b], [b, c]] (p - m) =
    (-a/2) u^2 + (-b) uv + (-c/2) v^2 + (a m_x + b m_y) u + (b m_x + c m_y) v
    + log(o) - 0.5 (a m_x^2 + 2 b m_x m_y + c m_y^2).
    """
    tile = plan.tile
    mx, my, a, b, c, log_opacity = params.index_select(0, plan.pair_gaussian).unbind(-1)
    tile_in_image = plan.pair_tile % (plan.tiles_x * plan.tiles_y)
    mx = mx - ((tile_in_image % plan.tiles_x).to(mx.dtype) * tile + tile / 2)
    my = my - ((tile_in_image // plan.tiles_x).to(my.dtype) * tile + tile / 2)
    lin_x = a * mx + b * my
    lin_y = b * mx + c * my
    const = log_opacity - 0.5 * (lin_x * mx + lin_y * my)
    return torch.stack([-0.5 * a, -b, -0.5 * c, lin_x, lin_y, const], -1)


def _block_weights(logit: Tensor, trans: Tensor) -> tuple[Tensor, Tensor]:
    """Compositing weights alpha_i T_i [A, K, S] of one block, and T after it [A, S].

    logit [A, K, S] = log(opacity * G) of K depth-sorted Gaussians at S pixels
    (overwritten); trans [A, S] the transmittance before them, 0 once a pixel
    is done. Logits are clamped below at -20 before exp: exp(-inf) and results
    that underflow to subnormals are many times slower on CPUs, and anything
    under 1/255 is dropped right after.
    """
    alpha = logit.clamp_(_LOG_ALPHA_FLOOR, _LOG_ALPHA_MAX).exp_()
    torch.nn.functional.threshold_(alpha, ALPHA_MIN, 0.0)  # alpha < 1/255: skipped
    t = torch.rsub(alpha, 1.0)
    ratio = alpha.div_(t)  # alpha / (1 - alpha)
    t[:, 0].mul_(trans)
    t = t.cumprod_(dim=1)  # T after each Gaussian
    torch.nn.functional.threshold_(t, T_MIN, 0.0)  # stop before T falls under T_MIN
    return ratio.mul_(t), t[:, -1].clone()


def _tile_groups(counts: Tensor, pixels: int) -> list[Tensor]:
    """Non-empty tiles in groups of about _CHUNK_PIXELS pixels, most pairs first."""
    nonempty = torch.nonzero(counts > 0)[:, 0]
    nonempty = nonempty[torch.argsort(counts[nonempty], descending=True)]
    return [rows for rows in nonempty.split(max(1, _CHUNK_PIXELS // pixels)) if rows.numel() > 0]


def _composite_group(rows: Tensor, coef: Tensor, feats: Tensor, feat_index: Tensor, starts: Tensor,
                     counts: Tensor, basis: Tensor, out: Tensor | None, tape: list | None = None) -> None:
    """Composite the tiles ``rows`` (sorted by pair count, descending) into ``out`` [T, D, S].

    Walks the depth-sorted lists _BLOCK Gaussians at a time; a tile leaves when
    its list ends or all its pixels are saturated. With ``tape`` given, appends
    (rows, pair indices, valid, transmittance before) of every block; with
    ``out`` None only the transmittances are computed.
    """
    S, D = basis.shape[1], feats.shape[1]
    acc = feats.new_zeros(rows.numel(), D, S) if out is not None else None
    trans = feats.new_ones(rows.numel(), S)
    row_counts, row_starts = counts[rows], starts[rows]
    k0 = 0
    while True:
        block = min(_BLOCK, int(row_counts[0]) - k0)  # rows stay sorted by count
        k = k0 + torch.arange(block, device=coef.device)
        valid = k < row_counts[:, None]  # [A, K]
        idx = torch.where(valid, row_starts[:, None] + k, 0)
        if tape is not None:
            tape.append((rows, idx, valid, trans))
        weight, trans = _block_weights(_block_logits(coef, idx, valid, basis), trans)
        if out is not None:
            f = feats.index_select(0, feat_index.index_select(0, idx.reshape(-1))).view(*idx.shape, D)
            acc.baddbmm_(f.transpose(1, 2), weight)
        k0 += block
        alive = (row_counts > k0) & (trans > 0).any(dim=1)
        n = int(alive.sum())
        if n < alive.numel():
            stay, leave = _partition(alive, n)
            if out is not None:
                out.index_copy_(0, _take(rows, leave), _take(acc, leave))
                acc = _take(acc, stay)
            if n == 0:
                return
            rows, trans, row_counts, row_starts = (_take(t, stay) for t in (rows, trans, row_counts, row_starts))


def _partition(alive: Tensor, n: int) -> tuple:
    """(staying, leaving) rows of a group: slices when the ``n`` alive rows come first (the
    usual case: rows sorted by pair count leave from the end, so no copy is made), else indices."""
    if bool(alive[:n].all()):
        return slice(0, n), slice(n, None)
    return torch.nonzero(alive)[:, 0], torch.nonzero(~alive)[:, 0]


def _take(t: Tensor, rows) -> Tensor:
    return t[rows] if isinstance(rows, slice) else t.index_select(0, rows)


def _block_logits(coef: Tensor, idx: Tensor, valid: Tensor, basis: Tensor) -> Tensor:
    """[A, K, S] log(opacity * G) of pairs ``idx`` [A, K] at the basis pixels; padding gets -inf."""
    c = coef.index_select(0, idx.reshape(-1)).view(*idx.shape, 6)
    c[..., 5].masked_fill_(~valid, -math.inf)
    return c @ basis


def _block_backward(coef, feats, feat_index, basis, idx, valid, trans, grad_out, grad_trans):
    """Gradients of one block (see _block_weights) by hand, recomputing its forward.

    grad_out [A, D, S] is the gradient of the tiles' composited features,
    grad_trans [A, S] that of the transmittance after the block. Returns the
    gradients of the pair coefficients [A, K, 6], the features [A, K, D] and the
    transmittance before the block [A, S].
    """
    A, K = idx.shape
    D = feats.shape[1]
    logit = _block_logits(coef, idx, valid, basis)
    slope = logit < _LOG_ALPHA_MAX  # alpha clamped at 0.99 has no gradient
    alpha = logit.clamp_(_LOG_ALPHA_FLOOR, _LOG_ALPHA_MAX).exp_()
    torch.nn.functional.threshold_(alpha, ALPHA_MIN, 0.0)
    keep = torch.rsub(alpha, 1.0)
    t = torch.cumprod(keep, dim=1).mul_(trans[:, None])
    torch.nn.functional.threshold_(t, T_MIN, 0.0)
    t_before = t.div_(keep)  # T_{i-1}, 0 past the stop
    weight = alpha * t_before
    f = feats.index_select(0, feat_index.index_select(0, idx.reshape(-1))).view(A, K, D)
    grad_weight = torch.bmm(f, grad_out)  # [A, K, S]
    gw = grad_weight * weight
    # total = sum_i g_i w_i + g_T T_out = T_before * dL/dT_before
    total = gw.sum(dim=1).addcmul_(grad_trans, t_before[:, -1] * keep[:, -1])
    behind = torch.cumsum(gw, dim=1).neg_().add_(total[:, None])  # sum_{j>i} g_j w_j + g_T T_out
    grad_alpha = grad_weight.mul_(t_before).sub_(behind.div_(keep))
    grad_logit = grad_alpha.mul_(alpha).mul_(slope)  # d alpha / d logit = alpha (0 when skipped)
    grad_coef = (grad_logit.view(A * K, -1) @ basis.T).view(A, K, 6)
    grad_feats = torch.bmm(weight, grad_out.transpose(1, 2))  # [A, K, D]
    grad_trans_before = torch.where(trans > 0, total / trans.clamp_min(T_MIN), 0.0)
    return grad_coef, grad_feats, grad_trans_before


class _CompositeTiles(torch.autograd.Function):
    """Tile compositing: returns [tiles, D, S] sums of w_i f_i per pixel.

    Inputs: coef [P, 6] pair coefficients (see _pair_coefficients), feats [G, D]
    Gaussian features, the tile plan and the pixel basis [6, S]. The backward
    replays each group of tiles without autograd, keeping only the per-block
    transmittances, then walks the blocks back with hand-written gradients.
    """

    @staticmethod
    def forward(ctx, coef, feats, plan, basis):
        out = feats.new_zeros(plan.tile_count.numel(), feats.shape[1], basis.shape[1])
        for rows in _tile_groups(plan.tile_count, basis.shape[1]):
            _composite_group(rows, coef, feats, plan.pair_gaussian, plan.tile_start, plan.tile_count, basis, out)
        ctx.save_for_backward(coef, feats)
        ctx.plan, ctx.basis = plan, basis
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        coef, feats = ctx.saved_tensors
        plan, basis = ctx.plan, ctx.basis
        grad_coef, grad_feats = torch.zeros_like(coef), torch.zeros_like(feats)
        grad_trans = feats.new_zeros(plan.tile_count.numel(), basis.shape[1])
        for rows in _tile_groups(plan.tile_count, basis.shape[1]):
            tape = []
            _composite_group(rows, coef, feats, plan.pair_gaussian, plan.tile_start, plan.tile_count,
                             basis, None, tape)
            for block_rows, idx, valid, trans in reversed(tape):
                g_coef, g_feats, g_trans = _block_backward(
                    coef, feats, plan.pair_gaussian, basis, idx, valid, trans,
                    grad_out[block_rows], grad_trans[block_rows])
                grad_trans[block_rows] = g_trans
                pairs = idx[valid]
                grad_coef.index_copy_(0, pairs, g_coef[valid])
                grad_feats.index_add_(0, plan.pair_gaussian[pairs], g_feats[valid])
        return grad_coef, grad_feats, None, None


class _Splats(NamedTuple):
    """The torch backend's projected and planned splats (see ``_project_and_plan``)."""

    projection: Projection
    index: Tensor   # [G] visible Gaussians as flattened b * N + n, in depth order
    params: Tensor  # [G, 6] (mean x, mean y, conic a, b, c, log opacity), differentiable
    plan: _TilePlan


def _project_and_plan(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane) -> _Splats:
    """Project, keep the visible Gaussians in depth order, list their (tile, Gaussian) pairs."""
    B, N = means.shape[:2]
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane)
    index = torch.nonzero(proj.visible.reshape(-1))[:, 0]  # flattened b * N + n
    index = index[torch.argsort(proj.depth.reshape(-1)[index])]  # depth order

    def visible(t: Tensor, width: int) -> Tensor:  # [B, N, width] -> [G, width]
        return t.reshape(B * N, width).index_select(0, index)

    params = torch.cat([visible(proj.mean2d, 2), visible(proj.conic, 3), torch.log(visible(opacities, 1))], -1)
    with torch.no_grad():
        batch = torch.div(index, max(N, 1), rounding_mode="floor")
        plan = _plan_tiles(params.detach(), visible(proj.radius, 2), batch, B, width, height)
    return _Splats(proj, index, params, plan)


def _rasterize_torch(means, quats, scales, opacities, features, viewmats, Ks, width, height,
                     background, near_plane) -> RasterOutput:
    B, N, C = features.shape
    dtype, device = means.dtype, means.device
    proj, index, params, plan = _project_and_plan(means, quats, scales, opacities, viewmats, Ks, width, height,
                                                  near_plane)
    depth = proj.depth.reshape(B * N, 1).index_select(0, index)
    # composite features, depth and 1 (whose sum of weights is alpha) in one pass
    feats = torch.cat([features.reshape(B * N, C).index_select(0, index), depth, torch.ones_like(depth)], -1)
    coef = _pair_coefficients(params, plan)
    acc = _CompositeTiles.apply(coef, feats, plan, _pixel_basis(plan.tile, dtype, device))  # [B*tiles, C+2, S]

    ty, tx, tile = plan.tiles_y, plan.tiles_x, plan.tile
    out = acc.reshape(B, ty, tx, C + 2, tile, tile).permute(0, 3, 1, 4, 2, 5)
    out = out.reshape(B, C + 2, ty * tile, tx * tile)[:, :, :height, :width]
    image, depth_sum, alpha = out[:, :C], out[:, C:C + 1], out[:, C + 1:]
    if background is not None:
        image = image + (1.0 - alpha) * background[:, :, None, None]
    depth_map = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-10), torch.zeros_like(alpha))
    return RasterOutput(image, alpha, depth_map)


# ---------------------------------------------------------------------------
