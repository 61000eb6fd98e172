"""A light audio front end: log-mel features and a few residual convolutions.

The ``tiny`` preset's stand-in for wav2vec 2.0: the generator only needs a feature
sequence [B, T, audio_width] per 4 s chunk (it area-pools it to every scale), so a
front end a CPU can train in minutes fits the same slot.

    audio [B, N] (16 kHz) -> normalise (per chunk, as wav2vec) -> |STFT|^2 (25 ms window,
      20 ms hop) -> ``n_mels`` mel bands -> log -> Linear -> ``audio_depth`` x
      (x + GELU(Conv1d k5 (LN(x)))) -> LayerNorm                [B, N/320 + 1, audio_width]
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gagavatar.speech.config import SpeechConfig
from gagavatar.speech.wav2vec import normalize_audio

WINDOW, HOP, N_FFT = 400, 320, 512  # samples at 16 kHz: 25 ms, 20 ms (wav2vec's frame rate)


def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = 16_000) -> np.ndarray:
    """Triangular filters [n_mels, n_fft // 2 + 1] evenly spaced on the HTK mel scale, 0..Nyquist."""
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising, falling = (bins - lower) / (centre - lower), (upper - bins) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(audio: Tensor, filters: Tensor) -> Tensor:
    """Audio [B, N] -> log mel energies [B, N // HOP + 1, n_mels]."""
    window = torch.hann_window(WINDOW, dtype=audio.dtype, device=audio.device)
    spec = torch.stft(audio, N_FFT, HOP, WINDOW, window, center=True, return_complex=True).abs() ** 2
    return torch.log(torch.einsum("mf,bft->btm", filters.to(spec), spec) + 1e-5)


class ConvBlock(nn.Module):
    """x + GELU(Conv1d(LN(x))), kernel 5 (±40 ms per block). [B, T, W] -> [B, T, W]"""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, 5, padding=2)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.gelu(self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2))


class MelFrontend(nn.Module):
    """Audio [B, N] at 16 kHz -> features [B, N // 320 + 1, audio_width] (``audio_frontend="mel"``)."""

    def __init__(self, config: SpeechConfig):
        super().__init__()
        if config.sample_rate != 16_000:
            raise ValueError(f"the mel front end is laid out for 16 kHz audio, not {config.sample_rate} Hz")
        self.register_buffer("filters", torch.from_numpy(mel_filters(config.n_mels)))
        self.proj = nn.Linear(config.n_mels, config.audio_width)
        self.blocks = nn.ModuleList(ConvBlock(config.audio_width) for _ in range(config.audio_depth))
        self.norm = nn.LayerNorm(config.audio_width)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.proj(log_mel(normalize_audio(audio), self.filters))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
