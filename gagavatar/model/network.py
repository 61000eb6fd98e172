"""The GAGAvatar network: one image in, an avatar of 3D Gaussians out; every
frame only moves the expression Gaussians, splats and refines (SPEC §2-§3).

    avatar = model.reconstruct(image, camera)           # once per source image
    out = model.render(avatar, vertices, camera)         # every frame
    out.coarse, out.fine, out.alpha

``model(batch)`` is the training forward (reconstruct + render, with gradients).
Sub-modules and their reference names (see ``official.py``):
``backbone`` (base_model.dino_model), ``decoder`` (base_model),
``expression`` (gs_generator_g + head_base), ``lifting_front`` / ``lifting_back``
(gs_generator_l0 / _l1), ``refiner`` (upsampler).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor, nn

from gagavatar.geometry import Camera
from gagavatar.io import resize_image
from gagavatar.model.config import ModelConfig
from gagavatar.model.decoder import DPTDecoder, identity_feature
from gagavatar.model.lifting import (ExpressionGaussians, LiftingHead, covariance_to_quat_scale, direction_code,
                                     direction_code_dim, point_plane, reference_covariances)
from gagavatar.model.refiner import StyleUNet
from gagavatar.model.vit import VisionTransformer, normalize_imagenet
from gagavatar.render.rasterize import rasterize


@dataclass
class Encoding:
    """What the source image gives before any Gaussian exists (per source, B of them).

    feature_map [B, F, P, P]; identity F_id [B, D]; plane_points [B, P*P, 3];
    plane_dirs [B, 3]; direction_code [B, K].
    """

    feature_map: Tensor
    identity: Tensor
    plane_points: Tensor
    plane_dirs: Tensor
    direction_code: Tensor


@dataclass
class Avatar:
    """Every Gaussian attribute that does not depend on the driving frame.

    Gaussians are stored in splat order (SPEC §7.8): [n_vertices expression,
    P^2 front, P^2 back]. Expression positions come from each frame's vertices.

    lifted_xyz [B, L, 3]: positions of the lifted Gaussians (front, then back);
    features [B, N, C]; opacities [B, N, 1]; scales [B, N, 3] (linear);
    rotations [B, N, 4] (w first; the expression ones are not unit length in the
    reference variant, see ``ExpressionGaussians``). N = n_vertices + L.

    splat_rotations / splat_scales [B, N, 4/3]: what the rasterizer gets. The
    reference rasterizer builds covariances from quaternions as given, without
    normalising (``reference_covariances``); ours normalises. They are equal to
    rotations / scales wherever the quaternions are unit; for the reference's
    non-unit expression quaternions they are the unit quaternion and scales of
    the same covariance R(q) diag(s)^2 R(q)^T (an eigendecomposition).
    """

    lifted_xyz: Tensor
    features: Tensor
    opacities: Tensor
    scales: Tensor
    rotations: Tensor
    splat_rotations: Tensor
    splat_scales: Tensor
    n_vertices: int

    @property
    def batch(self) -> int:
        return self.features.shape[0]

    def _map(self, fn) -> "Avatar":
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def to(self, *args, **kwargs) -> "Avatar":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Avatar":
        return self._map(Tensor.detach)

    @staticmethod
    def cat(avatars: list["Avatar"]) -> "Avatar":
        """One avatar of the avatars' batches joined (a list of one avatar, repeated: no copy)."""
        first = avatars[0]
        if all(a is first for a in avatars[1:]):
            return first
        return replace(first, **{f.name: torch.cat([getattr(a, f.name) for a in avatars]) for f in fields(first)
                                 if isinstance(getattr(first, f.name), Tensor)})

    def expand(self, batch: int) -> "Avatar":
        """A batch-1 avatar repeated ``batch`` times (no copy)."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"avatar has batch {self.batch}, cannot drive {batch} frames; "
                             f"use batch 1 or {batch} avatars")
        return self._map(lambda t: t.expand(batch, *t.shape[1:]))

    def means(self, vertices: Tensor) -> Tensor:
        """All Gaussian centres [B, N, 3] for driven vertices [B, V, 3]."""
        if vertices.shape[1] != self.n_vertices:
            raise ValueError(f"got {vertices.shape[1]} vertices, the avatar has {self.n_vertices} expression "
                             f"Gaussians (use the head model the network was built for)")
        return torch.cat([vertices.to(self.lifted_xyz.dtype), self.lifted_xyz], dim=1)


@dataclass
class RenderOutput:
    """coarse [B, 3, R, R] (splat channels 0-2); fine [B, 3, R, R] (the refiner's
    output, or coarse without one); alpha [B, 1, R, R]; features [B, C, R, R]
    (the whole splatted map); depth [B, 1, R, R]."""

    coarse: Tensor
    fine: Tensor
    alpha: Tensor
    features: Tensor
    depth: Tensor


@dataclass
class TrainingOutput:
    """What the losses need: coarse / fine [B, 3, R, R], alpha [B, 1, R, R],
    lifted_points [B, L, 3] (for L_lifting), vertices [B, V, 3]."""

    coarse: Tensor
    fine: Tensor
    alpha: Tensor
    lifted_points: Tensor
    vertices: Tensor


class GAGAvatar(nn.Module):
    """The network. Build with ``create_model`` or ``gagavatar.model.load`` (any checkpoint)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config = config.validate()
        code_dim = direction_code_dim(config.n_harmonics)
        self.backbone = VisionTransformer(config.patch_size, config.vit_dim, config.vit_depth, config.vit_heads,
                                          config.vit_mlp_ratio, config.vit_pos_grid).freeze()
        self.decoder = DPTDecoder(config.vit_dim, config.decoder_dims, config.decoder_hidden, config.feature_dim,
                                  config.decoder_unused_unit)
        self.expression = ExpressionGaussians(
            config.n_vertices, config.expression_embed_dim, config.vit_dim if config.use_fid else 0,
            config.expression_hidden, code_dim, config.expression_head_hidden, config.channels,
            config.max_scale, config.expression_rotation_norm)
        lifting = dict(in_dim=config.feature_dim, code_dim=code_dim, hidden=config.lifting_hidden,
                       channels=config.channels, max_scale=config.max_scale, rgb_sigmoid=config.lifted_rgb_sigmoid)
        self.lifting_front = LiftingHead(**lifting)
        self.lifting_back = None if config.one_plane else LiftingHead(**lifting)
        self.refiner = StyleUNet(config.refiner) if config.use_refiner else None
        # The perceptual network's tensors (VGG-Face + AlexNet) when loaded from the
        # released checkpoint; used by the training loss, not part of this network.
        self.perceptual_state: dict[str, Tensor] | None = None
        self.head_id: str | None = None  # the head model it was trained with (``HeadModel.id``), when known

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.output_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.output_conv.weight.device

    # ------------------------------------------------------------------ reconstruction
    def backbone_input(self, image: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> the normalised backbone input [B, 3, S, S]."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W] RGB in [0, 1], got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"image must be float in [0, 1], got {image.dtype} (divide uint8 images by 255)")
        image = image.to(device=self.device, dtype=self.dtype)
        size = self.config.image_size
        return normalize_imagenet(resize_image(image, size))

    def encode(self, image: Tensor, camera: Camera) -> Encoding:
        """Backbone + decoder + point plane for source images [B, 3, H, W] in [0, 1]
        seen by ``camera`` (batch B)."""
        cfg = self.config
        x = self.backbone_input(image)
        if camera.batch != x.shape[0]:
            raise ValueError(f"{x.shape[0]} source images but {camera.batch} source cameras")
        frozen = not any(p.requires_grad for p in self.backbone.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            layers = self.backbone.get_intermediate_layers(x, n=4, return_class_token=True)
        maps = [m for m, _ in layers]
        identity = identity_feature(maps[-1], layers[-1][1], cfg.fid_token)
        feature_map = self.decoder(maps, x, output_size=cfg.plane_size)
        # the plane in float32, as the reference's data loader makes it
        points, dirs = point_plane(camera.to(self.device), cfg.plane_size)
        code = direction_code(dirs.to(torch.promote_types(self.dtype, torch.float32)), cfg.n_harmonics)
        return Encoding(feature_map, identity, points.to(self.dtype), dirs.to(self.dtype), code.to(self.dtype))

    def gaussians_from(self, enc: Encoding) -> Avatar:
        """The avatar's Gaussians from an encoding."""
        cfg = self.config
        expr = self.expression(enc.identity if cfg.use_fid else None, enc.direction_code)
        heads = [(self.lifting_front, 1.0)] + ([] if self.lifting_back is None else [(self.lifting_back, -1.0)])
        lifted = []
        for head, sign in heads:
            g = head(enc.feature_map, enc.direction_code)
            # front: point + offset * dir; back: point - offset * dir
            g["xyz"] = enc.plane_points + sign * g["offsets"] * enc.plane_dirs[:, None]
            lifted.append(g)
        cat = lambda key: torch.cat([expr[key]] + [g[key] for g in lifted], dim=1)  # noqa: E731
        rotations, scales = cat("rotations"), cat("scales")
        splat_rotations, splat_scales = rotations, scales  # unit quaternions: the rasterizer takes them as they are
        if cfg.expression_rotation_norm == "vertices":  # non-unit quaternions: see Avatar
            expr_rot, expr_scale = _unit_quaternion_equivalent(expr["rotations"], expr["scales"])
            splat_rotations = torch.cat([expr_rot] + [g["rotations"] for g in lifted], dim=1)
            splat_scales = torch.cat([expr_scale] + [g["scales"] for g in lifted], dim=1)
        return Avatar(
            lifted_xyz=torch.cat([g["xyz"] for g in lifted], dim=1),
            features=cat("features"), opacities=cat("opacities"), scales=scales, rotations=rotations,
            splat_rotations=splat_rotations, splat_scales=splat_scales, n_vertices=self.expression.n_vertices,
        )

    def reconstruct(self, image: Tensor, camera: Camera) -> Avatar:
        """Source images [B, 3, H, W] in [0, 1] + their cameras -> Avatar (batch B)."""
        return self.gaussians_from(self.encode(image, camera))

    # ------------------------------------------------------------------ per frame
    def splat(self, avatar: Avatar, vertices: Tensor, camera: Camera) -> tuple[Tensor, Tensor, Tensor]:
        """Rasterise all Gaussians with expression positions ``vertices`` [B, V, 3]
        at render_size: (features [B, C, R, R], alpha [B, 1, R, R], depth [B, 1, R, R]),
        black background."""
        size = self.config.render_size
        B = vertices.shape[0]
        if camera.batch not in (1, B):
            raise ValueError(f"{B} frames of vertices but {camera.batch} cameras")
        dtype = torch.promote_types(avatar.features.dtype, torch.float32)  # splat in float32 at least
        avatar = avatar.to(dtype).expand(B)  # cast first: casting a broadcast avatar would copy it B times
        cam = camera.resized(size, size).to(device=self.device, dtype=dtype)
        viewmats, Ks = cam.viewmat.expand(B, 4, 4), cam.K.expand(B, 3, 3)
        means = avatar.means(vertices.to(self.device))
        image, alpha, depth = rasterize(
            means, avatar.splat_rotations, avatar.splat_scales, avatar.opacities[..., 0], avatar.features,
            viewmats, Ks, size, size, background=None)  # backend "auto": gsplat on CUDA when installed
        return image, alpha, depth

    def refine(self, features: Tensor) -> Tensor:
        """Splatted features [B, C, R, R] -> final RGB [B, 3, R, R] (coarse without a refiner)."""
        if self.refiner is None:
            return features[:, :3]
        return self.refiner(features.to(self.dtype), noise=self.config.refiner_noise)

    def render(self, avatar: Avatar, vertices: Tensor, camera: Camera) -> RenderOutput:
        """One frame per row of ``vertices`` [B, V, 3] (world units: ``FrameParams.vertices``)
        seen by ``camera`` (batch B or 1). A batch-1 avatar drives any B."""
        features, alpha, depth = self.splat(avatar, vertices, camera)
        return RenderOutput(coarse=features[:, :3], fine=self.refine(features), alpha=alpha,
                            features=features, depth=depth)

    # ------------------------------------------------------------------ training
    def forward(self, source_image: Tensor, source_camera: Camera, target_vertices: Tensor,
                target_camera: Camera) -> TrainingOutput:
        """Training forward (reconstruct + render, with gradients): source images [B, 3, H, W]
        in [0, 1] seen by ``source_camera`` (B), driven vertices [B, V, 3] (world units) seen by
        ``target_camera`` (B)."""
        avatar = self.reconstruct(source_image, source_camera)
        vertices = target_vertices.to(device=self.device, dtype=self.dtype)
        out = self.render(avatar, vertices, target_camera)
        return TrainingOutput(coarse=out.coarse, fine=out.fine, alpha=out.alpha,
                              lifted_points=avatar.lifted_xyz, vertices=vertices)


def _unit_quaternion_equivalent(quats: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
    """Unit quaternions and scales [B, N, 4/3] giving the covariance the reference
    rasterizer forms from possibly non-unit ``quats`` (in float32 at least, autocast off)."""
    dtype = torch.promote_types(quats.dtype, torch.float32)
    with torch.autocast(quats.device.type, enabled=False):
        q, s = covariance_to_quat_scale(reference_covariances(quats.to(dtype), scales.to(dtype)))
    return q.to(quats.dtype), s.to(scales.dtype)


def create_model(preset: str | ModelConfig = "paper", backbone_weights: str | None = None,
                 **overrides) -> GAGAvatar:
    """A new network from a preset name ('paper', 'small', 'tiny') or a config, with
    config fields overridden by keyword (e.g. ``n_vertices=head.n_vertices``).

    ``backbone_weights``: a DINOv2 .pth or GAGAvatar.pt to take the frozen ViT
    from; without it the backbone is random (warned once).
    """
    from gagavatar.model.config import preset_config
    from gagavatar.model.vit import load_backbone_weights, warn_random_backbone

    model = GAGAvatar(preset_config(preset, **overrides))
    if backbone_weights is not None:
        load_backbone_weights(model.backbone, backbone_weights)
    elif not model.backbone.pos_embed.is_meta:
        warn_random_backbone()
    return model
