"""``rasterize``'s gsplat backend (CUDA): one ``gsplat.rasterization`` call for B scenes,
with arguments that make it compute what the torch backend computes."""
from __future__ import annotations

import functools

import torch

from gagavatar.render.conventions import ALPHA_MAX, EPS2D
from gagavatar.render.output import RasterOutput


@functools.cache  # asked on every frame; a failed import is not cached by Python
def gsplat_available() -> bool:
    """True when the gsplat package can be imported and CUDA is available."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:  # not installed, or its CUDA extension fails to load
        return False
    return True


# What ``rasterize`` asks of gsplat, checked against gsplat's own reference code on CPU
# by tests/test_gsplat_conventions.py:
# * batch: the B scenes are gsplat's leading batch dimension and each has one camera
#   (means [B, N, 3], viewmats [B, 1, 4, 4]): one call, images [B, 1, H, W, C + 1];
# * the same conventions: viewmats world to camera (OpenCV axes), quaternions w first
#   (normalised by both), scales standard deviations (linear), pixel centres at
#   (i + 0.5, j + 0.5) in the same pinhole K, the same Jacobian clamp (1.3x the field
#   of view), EWA with 0.3 px^2 dilation (eps2d; rasterize_mode "classic": no
#   compensation factor), centres with z < near_plane dropped (z = near_plane kept),
#   radius_clip 0 (a splat is dropped only when both radii are 0), the opacity-aware
#   box (gsplat >= 1.5 passes the opacities to its projection), alpha < 1/255 skipped,
#   compositing stopped before T <= 1e-4, expected depth normalised by alpha ("RGB+ED");
# * one difference: gsplat clamps alpha at 0.999, 3DGS at 0.99, so opacities are clamped
#   at 0.99 (exact for opacities <= 0.99; within 0.01 in alpha above).
# 33 = the paper's 32 feature channels + depth in one pass (gsplat has kernels for 33
# channels; its default chunk of 32 would composite every splat twice).
GSPLAT_CHANNEL_CHUNK = 33


def gsplat_arguments(means, quats, scales, opacities, features, viewmats, Ks, width, height, background,
                      near_plane) -> dict:
    """Keyword arguments of the one ``gsplat.rasterization`` call that draws all B scenes (float32)."""
    return dict(
        means=means.float(), quats=quats.float(), scales=scales.float(),
        opacities=opacities.float().clamp(max=ALPHA_MAX),  # gsplat clamps alpha at 0.999, 3DGS at 0.99
        colors=features.float(),
        viewmats=viewmats.float()[:, None], Ks=Ks.float()[:, None],  # [B, 1, ...]: one camera per scene
        width=width, height=height, near_plane=near_plane, radius_clip=0.0, eps2d=EPS2D, packed=False,
        tile_size=16, backgrounds=None if background is None else background.float()[:, None],
        render_mode="RGB+ED", rasterize_mode="classic", channel_chunk=GSPLAT_CHANNEL_CHUNK)


def rasterize_gsplat(means, quats, scales, opacities, features, viewmats, Ks, width, height,
                      background, near_plane) -> RasterOutput:
    if not means.is_cuda:
        raise ValueError("backend='gsplat' needs CUDA tensors; move the inputs to a GPU or use backend='torch'")
    try:
        from gsplat import rasterization
    except Exception as error:
        raise ImportError("backend='gsplat' needs the gsplat package (pip install 'gagavatar[gpu]' "
                          "or pip install gsplat); backend='torch' works without it") from error
    return gsplat_render(rasterization, means, quats, scales, opacities, features, viewmats, Ks, width, height,
                          background, near_plane)


def gsplat_render(rasterization, means, quats, scales, opacities, features, viewmats, Ks, width, height,
                   background, near_plane) -> RasterOutput:
    """``rasterize`` through ``rasterization`` (gsplat's, or a stand-in with its signature)."""
    B, N, C = features.shape
    dtype = means.dtype
    if N == 0:  # nothing to draw (gsplat is not asked about empty scenes)
        image = means.new_zeros(B, C, height, width)
        if background is not None:
            image = image + background[:, :, None, None]
        empty = means.new_zeros(B, 1, height, width)
        return RasterOutput(image, empty, empty.clone())
    colors, alpha, _ = rasterization(**gsplat_arguments(means, quats, scales, opacities, features, viewmats, Ks,
                                                         width, height, background, near_plane))
    colors = colors[:, 0].permute(0, 3, 1, 2).to(dtype)  # [B, C + 1, H, W], expected depth last
    alpha = alpha[:, 0].permute(0, 3, 1, 2).to(dtype)
    depth = torch.where(alpha > 0, colors[:, -1:], torch.zeros_like(alpha))
    return RasterOutput(colors[:, :-1].contiguous(), alpha, depth)
