"""From features to Gaussians: the point plane, the direction code, the dual
lifting heads and the expression Gaussians (SPEC §2.3-§2.5, §7.2, §7.5-§7.7).

Parameter names are the reference's: a lifting head holds ``gaussian_conv.{0,2,4,6}``
(``gs_generator_l0`` / ``_l1`` there), the expression generator ``feature_layers``,
``color_layers``, ``opacity_layers``, ``scale_layers``, ``rotation_layers`` and
the per-vertex embedding ``head_base`` (``gs_generator_g`` / ``head_base`` there).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.geometry import Camera, matrix_to_quaternion, quaternion_to_matrix


# ----------------------------------------------------------------------------
# point plane and direction code
# ----------------------------------------------------------------------------

def point_plane(camera: Camera, size: int) -> tuple[Tensor, Tensor]:
    """The source camera's point plane: points [B, size*size, 3] and view directions [B, 3].

    A size x size grid on the plane through the point nearest to the world origin
    along the viewing axis, facing the camera, each point on its pixel's ray
    (SPEC §7.2). Column j, row i: (x, y) = (1 - 2j/(P-1), 1 - 2i/(P-1)) in
    PyTorch3D camera axes (x left, y up), so point 0 is the image's top-left;
    ray = R (x/f, y/f, 1) with f the focal in half-image units; point = C + D ray,
    D = |C . d|, d = R (0, 0, 1). Flattened row-major (i, then j), matching the
    conv heads' [B, C, P, P] -> [B, P*P, C]. Computed in float32, as the reference.
    """
    transform = camera.to_reference().float()  # [B, 3, 4], PyTorch3D [R|T] (exact sign flips)
    R, T = transform[:, :, :3], transform[:, :, 3]
    focal = camera.focal.float()  # [B]
    lin = torch.linspace(1, -1, size, dtype=torch.float32, device=R.device)
    y, x = torch.meshgrid(lin, lin, indexing="ij")  # x varies along columns, y along rows
    B = R.shape[0]
    xy = torch.stack([x, y], dim=-1).reshape(1, -1, 2) / focal[:, None, None]  # [B, P*P, 2]
    rays = F.pad(xy, (0, 1), value=1.0)  # [B, P*P, 3]
    rays = torch.matmul(R[:, None], rays[..., None])[..., 0]  # R r per point
    dirs = R[:, :, 2]  # R (0, 0, 1)
    origins = -torch.matmul(R, T[..., None])[..., 0]  # camera centre C = -R T, [B, 3]
    distance = (origins * dirs).sum(-1).abs()  # [B]
    points = origins[:, None] + distance[:, None, None] * rays
    return points.reshape(B, size * size, 3), dirs


# PyTorch3D's HarmonicEmbedding computes cos(x) as sin(x + pi/2) with pi/2 held in a
# float32 buffer; the reference's direction code carries that rounding (4e-8).
HALF_PI_FLOAT32 = float(torch.tensor(0.5 * math.pi, dtype=torch.float32))


def direction_code(dirs: Tensor, n_harmonics: int = 4) -> Tensor:
    """Harmonic code of view directions [B, 3] -> [B, 3 * (2 n + 1)] (27 for n = 4).

    Frequencies 1, 2, 4, ...; order [sin(d_x f1..fn), sin(d_y ..), sin(d_z ..),
    cos(d_x ..), cos(d_y ..), cos(d_z ..), d_x, d_y, d_z] (PyTorch3D's
    HarmonicEmbedding defaults, SPEC §7.5), cos as PyTorch3D computes it.
    """
    freqs = 2.0 ** torch.arange(n_harmonics, dtype=dirs.dtype, device=dirs.device)
    embed = (dirs[..., None] * freqs).reshape(*dirs.shape[:-1], -1)
    return torch.cat([embed.sin(), (embed + HALF_PI_FLOAT32).sin(), dirs], dim=-1)


def direction_code_dim(n_harmonics: int) -> int:
    return 3 * (2 * n_harmonics + 1)


# ----------------------------------------------------------------------------
# lifting heads
# ----------------------------------------------------------------------------

def squash_rgb(colors: Tensor, mode: str) -> Tensor:
    """Sigmoid on the RGB part of lifted-Gaussian features [B, C, P, P].

    ``"channels"``: channels 0-2 (the intent). ``"columns"``: the reference code
    writes ``colors[..., :3]`` on the [B, C, P, P] map, which squashes pixel
    COLUMNS 0-2 of every channel and leaves the RGB channels raw elsewhere; the
    released weights were trained that way (SPEC §7.6).
    """
    if mode == "channels":
        return torch.cat([torch.sigmoid(colors[:, :3]), colors[:, 3:]], dim=1)
    if mode == "columns":
        return torch.cat([torch.sigmoid(colors[..., :3]), colors[..., 3:]], dim=-1)
    raise ValueError(f"lifted_rgb_sigmoid must be 'columns' or 'channels', got {mode!r}")


class LiftingHead(nn.Module):
    """One lifting direction (front or back): feature map + direction code ->
    one Gaussian per plane point.

    ``gaussian_conv``: 3x3 conv (in + code -> hidden), ReLU, 3x3, ReLU, 3x3, ReLU,
    1x1 -> channels + 1 + 3 + 4 + 1 = [features | opacity | scale | rotation | offset].
    """

    def __init__(self, in_dim: int = 256, code_dim: int = 27, hidden: int = 128, channels: int = 32,
                 max_scale: float = 0.05, rgb_sigmoid: str = "channels"):
        super().__init__()
        self.channels, self.max_scale, self.rgb_sigmoid = channels, max_scale, rgb_sigmoid
        self.gaussian_conv = nn.Sequential(
            nn.Conv2d(in_dim + code_dim, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, channels + 9, 1),
        )

    def forward(self, features: Tensor, code: Tensor) -> dict[str, Tensor]:
        """features [B, F, P, P], code [B, K] -> per-point attributes, flattened row-major:
        features [B, P*P, C], opacities [B, P*P, 1], scales [B, P*P, 3] (linear),
        rotations [B, P*P, 4] (unit quaternions, w first), offsets [B, P*P, 1] in (0, 1)."""
        B, _, H, W = features.shape
        code = code[:, :, None, None].expand(-1, -1, H, W)
        out = self.gaussian_conv(torch.cat([features, code], dim=1))
        C = self.channels
        attrs = {
            "features": squash_rgb(out[:, :C], self.rgb_sigmoid),
            "opacities": torch.sigmoid(out[:, C:C + 1]),
            "scales": torch.sigmoid(out[:, C + 1:C + 4]) * self.max_scale,
            "rotations": F.normalize(out[:, C + 4:C + 8], dim=1),
            "offsets": torch.sigmoid(out[:, C + 8:C + 9]),
        }
        return {k: v.permute(0, 2, 3, 1).reshape(B, H * W, v.shape[1]) for k, v in attrs.items()}


# ----------------------------------------------------------------------------
# expression Gaussians
# ----------------------------------------------------------------------------

def _mlp_head(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class ExpressionGaussians(nn.Module):
    """One Gaussian per head-model vertex, placed at the driven vertices every frame.

    Input per vertex: [learned embedding ``head_base`` (E), F_id (D)] (F_id left
    out when ``id_dim`` is 0, the "without F_id" ablation) -> ``feature_layers``
    (Linear -> hidden, ReLU, x3, Linear) -> append the direction code -> heads
    Linear -> head_hidden, ReLU, Linear -> features (sigmoid on 0-2), opacity
    (sigmoid), scale (sigmoid x max_scale), rotation (L2-normalised).

    ``rotation_norm``: ``"per_gaussian"`` normalises each quaternion;
    ``"vertices"`` is the reference's call ``normalize(rotations)`` on
    [B, V, 4], whose default dim=1 normalises each component ACROSS the
    vertices, so every quaternion is far from unit length (norm ~ 2/sqrt(V));
    the released weights were trained that way. See ``reference_covariances``
    for how the reference rasterizer then turns them into covariances.
    """

    def __init__(self, n_vertices: int = 5023, embed_dim: int = 256, id_dim: int = 768, hidden: int = 256,
                 code_dim: int = 27, head_hidden: int = 128, channels: int = 32, max_scale: float = 0.05,
                 rotation_norm: str = "per_gaussian"):
        super().__init__()
        if rotation_norm not in ("vertices", "per_gaussian"):
            raise ValueError(f"expression_rotation_norm must be 'vertices' or 'per_gaussian', got {rotation_norm!r}")
        self.max_scale, self.rotation_norm, self.id_dim = max_scale, rotation_norm, id_dim
        self.head_base = nn.Parameter(torch.randn(n_vertices, embed_dim))
        in_dim = embed_dim + id_dim
        self.feature_layers = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden),
        )
        self.color_layers = _mlp_head(hidden + code_dim, head_hidden, channels)
        self.opacity_layers = _mlp_head(hidden + code_dim, head_hidden, 1)
        self.scale_layers = _mlp_head(hidden + code_dim, head_hidden, 3)
        self.rotation_layers = _mlp_head(hidden + code_dim, head_hidden, 4)

    @property
    def n_vertices(self) -> int:
        return self.head_base.shape[0]

    def forward(self, identity: Tensor | None, code: Tensor) -> dict[str, Tensor]:
        """identity F_id [B, D] (or None when id_dim is 0), code [B, K] ->
        features [B, V, C], opacities [B, V, 1], scales [B, V, 3], rotations [B, V, 4]."""
        B, V = code.shape[0], self.n_vertices
        x = self.head_base[None].expand(B, -1, -1)
        if self.id_dim:
            x = torch.cat([x, identity[:, None].expand(-1, V, -1)], dim=-1)
        x = self.feature_layers(x)
        x = torch.cat([x, code[:, None].expand(-1, V, -1)], dim=-1)
        colors = self.color_layers(x)
        rotations = self.rotation_layers(x)
        return {
            "features": torch.cat([torch.sigmoid(colors[..., :3]), colors[..., 3:]], dim=-1),
            "opacities": torch.sigmoid(self.opacity_layers(x)),
            "scales": torch.sigmoid(self.scale_layers(x)) * self.max_scale,
            "rotations": F.normalize(rotations, dim=1 if self.rotation_norm == "vertices" else -1),
        }


# ----------------------------------------------------------------------------
# covariances as the reference rasterizer forms them
# ----------------------------------------------------------------------------

def reference_covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances [..., 3, 3] = M M^T, M = R(q) diag(s), with R(q) the
    quaternion-to-matrix formula applied to q AS GIVEN (w first).

    The reference rasterizer (diff-gaussian-rasterization's ``computeCov3D``)
    does not normalise quaternions. For unit quaternions this is the usual
    rotation; for the reference's expression Gaussians (quaternions of norm
    ~0.03, see ``ExpressionGaussians``) R(q) is close to the identity.
    """
    R = quaternion_to_matrix(quats, normalize=False)
    M = R * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def covariance_to_quat_scale(cov: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric PSD covariances [..., 3, 3] -> (unit quaternions [..., 4], scales [..., 3])
    with R(q) diag(s)^2 R(q)^T = cov (an eigendecomposition)."""
    eigvals, eigvecs = torch.linalg.eigh(cov)
    flip = torch.where(torch.linalg.det(eigvecs) < 0, -1.0, 1.0).to(cov.dtype)
    eigvecs = torch.cat([eigvecs[..., :2], eigvecs[..., 2:] * flip[..., None, None]], dim=-1)
    return matrix_to_quaternion(eigvecs), eigvals.clamp_min(0).sqrt()
