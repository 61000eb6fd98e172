"""The frozen backbone: a DINOv2-style Vision Transformer, readable in one sitting.

Parameter names follow DINOv2 (``cls_token``, ``pos_embed``, ``mask_token``,
``patch_embed.proj``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,
mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``), so the official DINOv2 weights and the
copy inside GAGAvatar.pt (``base_model.dino_model.*``) load without renaming.

What GAGAvatar uses is ``get_intermediate_layers(x, n=4)``: the tokens after
each of the last 4 blocks, each passed through the final LayerNorm, CLS token
dropped, reshaped to [B, D, h, w] maps (SPEC §7.3).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.io import read_tensor_file
from gagavatar.io.images import IMAGENET_MEAN, IMAGENET_STD



class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: [B, 3, H, W] -> [B, (H/p)(W/p), D]."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"backbone input {H}x{W} is not a multiple of the patch size {self.patch_size}; "
                             f"resize the image to a multiple of {self.patch_size} first")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as DINOv2
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual gain ``gamma``."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """DINOv2 ViT. ``pos_grid`` is the patch grid side the position embedding is
    stored at (37 for DINOv2's 518x518 input); other grids are interpolated."""

    def __init__(self, patch_size: int = 14, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, pos_grid: int = 37, interpolate_offset: float = 0.1):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.interpolate_offset = interpolate_offset
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused here; kept so DINOv2 weights load
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_random()

    @torch.no_grad()
    def _init_random(self) -> None:
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, n_patches: int, h: int, w: int) -> Tensor:
        """Position embedding [1, 1 + n_patches, D] for an input of h x w pixels.

        As DINOv2: returned unchanged when the grid matches (518x518 -> 37x37);
        otherwise bicubic with ``scale_factor = (grid + 0.1) / stored_grid`` (the
        +0.1 avoids a floor rounding down; the scale factor, not the output size,
        sets the sampling positions), computed in at least float32.
        """
        N = self.pos_embed.shape[1] - 1
        if n_patches == N and h == w:
            return self.pos_embed
        M = int(math.sqrt(N))
        h0, w0 = h // self.patch_size, w // self.patch_size
        pos = self.pos_embed
        work_dtype = torch.promote_types(pos.dtype, torch.float32)
        patch_pos = pos[:, 1:].to(work_dtype).reshape(1, M, M, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            kwargs = {"scale_factor": ((h0 + self.interpolate_offset) / M, (w0 + self.interpolate_offset) / M)}
        else:
            kwargs = {"size": (h0, w0)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=False, **kwargs)
        if patch_pos.shape[-2:] != (h0, w0):
            raise RuntimeError(f"position embedding interpolated to {tuple(patch_pos.shape[-2:])}, expected {(h0, w0)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
        return torch.cat([pos[:, :1], patch_pos.to(pos.dtype)], dim=1)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] normalised image -> [B, 1 + h w, D] tokens (CLS first)."""
        H, W = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.interpolate_pos_encoding(tokens.shape[1] - 1, H, W)

    def get_intermediate_layers(self, x: Tensor, n: int = 4, reshape: bool = True, norm: bool = True,
                                return_class_token: bool = False):
        """Outputs of the last ``n`` blocks for a normalised image [B, 3, H, W].

        Each output goes through the final LayerNorm (``norm``), loses its CLS
        token, and with ``reshape`` becomes a map [B, D, H/p, W/p] (else tokens
        [B, h w, D]). With ``return_class_token`` each entry is (map, cls [B, D]).
        """
        B, _, H, W = x.shape
        tokens = self.prepare_tokens(x)
        take = range(len(self.blocks) - n, len(self.blocks))
        outputs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in take:
                outputs.append(tokens)
        if norm:
            outputs = [self.norm(t) for t in outputs]
        classes = [t[:, 0] for t in outputs]
        outputs = [t[:, 1:] for t in outputs]
        if reshape:
            h, w = H // self.patch_size, W // self.patch_size
            outputs = [t.reshape(B, h, w, -1).permute(0, 3, 1, 2).contiguous() for t in outputs]
        if return_class_token:
            return tuple(zip(outputs, classes))
        return tuple(outputs)

    def freeze(self) -> "VisionTransformer":
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def normalize_imagenet(image: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet mean/std normalised."""
    mean = image.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = image.new_tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std


BACKBONE_PREFIXES = ("base_model.dino_model.", "backbone.", "")


def read_backbone_state(path: str | Path) -> dict[str, Tensor]:
    """DINOv2 tensors from a file: an official DINOv2 ``.pth``, GAGAvatar.pt, or
    a gagavatar ``.safetensors``. Keys are returned without any prefix."""

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = read_tensor_file(path)
    for prefix in BACKBONE_PREFIXES:
        if prefix + "pos_embed" in state:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    raise ValueError(f"{path} holds no DINOv2 weights (looked for pos_embed under prefixes {BACKBONE_PREFIXES})")


def load_backbone_weights(vit: VisionTransformer, path: str | Path) -> None:
    """Copy DINOv2 weights from ``path`` into ``vit``; every tensor must be there with its shape."""
    state = read_backbone_state(path)
    own = vit.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"backbone weights in {path} lack {len(missing)} tensors, e.g. {missing[:3]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"backbone tensor {k} in {path} has shape {tuple(state[k].shape)}, "
                             f"this backbone needs {tuple(v.shape)} (a different ViT size?)")
    vit.load_state_dict({k: state[k] for k in own}, strict=True)


def warn_random_backbone() -> None:
    warnings.warn("the ViT backbone has RANDOM weights (no backbone_weights given): features are not "
                  "DINOv2's. Pass backbone_weights=PATH (a DINOv2 .pth or GAGAvatar.pt) for pretrained ones.",
                  stacklevel=3)
