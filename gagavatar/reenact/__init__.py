"""Driving an avatar: tracked inputs (``inputs``), the motion controls (``motion``) and the
one engine every command, the app and the service use (``animator.Animator``)."""
from gagavatar.reenact.animator import Animator
from gagavatar.reenact.inputs import (BUNDLED_MODEL_NOTE, DEFAULT_CHECKPOINT, DEMO_DATA, bundled, driver_frames,
                                      load_tracked, parse_color, source_frame)
from gagavatar.reenact.motion import TRANSFER_MODES, Motion, MotionControls, drive

__all__ = ["Animator", "BUNDLED_MODEL_NOTE", "DEFAULT_CHECKPOINT", "DEMO_DATA", "Motion", "MotionControls",
           "TRANSFER_MODES", "bundled", "drive", "driver_frames", "load_tracked", "parse_color", "source_frame"]
