"""Speech-to-motion configurations: one dataclass, the ``paper`` preset (ARTalk's release).

``paper`` is the released ``ARTalk_wav2vec.pt`` (SPEC §11 "Config"): a wav2vec 2.0
XLS-R 300M audio front end, the style encoder, the motion codec and the 12-block
generator, with every quirk of the reference code those weights depend on. The audio
front end's sizes are fields, so a lighter front end is a preset, not new code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class SpeechConfig:
    """Every size and switch of the speech -> motion model (defaults = the release).

    Timing: ``sample_rate`` Hz of mono audio in, ``fps`` motion frames per second out;
      one chunk = ``scales[-1]`` motion frames (4 s at the defaults).
    Motion: ``motion_dim`` = 100 expression + 3 head rotation + 3 jaw (SPEC §11).
    Audio front end: ``audio_frontend`` "wav2vec2" (the release) or "mel" (``frontend.MelFrontend``:
      ``n_mels`` log-mel bands every 20 ms, ``audio_depth`` residual convs of width ``audio_width``;
      light enough to train on a CPU). wav2vec 2.0 layout: ``conv_channels`` / ``conv_kernels`` /
      ``conv_strides`` of the feature extractor (one conv, LayerNorm, GELU each);
      ``audio_width`` (the feature size the generator is conditioned on),
      ``audio_depth`` pre-LN layers of ``audio_heads`` heads and ``audio_ff`` hidden units;
      the weight-normed positional conv ``pos_conv_kernel`` / ``pos_conv_groups``.
    Style encoder: ``style_width``, ``style_depth`` post-norm layers of ``style_heads``
      heads and ``style_ff`` hidden units; ``style_pe_len`` rows of sinusoids.
    Motion codec: ``code_dim`` bits per token, ``codec_width`` / ``codec_depth`` /
      ``codec_heads`` token transformers, ``scales`` tokens per scale (the last = frames
      per chunk).
    Generator: ``width`` / ``depth`` / ``heads`` AdaLN blocks (MLP ``mlp_ratio`` x width),
      ``prev_ratio`` previous chunks each chunk attends to.

    Head: ``head`` names the head model whose expression space the motion is in: "flame"
      (ARTalk's release: any FLAME-layout file, 5023 vertices) or a recorded head id
      (``HeadModel.id``, e.g. the bundled head's "synthetic-flame-v1"); a Speaker refuses
      any other head.

    Reference quirks (``paper`` keeps them):
      style_pe_row          True: ONE sinusoid row ``pe[T]`` (T = style length) is added
                            to every style frame (the reference); False: row t to frame t.
      codec_float32_features  True: the codec's multi-scale features are built in float32
                            whatever the model's dtype (the reference's ``bits.float()``);
                            False: in the model's dtype (float64 parity needs this).
    """

    name: str = "paper"
    sample_rate: int = 16_000
    fps: int = 25
    motion_dim: int = 106
    head: str = "flame"
    # audio front end (wav2vec 2.0 XLS-R 300M)
    audio_frontend: str = "wav2vec2"
    n_mels: int = 40
    conv_channels: tuple[int, ...] = (512,) * 7
    conv_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    audio_width: int = 1024
    audio_depth: int = 24
    audio_heads: int = 16
    audio_ff: int = 4096
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    # style encoder
    style_width: int = 128
    style_depth: int = 4
    style_heads: int = 4
    style_ff: int = 512
    style_pe_len: int = 600
    # motion codec
    code_dim: int = 32
    codec_width: int = 512
    codec_depth: int = 8
    codec_heads: int = 8
    scales: tuple[int, ...] = (1, 5, 25, 50, 100)
    # generator
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    prev_ratio: int = 1
    # reference quirks
    style_pe_row: bool = True
    codec_float32_features: bool = True

    @property
    def chunk_frames(self) -> int:
        """Motion frames per chunk (the finest scale)."""
        return self.scales[-1]

    @property
    def chunk_samples(self) -> int:
        """Audio samples per chunk (64,000 at the defaults: 4 s)."""
        return self.chunk_frames * self.sample_rate // self.fps

    @property
    def tokens(self) -> int:
        """Generator tokens per chunk: the sum of the scales (181)."""
        return sum(self.scales)

    def replace(self, **changes) -> "SpeechConfig":
        return dataclasses.replace(self, **changes)


def paper() -> SpeechConfig:
    """The released ARTalk_wav2vec.pt (assets/config.json of xg-chu/ARTalk)."""
    return SpeechConfig()


def tiny() -> SpeechConfig:
    """A model that trains on 2 CPU cores in minutes: the same generator, codec and chunking
    (4 s chunks, scales 1..100), every part narrow, and a log-mel front end in place of
    wav2vec 2.0 (0.95 M parameters in all, against 490 M). Its motion is the bundled
    head's: 17 named expressions + head rotation + jaw (23); ``replace(head=..., motion_dim=...)``
    for another head."""
    from gagavatar.head import BUNDLED_HEAD_ID
    from gagavatar.synthetic.basis_names import EXPRESSIONS

    return SpeechConfig(
        name="tiny", motion_dim=len(EXPRESSIONS) + 6, head=BUNDLED_HEAD_ID,
        audio_frontend="mel", n_mels=40, audio_width=96, audio_depth=3,
        style_width=48, style_depth=1, style_heads=4, style_ff=96,
        code_dim=16, codec_width=96, codec_depth=2, codec_heads=4,
        width=96, depth=3, heads=4, mlp_ratio=3.0, style_pe_row=False)


PRESETS = {"paper": paper, "tiny": tiny}


def preset_config(name: str) -> SpeechConfig:
    """A preset by name."""
    if name not in PRESETS:
        raise ValueError(f"unknown speech preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
