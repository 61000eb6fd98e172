"""The speech -> motion model (ARTalk): a VAR-style generator of motion-codec bits,
conditioned on audio features, chunk by chunk.

One chunk = 100 motion frames = 4 s of audio. For each chunk:

1. audio features [B, 199, 1024] area-pooled to every scale's length and concatenated:
   the per-token condition [B, 181, 1024];
2. the generator predicts the chunk's bits scale by scale (1, 5, 25, 50, 100 tokens):
   the first token is the style condition; the tokens of scale s+1 are the codes decoded
   so far, pooled to its length (``MotionCodec.next_scale_inputs``). Every step reruns
   the blocks over all tokens so far (block-causal mask), reading the previous chunk's
   181 tokens as extra keys and values; bits are the argmax of each logit pair
   (deterministic, no sampling);
3. the codec decodes [previous | this] and keeps this chunk's motion; that motion,
   re-encoded, is the next chunk's previous state (the first chunk's: zero motion).

    model = SpeechModel(paper())           # or weights.load_speech_model("ARTalk_wav2vec.pt")
    motion = model.generate(audio_16k, style_motion)     # [F, 106], 25 fps
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.speech.codec import MotionCodec, area
from gagavatar.speech.config import SpeechConfig, paper
from gagavatar.speech.style import StyleEncoder
from gagavatar.speech.wav2vec import Wav2Vec2


def modulate(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """AdaLN: LayerNorm without affine (eps 1e-6), then x (1 + scale) + shift, per token."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (scale + 1) + shift


class CrossChunkAttention(nn.Module):
    """Self-attention whose keys/values also include the previous chunk's tokens.

    x [B, L, C], prev [B, P, C], mask [1, 1, L, P + L] -> [B, L, C]. Queries and keys are
    L2-normalised and queries scaled by a learned per-head exp(min(s, ln 100)) (VAR's
    "attn_l2_norm"); no further scale. The key has no bias.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
        self.max_scale_mul = math.log(100)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, prev: Tensor, mask: Tensor) -> Tensor:
        B, L, C = x.shape
        split = lambda t: t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)  # noqa: E731 [B, H, *, d]
        both = torch.cat([prev, x], dim=1)
        q, k, v = split(self.query(x)), split(self.key(both)), split(self.value(both))
        q = F.normalize(q, dim=-1) * self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
        k = F.normalize(k, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNBlock(nn.Module):
    """Transformer block modulated per token by the audio condition. x [B, L, C], cond [B, L, D].

    ``ada_lin`` (SiLU, Linear D -> 6C) gives gamma1, gamma2, scale1, scale2, shift1, shift2:
    x += gamma1 Attn(modulate(x, scale1, shift1)); x += gamma2 FFN(modulate(x, scale2, shift2)).
    The previous chunk's tokens enter the attention as they are (no norm, no modulation).
    """

    def __init__(self, width: int, cond_dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.attn = CrossChunkAttention(width, heads)
        self.ffn = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * width))

    def forward(self, x: Tensor, prev: Tensor, cond: Tensor, mask: Tensor) -> Tensor:
        B, L, C = x.shape
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(B, L, 6, C).unbind(2)
        x = x + self.attn(modulate(x, scale1, shift1), prev, mask) * gamma1
        return x + self.ffn(modulate(x, scale2, shift2)) * gamma2


class AdaLNHead(nn.Module):
    """The modulation before the logits: cond -> (scale, shift); LN(x) (1 + scale) + shift."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        B, L, C = x.shape
        scale, shift = self.ada_lin(cond).view(B, L, 2, C).unbind(2)
        return modulate(x, scale, shift)


def generator_mask(scales: tuple[int, ...], prev_ratio: int) -> tuple[Tensor, Tensor]:
    """(additive mask [1, 1, L, prev_ratio L + L], level of each token [1, L]), L = sum(scales).

    A token sees every previous-chunk token and the tokens of its own and coarser scales."""
    level = torch.cat([torch.full((n,), i) for i, n in enumerate(scales)])
    causal = torch.where(level[:, None] >= level[None, :], 0.0, -math.inf)
    L = level.numel()
    return torch.cat([torch.zeros(L, L * prev_ratio), causal], dim=1)[None, None], level[None]


