"""The neural renderer (refiner): a StyleUNet that turns the 32-channel splat into RGB.

This is the reference's ``upsampler`` (SPEC §7.9), parameter for parameter, so the
released ``upsampler.*`` tensors load into it directly:

- a UNet encoder of bilinear ResBlocks, ``out_size`` down to 4x4
  (``conv_body_first``, ``conv_body_down.*``, ``final_conv``);
- a style code = ``final_linear`` of the flattened 4x4 map;
- a UNet decoder of bilinear ResBlocks back up to ``out_size`` (``conv_body_up.*``),
  each level producing SFT scale and shift maps (``condition_scale.*``,
  ``condition_shift.*``);
- a StyleGAN2 generator (``stylegan_decoder.*``, the "clean" variant: plain
  ``nn.Linear``/bilinear resampling, no equalised lr, no upfirdn2d blur): 8-layer style
  MLP, constant 4x4 input, modulated + demodulated 3x3 convs (the first of each level
  upsamples its input bilinearly x2), noise injection, ToRGB skips; the SFT maps act
  after the first conv of each level as ``out * scale + shift``;
- a final sigmoid.

Reference quirks, kept as documented options:
- noise: the reference draws fresh noise in every forward; the checkpoint also stores
  fixed buffers ``stylegan_decoder.noises.noise0..N``. ``forward(noise="stored")`` (the
  default) uses the buffers, so the output is deterministic; ``noise="random"`` is the
  reference's behaviour.
- ``toRGB.*``: the reference builds a 1x1 conv per UNet level that its forward never
  calls (so those 3,045 parameters never get a gradient). ``RefinerConfig.unet_to_rgb``
  keeps them so the released checkpoint loads; smaller presets may turn them off.

Training uses a 10x smaller learning rate on the style MLP and ``final_linear``
(SPEC §7.11): see ``LOW_LR_PREFIXES`` / ``StyleUNet.low_lr_parameters()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# Channels of the StyleGAN2 decoder per resolution at narrow = 1 (the reference's table,
# StyleGAN2's channel_multiplier = 2). The UNet uses half of these at every resolution,
# so that its SFT maps (2x its channels) match the decoder's width.
_DECODER_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}

# Parameter-name prefixes (relative to StyleUNet) that the reference trains at 0.1x lr.
LOW_LR_PREFIXES = ("final_linear.", "stylegan_decoder.style_mlp.")


@dataclass
class RefinerConfig:
    """Sizes of the StyleUNet refiner. The defaults are the reference's ``upsampler``.

    in_size:        resolution the network is built for on the input side; equal to
                    ``out_size`` or ``2 * out_size`` (then one extra down ResBlock).
    out_size:       output resolution (power of two, 8..1024). Inputs smaller than this
                    are first resized to it (bilinear), as the reference does.
    in_dim:         input channels (the splatted feature channels).
    out_dim:        output channels (RGB).
    num_style_feat: width of the style code and the style MLP.
    num_mlp:        layers of the style MLP.
    narrow:         channel width factor on every conv layer (1.0 = reference).
    activation:     final sigmoid (the reference: True).
    unet_to_rgb:    build the reference's unused per-level ``toRGB`` convs (needed to
                    load the released checkpoint; they receive no gradient).
    """

    in_size: int = 512
    out_size: int = 512
    in_dim: int = 32
    out_dim: int = 3
    num_style_feat: int = 512
    num_mlp: int = 8
    narrow: float = 1.0
    activation: bool = True
    unet_to_rgb: bool = True

    @classmethod
    def paper(cls) -> "RefinerConfig":
        """The reference's upsampler: StyleUNet(512, 512, 32, 3), 48,675,388 parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> "RefinerConfig":
        """The ``tiny`` preset's refiner, CPU-trainable: 128x128, 16 channels in, 1/16 of the
        channels, 64-wide style code."""
        return cls(in_size=128, out_size=128, in_dim=16, num_style_feat=64, narrow=0.0625, unet_to_rgb=False)

    def decoder_channels(self) -> dict[int, int]:
        """StyleGAN2 decoder channels per resolution {4: C4, 8: C8, ..., out_size: C}."""
        return {r: int(c * self.narrow) for r, c in _DECODER_CHANNELS.items()}

    def unet_channels(self) -> dict[int, int]:
        """UNet channels per resolution: half the decoder's."""
        return {r: c // 2 for r, c in self.decoder_channels().items()}

    def validate(self) -> None:
        sizes = sorted(_DECODER_CHANNELS)
        if self.out_size not in sizes or self.out_size < 8:
            raise ValueError(f"RefinerConfig.out_size={self.out_size}: use a power of two in 8..1024")
        if self.in_size not in (self.out_size, 2 * self.out_size) or self.in_size > 1024:
            raise ValueError(
                f"RefinerConfig.in_size={self.in_size}: use out_size ({self.out_size}) or 2 * out_size (<= 1024)"
            )
        narrowest = min(c for r, c in self.unet_channels().items() if r <= self.in_size)
        if narrowest < 1:
            raise ValueError(f"RefinerConfig.narrow={self.narrow} leaves a layer with no channels: increase it")
        for name in ("in_dim", "out_dim", "num_style_feat", "num_mlp"):
            if getattr(self, name) < 1:
                raise ValueError(f"RefinerConfig.{name} must be >= 1, got {getattr(self, name)}")


def _resize2x(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resampling by ``factor`` (2 or 0.5), half-pixel centres (align_corners=False)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """UNet block: conv3x3 -> lrelu -> resize -> conv3x3 -> lrelu, plus a resized 1x1 skip.

    [B, Cin, H, W] -> [B, Cout, H*f, W*f] with f = 0.5 (``mode="down"``) or 2 (``"up"``).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str):
        super().__init__()
        if mode not in ("down", "up"):
            raise ValueError(f"ResBlock mode must be 'down' or 'up', got {mode!r}")
        self.factor = 0.5 if mode == "down" else 2.0
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.leaky_relu(self.conv2(_resize2x(out, self.factor)), 0.2)
        return out + self.skip(_resize2x(x, self.factor))


def _kaiming_init_(linear: nn.Linear, bias: float, **kwargs) -> nn.Linear:
    """The reference's ``default_init_weights`` for one Linear layer."""
    with torch.no_grad():
        nn.init.kaiming_normal_(linear.weight, mode="fan_in", **kwargs)
        linear.bias.fill_(bias)
    return linear


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv (no bias): weight W [1, Cout, Cin, k, k] scaled per input
    channel by s = modulation(style), optionally demodulated per output channel:
    W'_oi = W_oi s_i / sqrt(sum_i,k (W_oi s_i)^2 + eps). ``upsample``: the input is first
    resized x2 (bilinear).

    Computed as conv(x * s, W) * demod, which equals the reference's per-sample-weight
    grouped conv exactly in real arithmetic and runs one shared conv for the batch.
    x [B, Cin, H, W], style [B, S] -> [B, Cout, H', W'].
    """

    def __init__(self, in_channels, out_channels, kernel_size, num_style_feat, demodulate=True, upsample=False, eps=1e-8):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.modulation = _kaiming_init_(nn.Linear(num_style_feat, in_channels), bias=1.0, a=0, nonlinearity="linear")
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # [B, Cin]
        x = x * s[:, :, None, None]  # per-channel scaling commutes with the bilinear resize
        if self.upsample:
            x = _resize2x(x, 2.0)
        weight = self.weight[0]  # [Cout, Cin, k, k]
        out = F.conv2d(x, weight, padding=self.kernel_size // 2)
        if self.demodulate:
            energy = s.square() @ weight.square().sum(dim=(2, 3)).t()  # [B, Cout]
            out = out * torch.rsqrt(energy + self.eps)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, upsample={self.upsample}")


class StyleConv(nn.Module):
    """Modulated conv * sqrt(2), + weight * noise, + bias, leaky ReLU 0.2.

    Parameters: ``weight`` [1] (noise strength), ``bias`` [1, Cout, 1, 1].
    """

    def __init__(self, in_channels, out_channels, num_style_feat, upsample=False):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat, True, upsample)
        self.weight = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """noise: [1 or B, 1, H', W'], or None to draw fresh standard-normal noise."""
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            noise = out.new_empty(out.shape[0], 1, *out.shape[2:]).normal_()
        return F.leaky_relu(out + self.weight * noise + self.bias, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias, plus the previous RGB skip
    (bilinearly upsampled x2 when ``upsample``)."""

    def __init__(self, in_channels, out_channels, num_style_feat, upsample=True):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + (_resize2x(skip, 2.0) if self.upsample else skip)
        return out


class NormStyleCode(nn.Module):
    """x / sqrt(mean(x^2) + 1e-8) over the feature dimension. [B, S] -> [B, S]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class ConstantInput(nn.Module):
    """A learned [1, C, size, size] map, repeated over the batch."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class SFTStyleGAN2Generator(nn.Module):
    """StyleGAN2 generator with spatial feature transforms (the reference's
    ``StyleGAN2GeneratorCSFT``): style code [B, S] + per-level (scale, shift) maps ->
    [B, out_dim, out_size, out_size] (no final activation).

    Layer order: constant 4x4 -> ``style_conv1`` (noise0) -> ``to_rgb1``; then per level
    k (resolution 8 * 2^k): ``style_convs[2k]`` (upsample x2, noise 2k+1), SFT
    ``out * scale_k + shift_k``, ``style_convs[2k+1]`` (noise 2k+2), ``to_rgbs[k]`` adds
    to the upsampled RGB skip. Every layer uses the same style (one latent, no mixing).
    """

    def __init__(self, config: RefinerConfig):
        super().__init__()
        channels = config.decoder_channels()
        s = config.num_style_feat
        self.log_size = int(math.log2(config.out_size))
        self.num_noises = 2 * (self.log_size - 2) + 1

        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(config.num_mlp):
            linear = _kaiming_init_(nn.Linear(s, s), bias=0.0, a=0.2, nonlinearity="leaky_relu")
            mlp += [linear, nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)

        self.constant_input = ConstantInput(channels[4], 4)
        self.style_conv1 = StyleConv(channels[4], channels[4], s, upsample=False)
        self.to_rgb1 = ToRGB(channels[4], config.out_dim, s, upsample=False)

        # Fixed noise maps: noise0 at 4x4, then two per level at that level's resolution.
        self.noises = nn.Module()
        for i in range(self.num_noises):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, res, res))

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = channels[4]
        for level in range(3, self.log_size + 1):
            out_ch = channels[2**level]
            self.style_convs.append(StyleConv(in_ch, out_ch, s, upsample=True))
            self.style_convs.append(StyleConv(out_ch, out_ch, s, upsample=False))
            self.to_rgbs.append(ToRGB(out_ch, config.out_dim, s, upsample=True))
            in_ch = out_ch

    def forward(self, style_code: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]],
                stored_noise: bool = True) -> torch.Tensor:
        """style_code [B, S]; conditions[k] = (scale, shift), each [B, C_k, 8*2^k, 8*2^k]."""
        if len(conditions) != len(self.to_rgbs):
            raise ValueError(f"expected {len(self.to_rgbs)} SFT levels, got {len(conditions)}")
        if stored_noise:
            noise = [getattr(self.noises, f"noise{i}") for i in range(self.num_noises)]
        else:
            noise = [None] * self.num_noises
        w = self.style_mlp(style_code)
        out = self.constant_input(w.shape[0])
        out = self.style_conv1(out, w, noise[0])
        skip = self.to_rgb1(out, w)
        for k, (scale, shift) in enumerate(conditions):
            out = self.style_convs[2 * k](out, w, noise[2 * k + 1])
            out = out * scale + shift
            out = self.style_convs[2 * k + 1](out, w, noise[2 * k + 2])
            skip = self.to_rgbs[k](out, w, skip)
        return skip


