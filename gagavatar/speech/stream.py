"""The speech model as the audio arrives: ``SpeechModel.generate``'s chunked inference, one chunk
at a time, and the demo engine's smoothing with the few frames of look-ahead it needs.

    stream = SpeechStream(model, style)          # style: [T, D] or None
    for samples in microphone:                   # float32 [n] at model.config.sample_rate, any n
        motion = stream.push(samples)            # [k, D]: the frames this audio completed (k may be 0)
    motion = stream.finish()                     # [k, D]: the rest (the last chunk zero-padded)

What comes out, concatenated, is ``model.generate(all the audio, style)`` exactly: a chunk of
4 s is generated when its last sample arrives, from its own audio and the previous chunk's
motion, as ``generate`` does it. ``SmoothStream`` does the same for ``smooth_motion``: it holds
back the last ``SMOOTH_REACH`` frames until the frames after them (or the end) are known.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gagavatar.speech.postprocess import smooth_motion

# smooth_motion's widest Savitzky-Golay window is 9 frames (the head rotation): a frame is
# final once the 4 frames after it are known (tests/test_speech_stream.py checks it is exact).
SMOOTH_REACH = 4
SMOOTH_WINDOW = 2 * SMOOTH_REACH + 1


class SpeechStream:
    """``SpeechModel.generate`` (batch 1) fed piece by piece. ``samples``: the audio received."""

    def __init__(self, model, style: Tensor | None = None):
        self.model = model
        self.like = model.pos_embed
        self.style = None if style is None else style.to(self.like)[None]  # [1, T, D]
        self.pending: list[Tensor] = []  # audio of the chunk not yet complete, [n] pieces
        self.pending_samples = 0
        self.samples = 0
        self.frames = 0  # motion frames given out so far
        self.context = None
        self.finished = False

    @property
    def chunk_samples(self) -> int:
        return self.model.config.chunk_samples

    @torch.no_grad()
    def push(self, samples) -> Tensor:
        """Mono float samples [n] -> the motion [k, D] of every chunk they complete (k = 0 until
        a chunk is complete; 100 a chunk at the defaults)."""
        if self.finished:
            raise ValueError("the speech stream is finished: start a new one for more audio")
        samples = torch.as_tensor(np.asarray(samples, np.float32)).reshape(-1).to(self.like)
        self.samples += samples.numel()
        self.pending.append(samples)
        self.pending_samples += samples.numel()
        motions = []
        while self.pending_samples >= self.chunk_samples:
            audio = torch.cat(self.pending)
            self.pending = [audio[self.chunk_samples:]]
            self.pending_samples -= self.chunk_samples
            motions.append(self._chunk(audio[:self.chunk_samples]))
        return self._out(motions, self.frames + sum(m.shape[0] for m in motions))

    @torch.no_grad()
    def finish(self) -> Tensor:
        """The motion [k, D] of the last, partial chunk (zero-padded, as ``generate`` pads it),
        cut to ``frame_count(samples)`` frames in all."""
        if self.finished:
            raise ValueError("the speech stream is finished already")
        self.finished = True
        total = self.model.frame_count(self.samples)
        if total == 0:
            raise ValueError("the audio is empty: no samples to drive a motion from")
        motions = []
        if total > self.frames:
            audio = torch.cat(self.pending)
            motions.append(self._chunk(torch.nn.functional.pad(audio, (0, self.chunk_samples - audio.numel()))))
        self.pending = []
        return self._out(motions, total)

    def _chunk(self, audio: Tensor) -> Tensor:
        """One chunk's audio [chunk_samples] -> its motion [chunk_frames, D]."""
        features = self.model.audio_encoder(audio[None])
        if self.context is None:
            self.context = self.model.first_context(self.style, 1, features)
        motion, self.context = self.model.motion_chunk(features, self.context)
        return motion[0]

    def _out(self, motions: list[Tensor], upto: int) -> Tensor:
        out = torch.cat(motions)[:upto - self.frames] if motions else \
            self.like.new_zeros(0, self.model.config.motion_dim)
        self.frames += out.shape[0]
        return out


class SmoothStream:
    """``smooth_motion`` of a motion that arrives piece by piece: ``push(motion [k, D])`` -> the
    smoothed frames that are final [j, D]; ``finish()`` -> the rest. Concatenated: exactly
    ``smooth_motion(whole motion, fix_pose)``."""

    def __init__(self, fix_pose: bool = False):
        self.fix_pose = fix_pose
        self.raw: Tensor | None = None  # the motion from frame ``start`` on
        self.start = 0
        self.done = 0  # smoothed frames given out

    def push(self, motion: Tensor) -> Tensor:
        self.raw = motion if self.raw is None else torch.cat([self.raw, motion])
        return self._smoothed(final=False)

    def finish(self) -> Tensor:
        return self._smoothed(final=True)

    def _smoothed(self, final: bool) -> Tensor:
        """Smooth a window from ``SMOOTH_REACH`` frames before the first frame not given out:
        its frames from there on see what they see in the whole motion (whole windows, the
        same values), and the window starts at frame 0 or a frame whose result is not kept."""
        if self.raw is None:
            return torch.zeros(0)
        end = self.start + self.raw.shape[0]
        upto = end if final else end - SMOOTH_REACH  # the last frames wait for their look-ahead
        if upto <= self.done or (not final and end < SMOOTH_WINDOW):
            return self.raw.new_zeros(0, self.raw.shape[1])
        # at least a whole window (a shorter clip is smoothed with a shorter one), from frame 0
        # or from SMOOTH_REACH frames before the first one given out
        first = max(0, min(self.done - SMOOTH_REACH, end - SMOOTH_WINDOW))
        smoothed = smooth_motion(self.raw[first - self.start:], self.fix_pose)
        out = smoothed[self.done - first:upto - first]
        self.done = upto
        keep = max(0, self.done - SMOOTH_WINDOW)  # what the next window may start from
        self.raw, self.start = self.raw[keep - self.start:], keep
        return out
