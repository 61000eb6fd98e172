"""The bundled demonstration model and data, and the background colour the commands take.
(Tracked inputs and the source-frame rule live in ``gagavatar.tracking.inputs``.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gagavatar.assets import bundled

DEFAULT_CHECKPOINT = "demo/tiny.safetensors"  # the bundled demonstration model
BUNDLED_MODEL_NOTE = (
    "The bundled model is a small demonstration model trained only on synthetic heads: real photos come out "
    "blurry and unlike the person. For real results use the released GAGAvatar.pt + FLAME 2020 (README: 'Using the "
    "released GAGAvatar checkpoint'), or personalise it on a video of the person: gagavatar personalize --video CLIP")
DEMO_DATA = "demo/clips"  # bundled tracked clips: video "source" (1 frame) and "driver"
DEMO_SENTENCE = "speech/demo_sentence.wav"  # espeak-ng, a voice the bundled speech model never heard


def is_bundled_model(checkpoint) -> bool:
    """True when ``checkpoint`` (a path, or None for the default) is the bundled demonstration model."""
    return checkpoint is None or Path(checkpoint).resolve() == bundled(DEFAULT_CHECKPOINT).resolve()


def parse_color(value) -> tuple[float, float, float]:
    """A colour as RGB floats in [0, 1] from "#rrggbb", "rgb(r, g, b)", "rgba(r, g, b, a)",
    "R,G,B" (0-255, or 0-1 when all <= 1) or a sequence of three numbers (the CLI's
    --background and the app's colour picker)."""
    if value is None or value == "":
        return (0.0, 0.0, 0.0)
    if isinstance(value, str):
        s = value.strip().lower()
        if s.startswith("#") and len(s) in (4, 7):
            h = s[1:] if len(s) == 7 else "".join(c * 2 for c in s[1:])
            try:
                return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
            except ValueError:
                pass
        else:
            s = s.removeprefix("rgba").removeprefix("rgb").strip("() ")
            try:
                parts = [float(p) for p in s.split(",")][:3]
            except ValueError:
                parts = []
            if len(parts) == 3:
                value = parts
    if not isinstance(value, str):
        c = np.asarray(value, float).reshape(-1)
        if c.size == 3 and np.all((c >= 0) & (c <= 255)):
            return tuple(float(x) for x in (c if c.max() <= 1.0 else c / 255.0))
    raise ValueError(f"background {value!r}: give a colour as #rrggbb or R,G,B (0-255)")
