"""The style encoder: 2 s of someone's motion [B, 50, 106] -> one style vector [B, 128].

    normalise by the motion stats -> Linear 106 -> 128 -> + sinusoid -> 4 post-norm
    transformer layers (nn.TransformerEncoderLayer's layout and maths) -> mean over time

The generator turns the vector into its first token (``SpeechModel.style_condition``).
Quirk of the reference (kept in ``paper``): the SAME sinusoid row ``pe[T]``, T = the
sequence length, is added to every frame, not row t to frame t (``style_pe_row``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.speech.config import SpeechConfig


def sinusoid_table(length: int, width: int) -> Tensor:
    """The classic sinusoidal table [1, length, width] (sin on even, cos on odd columns).

    Computed in float32, as the reference's buffer is (its values are what it stores)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table[None]


class PositionalEncoding(nn.Module):
    """Adds the sinusoid: one row ``pe[T]`` to every frame (``row=True``) or row t to frame t."""

    def __init__(self, width: int, length: int, row: bool):
        super().__init__()
        self.row = row
        self.register_buffer("pe", sinusoid_table(length, width))

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        return x + (self.pe[:, T] if self.row else self.pe[:, :T])


class PostNormLayer(nn.Module):
    """x = LN(x + Attn(x)); x = LN(x + FF(x)), FF = Linear -> GELU -> Linear. [B, T, C] -> [B, T, C]

    Names as ``nn.TransformerEncoderLayer`` (``self_attn.in_proj_weight``, ``linear1``, ``norm1`` ...)."""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class StyleTransformer(nn.Module):
    """The layers, under ``transformer.layers.<i>`` as nn.TransformerEncoder names them."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        self.layers = nn.ModuleList(PostNormLayer(config.style_width, config.style_heads, config.style_ff)
                                    for _ in range(config.style_depth))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class StyleEncoder(nn.Module):
    """Motion [B, T, motion_dim] (raw, un-normalised) -> style vector [B, style_width]."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        self.register_buffer("motion_mean", torch.zeros(config.motion_dim))
        self.register_buffer("motion_std", torch.ones(config.motion_dim))
        self.PE = PositionalEncoding(config.style_width, config.style_pe_len, config.style_pe_row)
        self.encoder = nn.ModuleDict({
            "motion_proj": nn.Linear(config.motion_dim, config.style_width),
            "transformer": StyleTransformer(config),
        })

    def forward(self, motion: Tensor) -> Tensor:
        x = self.encoder["motion_proj"]((motion - self.motion_mean) / self.motion_std)
        x = self.encoder["transformer"](self.PE(x))
        return x.mean(dim=1)
