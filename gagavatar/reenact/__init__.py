"""Driving an avatar: the motion controls (``motion``) and the one engine every command,
the app and the service use (``animator.Animator``); the bundled model (``inputs``). Tracked
inputs and the source-frame rule (``gagavatar.tracking.inputs``) are re-exported here."""
from gagavatar.assets import bundled
from gagavatar.reenact.animator import Animator
from gagavatar.reenact.inputs import (
           BUNDLED_MODEL_NOTE,
           DEFAULT_CHECKPOINT,
           DEMO_DATA, DEMO_SENTENCE,
           parse_color,
)
from gagavatar.reenact.motion import TRANSFER_MODES, Motion, MotionControls, drive
from gagavatar.reenact.speaker import Speaker
from gagavatar.reenact.speaker_stream import SpeakerStream
from gagavatar.tracking.inputs import driver_frames, load_tracked, source_frame

__all__ = ["Animator", "BUNDLED_MODEL_NOTE", "DEFAULT_CHECKPOINT", "DEMO_DATA", "DEMO_SENTENCE", "Motion", "MotionControls", "Speaker",
           "SpeakerStream", "TRANSFER_MODES", "bundled", "drive", "driver_frames", "load_tracked", "parse_color",
           "source_frame"]
