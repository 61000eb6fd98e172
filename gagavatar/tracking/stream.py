"""Tracking a stream one frame at a time (a webcam, a live socket), with the tracker's own
stages: landmarks -> the reference's framing -> a short fit with the shape kept after the
first face. ``gagavatar live``, the service's webcam sessions and ``bench track`` use it."""
from __future__ import annotations

import numpy as np
import torch

from gagavatar.tracking import framing
from gagavatar.tracking.fitting import FitConfig, fit_landmarks
from gagavatar.tracking.landmarks import LandmarkDetector
from gagavatar.tracking.matting import Segmenter
from gagavatar.tracking.rig import LandmarkRig


class FrameTracker:
    """One frame at a time: landmarks -> the reference's framing -> a short fit (the shape is
    fitted on the first face, then kept) -> ``FrameParams`` of one frame, or None without a face."""

    def __init__(self, head, size: int = 512):
        self.head, self.size, self.shape = head, size, None
        self.detector, self.segmenter = LandmarkDetector(video=True), Segmenter()
        self.framer = framing.Framer(self.segmenter, size, framing.BOX_EMA)
        self.config = FitConfig(iterations=3)
        with torch.no_grad():
            self.rig = LandmarkRig(head, n_shape=self.config.shape_components)  # once, not per frame

    def __call__(self, frame: np.ndarray):
        landmarks = self.detector(frame)
        if landmarks is None:
            return None
        framed = self.framer(frame, landmarks)
        fit = fit_landmarks(self.head, framed.landmarks.points[None, :, :2], self.size, self.config,
                            shape=self.shape, rig=self.rig)
        self.shape = fit.shape if self.shape is None else self.shape
        return fit.frames(self.size)

    def close(self) -> None:
        self.detector.close()
        self.segmenter.close()
