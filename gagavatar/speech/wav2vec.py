"""The audio front end: a wav2vec 2.0 encoder (XLS-R 300M in the ``paper`` preset).

Written here in the state-dict layout of the transformers library's ``Wav2Vec2Model``
(the names under ``audio_encoder.`` in ARTalk_wav2vec.pt), with the "stable layer
norm" variant XLS-R uses: pre-LN transformer layers and one LayerNorm at the end.

    audio [B, N] (16 kHz) -> normalise -> 7 strided convs [B, 512, N/320]
      -> LayerNorm + Linear [B, T, 1024] -> + positional conv -> 24 layers -> LayerNorm

A 4 s chunk (64,000 samples) gives T = 199 feature frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from gagavatar.speech.config import SpeechConfig

# older files (torch's old weight_norm hook) store the positional conv's g and v under these names
_OLD_WEIGHT_NORM_NAMES = {"weight_g": "parametrizations.weight.original0",
                          "weight_v": "parametrizations.weight.original1"}


def normalize_audio(audio: Tensor) -> Tensor:
    """Each row [B, N] to zero mean and unit (unbiased) std, as the reference does per chunk."""
    return (audio - audio.mean(-1, keepdim=True)) / (audio.std(-1, keepdim=True) + 1e-6)


class ConvLayer(nn.Module):
    """One feature-extractor step: strided conv, LayerNorm over channels, GELU. [B, C, T] -> [B, C', T']"""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=True)
        self.layer_norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """Raw audio [B, N] -> conv features [B, C, T] (every layer strided: 320 samples per frame)."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        channels = (1,) + tuple(config.conv_channels)
        self.conv_layers = nn.ModuleList(
            ConvLayer(channels[i], channels[i + 1], k, s)
            for i, (k, s) in enumerate(zip(config.conv_kernels, config.conv_strides)))

    def forward(self, audio: Tensor) -> Tensor:
        x = audio[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    """Conv features [B, T, C] -> LayerNorm -> Linear -> [B, T, D]."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(channels)
        self.projection = nn.Linear(channels, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(self.layer_norm(x))


class PositionalConv(nn.Module):
    """Relative position by a wide grouped conv over time. [B, T, D] -> [B, T, D]

    The weight is weight-normed over dim 2 (g [1, 1, K], v [D, D/groups, K]). Files
    from older torch versions name them ``weight_g`` / ``weight_v``; they load too.
    """

    def __init__(self, width: int, kernel: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=groups)
        self.conv = weight_norm(conv, name="weight", dim=2)
        # an even kernel with padding K/2 gives one frame too many: the last is dropped
        self.trim = 1 if kernel % 2 == 0 else 0
        self.register_load_state_dict_pre_hook(_rename_old_weight_norm)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[..., :-self.trim]
        return F.gelu(y).transpose(1, 2)


def _rename_old_weight_norm(module, state_dict, prefix, *args) -> None:
    """load_state_dict hook: ``conv.weight_g/_v`` -> the parametrization's names."""
    for old, new in _OLD_WEIGHT_NORM_NAMES.items():
        if prefix + "conv." + old in state_dict:
            state_dict[prefix + "conv." + new] = state_dict.pop(prefix + "conv." + old)


def upgrade_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with any old ``...pos_conv_embed.conv.weight_g/_v`` names renamed (a new dict)."""
    out = {}
    for name, tensor in state.items():
        head, _, last = name.rpartition(".")
        if last in _OLD_WEIGHT_NORM_NAMES and head.endswith("pos_conv_embed.conv"):
            name = f"{head}.{_OLD_WEIGHT_NORM_NAMES[last]}"
        out[name] = tensor
    return out


class SelfAttention(nn.Module):
    """Plain multi-head self-attention, no mask. [B, T, D] -> [B, T, D]"""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width)  # registered in the file's order (k, v, q)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731 [B, H, T, d]
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)  # scale d^-0.5
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear. [B, T, D] -> [B, T, D]"""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.intermediate_dense = nn.Linear(width, hidden)
        self.output_dense = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + Attn(LN(x)), then x + FF(LN(x)). [B, T, D] -> [B, T, D]"""

    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.attention = SelfAttention(width, heads)
        self.layer_norm = nn.LayerNorm(width)
        self.feed_forward = FeedForward(width, hidden)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.layer_norm(x))
        return x + self.feed_forward(self.final_layer_norm(x))


class Encoder(nn.Module):
    """Positional conv added once, the layers, then one LayerNorm ("stable layer norm")."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        D = config.audio_width
        self.pos_conv_embed = PositionalConv(D, config.pos_conv_kernel, config.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(D)
        self.layers = nn.ModuleList(EncoderLayer(D, config.audio_heads, config.audio_ff)
                                    for _ in range(config.audio_depth))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_conv_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class Wav2Vec2(nn.Module):
    """Audio [B, N] -> features [B, T, audio_width]; each row is normalised on its own first.

    ``masked_spec_embed`` (the pre-training mask token) is kept so the released file loads
    strictly; inference never masks.
    """

    def __init__(self, config: SpeechConfig):
        super().__init__()
        self.masked_spec_embed = nn.Parameter(torch.zeros(config.audio_width))
        self.feature_extractor = FeatureExtractor(config)
        self.feature_projection = FeatureProjection(config.conv_channels[-1], config.audio_width)
        self.encoder = Encoder(config)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.feature_extractor(normalize_audio(audio)).transpose(1, 2)  # [B, T, C]
        return self.encoder(self.feature_projection(x))
