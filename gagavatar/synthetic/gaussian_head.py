"""Gaussians of one identity bound to a head model's mesh (``GaussianHead``): their centres,
normals and scales for each frame's vertices, which face the camera, and their Lambertian
shading under a light (``shade``)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


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