def _sft_branch(channels: int) -> nn.Sequential:
    """conv3x3 C->C, lrelu 0.2, conv3x3 C->2C (indices 0 and 2 hold the weights)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, 2 * channels, 3, 1, 1))


class StyleUNet(nn.Module):
    """The refiner: [B, in_dim, H, W] splat features -> [B, out_dim, out_size, out_size].

    ``StyleUNet()`` / ``StyleUNet(RefinerConfig.paper())`` is the reference's
    ``StyleUNet(in_size=512, out_size=512, in_dim=32, out_dim=3)``; its ``state_dict``
    keys equal the checkpoint's ``upsampler.*`` names with the prefix removed.
    """

    def __init__(self, config: RefinerConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else RefinerConfig()
        config.validate()
        channels = config.unet_channels()
        self.log_size = int(math.log2(config.out_size))
        top = channels[config.out_size]

        if config.in_size <= config.out_size:
            self.conv_body_first = nn.Conv2d(config.in_dim, top, 1)
        else:  # input at 2x the output size: one more down block first
            self.conv_body_first = nn.ModuleList([
                nn.Conv2d(config.in_dim, channels[config.in_size], 1),
                ResBlock(channels[config.in_size], top, mode="down"),
            ])
        self.conv_body_down = nn.ModuleList()
        in_ch = top
        for level in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_ch, channels[2 ** (level - 1)], mode="down"))
            in_ch = channels[2 ** (level - 1)]
        self.final_conv = nn.Conv2d(in_ch, channels[4], 3, 1, 1)

        self.conv_body_up = nn.ModuleList()
        in_ch = channels[4]
        for level in range(3, self.log_size + 1):
            self.conv_body_up.append(ResBlock(in_ch, channels[2**level], mode="up"))
            in_ch = channels[2**level]
        if config.unet_to_rgb:
            self.toRGB = nn.ModuleList(nn.Conv2d(channels[2**lv], 3, 1) for lv in range(3, self.log_size + 1))

        self.final_linear = nn.Linear(channels[4] * 4 * 4, config.num_style_feat)
        self.stylegan_decoder = SFTStyleGAN2Generator(config)
        levels = [channels[2**lv] for lv in range(3, self.log_size + 1)]
        self.condition_scale = nn.ModuleList(_sft_branch(c) for c in levels)
        self.condition_shift = nn.ModuleList(_sft_branch(c) for c in levels)

    def forward(self, x: torch.Tensor, noise: str = "stored", return_logits: bool = False) -> torch.Tensor:
        """x [B, in_dim, H, H] -> image [B, out_dim, out_size, out_size] in (0, 1).

        H < out_size is resized to out_size (bilinear, align_corners=False) first.
        noise: "stored" (fixed buffers, deterministic) or "random" (fresh every call, as
        the reference does). return_logits: the values before the final sigmoid.
        """
        cfg = self.config
        if noise not in ("stored", "random"):
            raise ValueError(f"noise must be 'stored' or 'random', got {noise!r}")
        if x.ndim != 4 or x.shape[1] != cfg.in_dim or x.shape[2] != x.shape[3]:
            raise ValueError(f"refiner input must be [B, {cfg.in_dim}, H, H], got {tuple(x.shape)}")
        if x.shape[-1] < cfg.out_size:
            x = F.interpolate(x, size=(cfg.out_size, cfg.out_size), mode="bilinear", align_corners=False)
        expected = max(cfg.in_size, cfg.out_size)
        if x.shape[-1] != expected:
            raise ValueError(f"refiner input is {x.shape[-1]}x{x.shape[-1]}; this refiner takes {expected}x{expected} "
                             f"(or smaller, resized to {cfg.out_size})")

        # UNet encoder down to 4x4, keeping each level's output for the decoder.
        if isinstance(self.conv_body_first, nn.ModuleList):
            feat = self.conv_body_first[1](F.leaky_relu(self.conv_body_first[0](x), 0.2))
        else:
            feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        style_code = self.final_linear(feat.flatten(1))

        # UNet decoder: each level's features give the SFT maps of the same resolution.
        conditions = []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[-1 - i])
            conditions.append((self.condition_scale[i](feat), self.condition_shift[i](feat)))

        logits = self.stylegan_decoder(style_code, conditions, stored_noise=(noise == "stored"))
        if return_logits or not cfg.activation:
            return logits
        return torch.sigmoid(logits)

    def low_lr_parameters(self) -> list[nn.Parameter]:
        """The parameters the reference trains at 0.1x learning rate: ``final_linear.*`` and
        ``stylegan_decoder.style_mlp.*`` (LOW_LR_PREFIXES)."""
        return [p for n, p in self.named_parameters() if n.startswith(LOW_LR_PREFIXES)]
