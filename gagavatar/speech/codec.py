"""The motion codec (``basic_vae``): motion chunks <-> bits, by multi-scale binary
spherical quantisation (BSQ).

A chunk is ``chunk_frames`` (100) motion frames. The encoder and decoder are token
transformers over [previous chunk | this chunk] (200 tokens) whose mask lets the
previous chunk's tokens see only themselves, so the previous chunk's code never
depends on this one.

Quantising a feature sequence [B, T, C] (C = ``code_dim`` = 32) at scales
(1, 5, 25, 50, 100): for each scale, area-pool the residual to the scale's length,
L2-normalise, take the sign bit (code = +-1/sqrt(C)), linearly upsample the code back to
T and subtract it from the residual. Bits [B, 181, C] are the scales' bits concatenated.
Decoding sums the scales' codes (each upsampled to T).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.speech.config import SpeechConfig


# ---------------------------------------------------------------------- resampling over time
def area(x: Tensor, length: int) -> Tensor:
    """Area-pool [B, T, C] along time to [B, length, C] (identity when the length is T)."""
    if x.shape[1] == length:
        return x
    return F.interpolate(x.transpose(1, 2), size=length, mode="area").transpose(1, 2)


def upsample(x: Tensor, length: int) -> Tensor:
    """Linear interpolation [B, t, C] -> [B, length, C] (align_corners False)."""
    if x.shape[1] == length:
        return x
    return F.interpolate(x.transpose(1, 2), size=length, mode="linear").transpose(1, 2)


# ---------------------------------------------------------------------- the quantiser
def bits_to_codes(bits: Tensor, code_dim: int, dtype: torch.dtype) -> Tensor:
    """Bits {0, 1} [..., C] -> codes +-1/sqrt(C) on the unit sphere."""
    return (bits.to(dtype) * 2 - 1) / math.sqrt(code_dim)


def quantize(features: Tensor, scales: tuple[int, ...]) -> Tensor:
    """Multi-scale BSQ of features [B, T, C] -> bits [B, sum(scales), C] (int64, 0/1)."""
    T, C = features.shape[1], features.shape[2]
    residual, bits = features, []
    for length in scales:
        z = F.normalize(area(residual, length), dim=-1)
        code = torch.where(z > 0, 1.0, -1.0).to(z) / math.sqrt(C)
        # the reference's straight-through form z + (code - z): equal to code up to rounding
        code = z + (code - z)
        bits.append((code > 0).long())
        residual = residual - upsample(code, T)
    return torch.cat(bits, dim=1)


def quantize_for_training(features: Tensor, scales: tuple[int, ...], inv_temperature: float = 100.0
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``quantize`` with gradients (training the codec): features [B, T, C] ->
    (codes summed over scales [B, T, C], straight-through to the features; bits [B, sum, C];
    commitment loss; entropy penalty), the losses averaged over scales.

    BSQ's losses: commitment = |code - z|^2 per token; entropy penalty = (mean per-token
    entropy - entropy of the mean code) / inv_temperature, soft bits p = sigmoid(-4 z sqrt(C)
    x inv_temperature / C): confident bits, all codes used."""
    T, C = features.shape[1], features.shape[2]
    residual, total, bits, commit, entropy = features, 0.0, [], 0.0, 0.0
    plogp = lambda p: -(p * torch.log(p + 1e-8)).sum(-1)  # noqa: E731  entropy of [..., 2]
    for length in scales:
        z = F.normalize(area(residual, length), dim=-1)
        code = torch.where(z > 0, 1.0, -1.0).to(z) / math.sqrt(C)
        commit = commit + ((code - z) ** 2).sum(-1).mean()
        p = torch.sigmoid(-4 * z / math.sqrt(C) * inv_temperature)
        prob = torch.stack([p, 1 - p], -1)  # [B, t, C, 2]
        entropy = entropy + (plogp(prob).sum(-1).mean() - plogp(prob.mean(dim=(0, 1))).sum()) / inv_temperature
        code = z + (code - z).detach()  # straight-through
        bits.append((code > 0).long())
        up = upsample(code, T)
        total = total + up
        residual = residual - up.detach()
    return total, torch.cat(bits, dim=1), commit / len(scales), entropy / len(scales)


