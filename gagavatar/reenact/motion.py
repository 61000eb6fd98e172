"""The motion controls: which of a driver's frames reach the source's avatar, and how.

    motion = Motion(source_frame, MotionControls(relative=True, stabilize=1.0))
    driven = motion(driver_frames)          # FrameParams [F]; call again with the next frames

The source gives the identity (its head shape); the driver gives the face (expression,
jaw, eyes) and the head pose (FLAME's global and neck rotation, translation, and the
camera, where the reference tracker keeps head pose, SPEC §7.1, §9). ``Motion`` keeps
its state between calls (the driver's first frame for relative motion, the smoothing),
so a live stream is driven exactly as the whole video would be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gagavatar.data.format import VideoRecord
from gagavatar.data.frame import FrameParams
from gagavatar.geometry import (Camera, axis_angle_to_matrix, matrix_to_axis_angle, reference_to_viewmat,
                                viewmat_to_reference)
from gagavatar.tracking.inputs import driver_frames, source_frame
from gagavatar.tracking.smoothing import Smoother, weights_for

TRANSFER_MODES = ("all", "expression", "pose")
FACE_FIELDS = ("expression", "jaw_pose", "eye_pose")  # what a face does
ROTATION_FIELDS = ("global_pose", "neck_pose")        # head pose in the head model (axis-angle)


@dataclass
class MotionControls:
    """What of the driver's motion reaches the avatar.

    transfer: "all"; "expression" (keep the source's head pose and camera); "pose"
        (keep the source's expression, jaw and eyes).
    relative: apply the driver's motion relative to its first frame on top of the
        source's own expression and pose (instead of copying it).
    expression_scale, jaw_scale, eye_scale: multipliers on the driver's motion.
    stabilize: smoothing of head pose and eyes over time (0 = off, 1 = the
        reference tracker's smoothed.pkl weights).
    """

    transfer: str = "all"
    relative: bool = False
    expression_scale: float = 1.0
    jaw_scale: float = 1.0
    eye_scale: float = 1.0
    stabilize: float = 0.0

    def __post_init__(self):
        if self.transfer not in TRANSFER_MODES:
            raise ValueError(f"the transfer {self.transfer!r} is not one of {', '.join(TRANSFER_MODES)}")
        for name in ("expression_scale", "jaw_scale", "eye_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or abs(value) > 10:
                raise ValueError(f"the {name.replace('_', ' ')} is {value}: use a finite multiplier between -10 "
                                 f"and 10 (1 = as driven)")
        weights_for(self.stabilize)  # a finite strength in range, or a clear error

    @property
    def scales(self) -> dict[str, float]:
        return {"expression": self.expression_scale, "jaw_pose": self.jaw_scale, "eye_pose": self.eye_scale}


class Motion:
    """Maps consecutive driver frames to the frames that drive one source (``source``: one frame)."""

    def __init__(self, source: FrameParams, controls: MotionControls | None = None):
        if len(source) != 1:
            raise ValueError(f"the source is one frame, got {len(source)}")
        self.source, self.controls = source, controls or MotionControls()
        self.first: FrameParams | None = None  # the driver's first frame (relative motion)
        self.smoother = Smoother(self.controls.stabilize)

    def __call__(self, driver: FrameParams) -> FrameParams:
        c, s, n = self.controls, self.source, len(driver)
        if self.first is None:
            self.first = driver[0]
        d0 = self.first
        out = {"shape": s.shape.expand(n, -1)}
        for name in FACE_FIELDS:
            k = c.scales[name]
            if c.transfer == "pose":
                out[name] = getattr(s, name).expand(n, -1)
            elif c.relative:
                out[name] = getattr(s, name) + k * (getattr(driver, name) - getattr(d0, name))
            else:
                out[name] = k * getattr(driver, name)

        if c.transfer == "expression":  # the source's head pose, as photographed
            for name in ROTATION_FIELDS + ("translation",):
                out[name] = getattr(s, name).expand(n, -1)
            viewmat, K = s.camera.viewmat.expand(n, 4, 4), s.camera.K.expand(n, 3, 3)
        else:
            K = driver.camera.resized(s.camera.width, s.camera.height).K  # the driver's lens, at the source's size
            if c.relative:  # the head moves as the driver's did since its first frame
                for name in ROTATION_FIELDS:
                    R = (axis_angle_to_matrix(getattr(driver, name).double())
                         @ axis_angle_to_matrix(getattr(d0, name).double()).transpose(-1, -2)
                         @ axis_angle_to_matrix(getattr(s, name).double()))
                    out[name] = matrix_to_axis_angle(R).to(s.shape.dtype)
                out["translation"] = s.translation + driver.translation - d0.translation
                # world-to-camera: V_t = V_drv_t V_drv_0^-1 V_src
                viewmat = (driver.camera.viewmat.double() @ torch.linalg.inv(d0.camera.viewmat.double())
                           @ s.camera.viewmat.double()).to(s.camera.viewmat.dtype)
            else:
                for name in ROTATION_FIELDS + ("translation",):
                    out[name] = getattr(driver, name)
                viewmat = driver.camera.viewmat
        if c.stabilize > 0:  # the reference's smoothing, on its own transform (SPEC §9)
            transform, out["eye_pose"] = self.smoother(viewmat_to_reference(viewmat), out["eye_pose"])
            viewmat = reference_to_viewmat(transform)
        return FrameParams(**out, camera=Camera(viewmat, K, s.camera.width, s.camera.height))


def drive(source: VideoRecord, driver: VideoRecord, controls: MotionControls | None = None,
          frame: int | None = None) -> tuple[FrameParams, np.ndarray]:
    """The frames that drive ``source``'s avatar (its frame ``frame``, default ``source_frame``)
    with every frame of ``driver``: (FrameParams [F], repeated [F] bool: the driver frames
    without a face, which repeat the last good one)."""
    frame = source_frame(source) if frame is None else frame
    frames, repeated = driver_frames(driver)
    return Motion(source.frames(frame), controls)(frames), repeated