def audio_frontend(config: SpeechConfig) -> nn.Module:
    """The configured audio front end: audio [B, N] -> features [B, T, audio_width]."""
    if config.audio_frontend == "wav2vec2":
        return Wav2Vec2(config)
    if config.audio_frontend == "mel":
        from gagavatar.speech.frontend import MelFrontend

        return MelFrontend(config)
    raise ValueError(f"unknown audio front end {config.audio_frontend!r}: choose wav2vec2 or mel")


class ChunkContext(NamedTuple):
    """What a chunk is generated from besides its audio: the style token [B, 1, W], the
    previous chunk's bits [B, chunk_frames, code_dim] (the codec decodes [previous | this])
    and its tokens [B, prev_ratio x sum(scales), W]."""

    style: Tensor
    prev_bits: Tensor
    prev_tokens: Tensor


class SpeechModel(nn.Module):
    """ARTalk's inference model; module names are the release's (``load_state_dict`` strict).

    Children are registered in the release's order, so ``state_dict()`` lists the file's
    814 tensors in the file's order.
    """

    def __init__(self, config: SpeechConfig | None = None):
        super().__init__()
        c = self.config = paper() if config is None else config
        W = c.width
        self.null_style_cond = nn.Parameter(torch.zeros(1, 1, W))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.tokens, W))
        self.prev_pos_embed = nn.Parameter(torch.zeros(1, c.tokens * c.prev_ratio, W))
        mask, level = generator_mask(tuple(c.scales), c.prev_ratio)
        self.register_buffer("attn_bias_for_masking", mask)
        self.register_buffer("lvl_idx", level)
        self.basic_vae = MotionCodec(c)
        self.vqfeat_embed = nn.Linear(c.code_dim, W)
        self.style_encoder = StyleEncoder(c)
        self.style_cond_embed = nn.Linear(c.style_width, W)
        self.audio_encoder = audio_frontend(c)
        self.attn_blocks = nn.ModuleList(AdaLNBlock(W, c.audio_width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.cond_logits_head = AdaLNHead(W, c.audio_width)
        self.logits_head = nn.Linear(W, 2 * c.code_dim)
        self.lvl_embed = nn.Embedding(len(c.scales), W)

    # ------------------------------------------------------------------ conditions
    def style_condition(self, style_motion: Tensor | None, batch: int = 1) -> Tensor:
        """The first token [B, 1, W]: from a style motion [B, T, 106], or the learned "no style".

        With a style the reference pushes away from the null token: 1.1 s - 0.1 null."""
        if style_motion is None:
            return self.null_style_cond.expand(batch, -1, -1)
        style = self.style_cond_embed(self.style_encoder(style_motion))[:, None]
        return style * 1.1 - self.null_style_cond * 0.1

    def frame_count(self, samples: int) -> int:
        """Motion frames for ``samples`` of audio: ceil(seconds x fps), as the reference computes it."""
        return math.ceil(samples / self.config.sample_rate * self.config.fps)

    def encode_audio(self, audio: Tensor, step=None) -> tuple[list[Tensor], int]:
        """Audio [B, N] -> (features [B, T, D] of each 4 s chunk, motion frame count).

        The audio is zero-padded to whole chunks; each chunk is normalised on its own.
        ``step()``: called after each chunk (progress)."""
        frames = self.frame_count(audio.shape[-1])
        if frames == 0:
            raise ValueError("the audio is empty: no samples to drive a motion from")
        c = self.config
        chunks = math.ceil(frames / c.chunk_frames)
        audio = F.pad(audio, (0, chunks * c.chunk_samples - audio.shape[-1]))
        features = []
        for chunk in audio.split(c.chunk_samples, dim=-1):
            features.append(self.audio_encoder(chunk))
            if step is not None:
                step()
        return features, frames

    def audio_condition(self, features: Tensor) -> Tensor:
        """Chunk features [B, T, D] -> per-token condition [B, sum(scales), D]."""
        return torch.cat([area(features, n) for n in self.config.scales], dim=1)

    def known_chunk_tokens(self, bits: Tensor, style: Tensor) -> Tensor:
        """A finished chunk's tokens [B, sum(scales), W] (style token + its multi-scale inputs)."""
        return torch.cat([style, self.vqfeat_embed(self.basic_vae.next_scale_inputs(bits))], dim=1)

    # ------------------------------------------------------------------ generation
    def predict_bits(self, x: Tensor, cond: Tensor) -> Tensor:
        """Token states [B, L, W] -> bits [B, L, code_dim] (argmax of each logit pair)."""
        logits = self.logits_head(self.cond_logits_head(x, cond))
        return logits.view(*logits.shape[:2], -1, 2).argmax(dim=-1)

    def generate_chunk(self, cond: Tensor, style: Tensor, prev: Tensor, record: list | None = None) -> Tensor:
        """One chunk's bits [B, sum(scales), code_dim], scale by scale.

        cond [B, sum(scales), D]; style [B, 1, W]; prev [B, P, W] (previous chunk tokens with
        their level/position embeddings). ``record``: a list each step's bits [B, L, C] are
        appended to (all positions so far, as the reference recomputes them)."""
        scales = self.config.scales
        level_pos = self.lvl_embed(self.lvl_idx) + self.pos_embed
        P = prev.shape[1]
        tokens = style
        for s in range(len(scales)):
            L = tokens.shape[1]
            x = tokens + level_pos[:, :L]
            mask = self.attn_bias_for_masking[:, :, :L, :P + L]
            for block in self.attn_blocks:
                x = block(x, prev, cond[:, :L], mask)
            bits = self.predict_bits(x, cond[:, :L])
            if record is not None:
                record.append(bits)
            if s < len(scales) - 1:
                tokens = torch.cat([style, self.vqfeat_embed(self.basic_vae.next_scale_inputs(bits))], dim=1)
        return bits

    def first_context(self, style_motion: Tensor | None, batch: int, like: Tensor) -> ChunkContext:
        """The context of the first chunk: the style token and zero motion as the "previous
        chunk" (``like``: a tensor of the model's dtype and device)."""
        c = self.config
        style = self.style_condition(style_motion, batch)
        prev_bits = self.basic_vae.encode(like.new_zeros(batch, c.chunk_frames, c.motion_dim))
        prev_tokens = self.known_chunk_tokens(prev_bits, style).repeat(1, c.prev_ratio, 1)
        return ChunkContext(style, prev_bits, prev_tokens)

    def motion_chunk(self, features: Tensor, context: ChunkContext,
                     record: list | None = None) -> tuple[Tensor, ChunkContext]:
        """One chunk's features [B, T, D] -> (its motion [B, chunk_frames, motion_dim], the next
        chunk's context). ``generate`` runs it over every chunk; ``stream.SpeechStream`` as each
        chunk's audio arrives."""
        c = self.config
        prev_level_pos = self.lvl_embed(self.lvl_idx).repeat(1, c.prev_ratio, 1) + self.prev_pos_embed
        bits = self.generate_chunk(self.audio_condition(features), context.style,
                                   context.prev_tokens + prev_level_pos, record)
        motion = self.basic_vae.decode(context.prev_bits, bits)
        # the next chunk's previous state: this motion re-encoded (not the predicted bits)
        prev_bits = self.basic_vae.encode(motion)
        prev_tokens = torch.cat([context.prev_tokens[:, c.tokens:], self.known_chunk_tokens(prev_bits, context.style)],
                                dim=1)
        return motion, ChunkContext(context.style, prev_bits, prev_tokens)

    def motions_from_features(self, features: list[Tensor], frames: int, style_motion: Tensor | None = None,
                              record: list | None = None, step=None) -> Tensor:
        """Chunk features (``encode_audio``) -> motion [B, frames, motion_dim] (before smoothing);
        ``step()`` after each chunk."""
        context = self.first_context(style_motion, features[0].shape[0], features[0])
        motions = []
        for chunk in features:
            motion, context = self.motion_chunk(chunk, context, record)
            motions.append(motion)
            if step is not None:
                step()
        return torch.cat(motions, dim=1)[:, :frames]

    @torch.no_grad()
    def generate(self, audio: Tensor, style_motion: Tensor | None = None, step=None) -> Tensor:
        """Audio at ``config.sample_rate`` [N] or [B, N] -> motion [F, 106] or [B, F, 106] at
        ``config.fps``, F = ceil(seconds x fps); ``style_motion`` [T, 106] or [B, T, 106]
        (e.g. a released ``style_motion/*.pt``, T = 50), None for the default style.
        Raw model output: ``postprocess.smooth_motion`` gives what the demo engine drives.
        ``step()``: called twice per 4 s chunk of audio (encoded, then its motion made)."""
        single = audio.dim() == 1
        like = self.pos_embed
        audio = (audio[None] if single else audio).to(like)
        if style_motion is not None:
            style_motion = (style_motion[None] if style_motion.dim() == 2 else style_motion).to(like)
        features, frames = self.encode_audio(audio, step)
        motion = self.motions_from_features(features, frames, style_motion, step=step)
        return motion[0] if single else motion