def teacher_bits(features: Tensor, scales: tuple[int, ...], flip_ratio: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Targets and inputs for training the generator by teacher forcing: features [B, T, C] ->
    (target bits, input bits), each [B, sum(scales), C].

    Up to ``flip_ratio`` of each coarser scale's bits are flipped in the input (a ratio
    drawn per scale, as the reference's trainer does) and every finer scale's target is
    the quantisation of what the FLIPPED codes leave: the generator learns to correct
    its own mistakes instead of trusting them."""
    T, C = features.shape[1], features.shape[2]
    residual, targets, inputs = features, [], []
    for s, length in enumerate(scales):
        z = F.normalize(area(residual, length), dim=-1)
        bits = (z > 0).long()
        targets.append(bits)
        if s < len(scales) - 1 and flip_ratio > 0:
            ratio = torch.randint(0, int(100 * flip_ratio) + 1, (), generator=generator).item() / 100
            flip = torch.rand(bits.shape, generator=generator) < ratio
            bits = torch.where(flip.to(bits.device), 1 - bits, bits)
        inputs.append(bits)
        residual = residual - upsample(bits_to_codes(bits, C, features.dtype), T)
    return torch.cat(targets, dim=1), torch.cat(inputs, dim=1)


def split_scales(bits: Tensor, scales: tuple[int, ...]) -> list[Tensor]:
    """Bits [B, sum(scales[:k]), C] -> per-scale pieces (the first k scales)."""
    pieces, start = [], 0
    for length in scales:
        if start >= bits.shape[1]:
            break
        pieces.append(bits[:, start:start + length])
        start += length
    return pieces


def dequantize(bits: Tensor, scales: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Bits [B, sum(scales), C] -> features [B, T, C]: the sum of every scale's code upsampled to T."""
    T, C = scales[-1], bits.shape[-1]
    return sum(upsample(bits_to_codes(b, C, dtype), T) for b in split_scales(bits, scales))


def next_scale_inputs(bits: Tensor, scales: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The generator's inputs for the scales after the ones in ``bits``.

    bits [B, sum(scales[:k]), C] (the first k scales) -> [B, sum(scales[1:k+1]), C]: for
    each s < k, the running sum of the codes of scales <= s (each upsampled to T),
    area-pooled to scale s+1's length. Given a whole chunk's bits (k = len(scales)),
    the last scale has no next one: this is the chunk's input for all the scales after
    the first (the previous chunk's tokens).
    """
    T, C = scales[-1], bits.shape[-1]
    total = torch.zeros(bits.shape[0], T, C, dtype=dtype, device=bits.device)
    out = []
    for s, piece in enumerate(split_scales(bits, scales)[:len(scales) - 1]):
        total = total + upsample(bits_to_codes(piece, C, dtype), T)
        out.append(area(total, scales[s + 1]))
    return torch.cat(out, dim=1)


# ---------------------------------------------------------------------- the token transformers
class CodecAttention(nn.Module):
    """x -> Attn(LN(x)) (the residual is added by the caller). [B, L, W] -> [B, L, W]

    Two reference details the weights depend on: the scale is width^-0.5 (not the head
    width's), and ``to_qkv``'s output splits as (qkv, heads, head width).
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = width ** -0.5
        self.norm = nn.LayerNorm(width)
        self.to_qkv = nn.Linear(width, 3 * width, bias=False)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        B, L, W = x.shape
        qkv = self.to_qkv(self.norm(x)).view(B, L, 3, self.heads, W // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(B, L, W))


def mlp(width: int) -> nn.Sequential:
    """Linear -> GELU (tanh) -> Linear, 1.5 x width hidden; no norm before it."""
    hidden = int(1.5 * width)
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))


def run_blocks(blocks: nn.ModuleList, x: Tensor, mask: Tensor | None) -> Tensor:
    """Alternating blocks: x + Attn(LN(x), mask), x + MLP(x)."""
    for block in blocks:
        x = x + (block(x, mask) if isinstance(block, CodecAttention) else block(x))
    return x


def token_blocks(config: SpeechConfig) -> nn.ModuleList:
    return nn.ModuleList(m for _ in range(config.codec_depth)
                         for m in (CodecAttention(config.codec_width, config.codec_heads), mlp(config.codec_width)))


class CodecEncoder(nn.Module):
    """Normalised motion [B, L, motion_dim] -> features [B, L, code_dim]."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        self.inp_mapping = nn.Sequential(nn.Linear(config.motion_dim, config.codec_width), nn.LeakyReLU(0.2))
        self.code_mapping = nn.Linear(config.codec_width, config.code_dim)
        self.encoder_transformer = token_blocks(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.code_mapping(run_blocks(self.encoder_transformer, self.inp_mapping(x), mask))


class CodecDecoder(nn.Module):
    """Features [B, L, code_dim] -> normalised motion [B, L, motion_dim]."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        self.inp_mapping = nn.Sequential(nn.Linear(config.code_dim, config.codec_width), nn.LeakyReLU(0.2))
        self.out_mapping = nn.Linear(config.codec_width, config.motion_dim)
        self.decoder_transformer = token_blocks(config)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.out_mapping(run_blocks(self.decoder_transformer, self.inp_mapping(x), mask))


def codec_mask(frames: int) -> Tensor:
    """[1, 1, 2F, 2F] additive mask: the previous chunk's F tokens see only themselves,
    this chunk's see everything."""
    blocked = torch.full((frames, frames), -math.inf)
    zero = torch.zeros(frames, frames)
    return torch.cat([torch.cat([zero, blocked], 1), torch.cat([zero, zero], 1)], 0)[None, None]


class MotionCodec(nn.Module):
    """Motion chunks <-> bits (module ``basic_vae`` of the release).

    encode(motion [B, F, 106]) -> bits [B, 181, 32]: a chunk on its own (the mask's
      previous-chunk block).
    decode(prev_bits, bits) -> motion [B, F, 106] of the chunk ``bits`` codes, decoded
      after the chunk ``prev_bits`` codes.
    """

    def __init__(self, config: SpeechConfig):
        super().__init__()
        F_ = config.chunk_frames
        self.scales = tuple(config.scales)
        self.float32_features = config.codec_float32_features
        self.encoder = CodecEncoder(config)
        self.decoder = CodecDecoder(config)
        self.enc_pos_embed = nn.Parameter(torch.zeros(1, 2 * F_, config.motion_dim))
        self.dec_pos_embed = nn.Parameter(torch.zeros(1, 2 * F_, config.code_dim))
        self.register_buffer("attn_mask", codec_mask(F_))
        self.register_buffer("motion_mean", torch.zeros(config.motion_dim))
        self.register_buffer("motion_std", torch.ones(config.motion_dim))

    def feature_dtype(self, like: Tensor) -> torch.dtype:
        """float32 (the reference's ``bits.float()``) or the model's dtype (``codec_float32_features``)."""
        return torch.float32 if self.float32_features else like.dtype

    def encode(self, motion: Tensor) -> Tensor:
        """Motion [B, F, motion_dim] -> bits [B, sum(scales), code_dim]."""
        F_ = motion.shape[1]
        x = (motion - self.motion_mean) / self.motion_std + self.enc_pos_embed[:, :F_]
        return quantize(self.encoder(x, self.attn_mask[:, :, :F_, :F_]), self.scales)

    def decode(self, prev_bits: Tensor, bits: Tensor) -> Tensor:
        """Bits of the previous and this chunk -> this chunk's motion [B, F, motion_dim]."""
        dtype = self.feature_dtype(self.dec_pos_embed)
        x = torch.cat([dequantize(prev_bits, self.scales, dtype), dequantize(bits, self.scales, dtype)], 1)
        out = self.decoder(x.to(self.dec_pos_embed.dtype) + self.dec_pos_embed, self.attn_mask)
        return (out * self.motion_std + self.motion_mean)[:, self.scales[-1]:]

    def next_scale_inputs(self, bits: Tensor) -> Tensor:
        """``next_scale_inputs`` in this codec's feature dtype, cast to the model's."""
        dtype = self.feature_dtype(self.dec_pos_embed)
        return next_scale_inputs(bits, self.scales, dtype).to(self.dec_pos_embed.dtype)
