"""``SpeakerStream``: a voice drives the avatar as the voice arrives (the service's speak socket).

    stream = SpeakerStream(speaker, source_frame, animator.head, controls)
    for samples in audio_pieces:                       # mono float32 [n] at speaker.sample_rate
        piece = stream.push(samples)                   # None, or (FrameParams [k], vertices [k, V, 3])
    piece = stream.finish()                            # the rest; frame i is at i / speaker.fps seconds

Concatenated, the pieces are ``Speaker.drive`` of the whole audio (tested): the speech model
streams chunk by chunk (``speech.stream.SpeechStream``), the smoothing holds back the few frames
that wait for look-ahead (``SmoothStream``), ``Motion`` keeps its state between pieces, and the
forehead's smoothing over time carries on from the last frame given out.
"""
from __future__ import annotations

import numpy as np
import torch

from gagavatar.data.frame import FrameParams
from gagavatar.reenact.motion import Motion, MotionControls
from gagavatar.reenact.speaker import Speaker


class SpeakerStream:
    """``Speaker.drive`` for one source frame (``source``: FrameParams [1]), piece by piece.
    ``frames``: how many frames were given out so far (the next piece's first index)."""

    def __init__(self, speaker: Speaker, source: FrameParams, head, controls: MotionControls | None = None):
        from gagavatar.speech.stream import SmoothStream, SpeechStream

        speaker.check_head(head)  # before any audio runs through the model
        self.speaker, self.source, self.head = speaker, source, head
        self.speech = SpeechStream(speaker.model, speaker.style)
        self.smooth = SmoothStream(speaker.fix_pose)
        self.motion = Motion(source, controls)
        self.last: torch.Tensor | None = None  # the last frame's vertices given out [1, V, 3]
        self.frames = 0

    @torch.no_grad()
    def push(self, samples: np.ndarray) -> tuple[FrameParams, torch.Tensor] | None:
        """The frames (and their vertices) this audio completed, or None."""
        return self._drive(self.smooth.push(self.speech.push(samples).float().cpu()))

    @torch.no_grad()
    def finish(self) -> tuple[FrameParams, torch.Tensor] | None:
        """The last frames: the audio has ended (an empty stream is a ``ValueError``)."""
        motion = self.smooth.push(self.speech.finish().float().cpu())
        return self._drive(torch.cat([motion, self.smooth.finish()]))

    def _drive(self, motion: torch.Tensor) -> tuple[FrameParams, torch.Tensor] | None:
        """Smoothed motion [k, D] -> (FrameParams [k], vertices [k, V, 3]), as ``Speaker.frames``
        makes them for a whole clip."""
        from gagavatar.speech.postprocess import motion_frames, motion_vertices

        if motion.shape[0] == 0:
            return None
        frames = self.motion(motion_frames(motion, self.source))
        vertices = motion_vertices(frames, self.head, before=self.last)
        self.last = vertices[-1:]
        self.frames += len(frames)
        return frames, vertices
