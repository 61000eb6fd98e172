"""The random look of one identity (``Appearance``): skin tone and texture, hair style and
colour or a cap, eye colour, lips, brows, optional glasses, beard and shirt, drawn from
palettes with a seeded generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# sRGB colour palettes (0..255)
SKIN_TONES = [(255, 224, 196), (241, 198, 170), (230, 180, 146), (212, 160, 120), (188, 132, 96),
              (160, 108, 76), (128, 84, 58), (100, 66, 46), (76, 50, 36)]
HAIR_COLOURS = [(22, 18, 16), (40, 28, 22), (70, 46, 30), (105, 72, 46), (150, 112, 72), (205, 172, 112),
                (140, 62, 32), (150, 150, 150), (215, 212, 205)]
HAIR_WEIGHTS = [0.2, 0.2, 0.16, 0.12, 0.08, 0.08, 0.06, 0.06, 0.04]
IRIS_COLOURS = [(70, 42, 24), (45, 28, 18), (70, 105, 150), (80, 115, 70), (125, 95, 50), (115, 125, 135)]
HAIR_STYLES = ("short", "long", "curly", "bun", "cap", "bald", "buzz")
HAIR_STYLE_WEIGHTS = (0.28, 0.22, 0.1, 0.08, 0.12, 0.08, 0.12)


def _colour(c) -> np.ndarray:
    return np.asarray(c, np.float32) / 255.0


@dataclass
class Appearance:
    """The random look of one identity (colours in linear [0,1] RGB-ish sRGB values)."""

    skin: np.ndarray
    hair_style: str
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    brows: np.ndarray
    hairline: float          # forehead hairline height (elevation, radians above the eyes' direction)
    hair_thickness: float    # shell thickness (model units)
    hair_length: float       # how far long hair hangs below the ears (model units)
    cap: np.ndarray | None = None
    glasses: np.ndarray | None = None   # frame colour
    lens_tint: float = 0.0              # opacity of tinted lenses (0 = clear, not drawn)
    beard: float = 0.0                  # beard density (0 = none)
    shirt: np.ndarray | None = None
    freckles: float = 0.0
    texture_seed: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator, hair_styles=HAIR_STYLES, accessories: bool = True) -> "Appearance":
        """A random look; ``hair_styles`` limits the styles, ``accessories=False`` drops
        glasses, beards and shirts (plain heads, e.g. for geometric checks)."""
        t = rng.uniform(0, len(SKIN_TONES) - 1)
        i = int(t)
        skin = (1 - (t - i)) * _colour(SKIN_TONES[i]) + (t - i) * _colour(SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)])
        skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1).astype(np.float32)
        unknown = set(hair_styles) - set(HAIR_STYLES)
        if unknown or not hair_styles:
            raise ValueError(f"hair styles {sorted(unknown) or '()'}: choose from {HAIR_STYLES}")
        weights = np.array([w for h, w in zip(HAIR_STYLES, HAIR_STYLE_WEIGHTS) if h in hair_styles])
        style = str(rng.choice([h for h in HAIR_STYLES if h in hair_styles], p=weights / weights.sum()))
        if rng.random() < 0.05:  # dyed
            hair = np.clip(rng.uniform(0.1, 0.9, 3), 0, 1).astype(np.float32)
        else:
            hair = _colour(HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)]) * rng.uniform(0.85, 1.15)
        hair = np.clip(hair, 0, 1).astype(np.float32)
        lips = skin * np.array([0.88, 0.62, 0.62], np.float32) + np.array([0.06, 0.0, 0.0], np.float32)
        if rng.random() < 0.15:  # lipstick
            lips = np.array([rng.uniform(0.5, 0.85), rng.uniform(0.05, 0.2), rng.uniform(0.1, 0.3)], np.float32)
        brows = np.clip(np.minimum(hair, skin * 0.45) * rng.uniform(0.8, 1.1), 0, 1).astype(np.float32)
        glasses = None
        lens_tint = 0.0
        if rng.random() < 0.22:
            glasses = _colour([(15, 15, 15), (60, 35, 20), (150, 150, 155), (120, 20, 30), (25, 40, 90)][rng.integers(5)])
            lens_tint = float(rng.uniform(0.55, 0.85)) if rng.random() < 0.25 else 0.0
        beard = float(rng.uniform(0.5, 1.0)) if rng.random() < 0.18 else 0.0
        shirt = np.clip(rng.uniform(0.05, 0.9, 3), 0, 1).astype(np.float32) if rng.random() < 0.6 else None
        if not accessories:
            glasses, lens_tint, beard, shirt = None, 0.0, 0.0, None
        return cls(
            skin=skin, hair_style=style, hair=hair,
            iris=np.clip(_colour(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]) * rng.uniform(0.85, 1.15), 0, 1),
            lips=np.clip(lips, 0, 1).astype(np.float32), brows=brows,
            hairline=float(rng.uniform(0.55, 0.8)),
            hair_thickness=float(rng.uniform(0.006, 0.014) if style != "curly" else rng.uniform(0.02, 0.035)),
            hair_length=float(rng.uniform(0.06, 0.16)),
            cap=np.clip(rng.uniform(0.05, 0.95, 3), 0, 1).astype(np.float32) if style == "cap" else None,
            glasses=glasses, lens_tint=lens_tint,
            beard=beard, shirt=shirt,
            freckles=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.12 else 0.0,
            texture_seed=int(rng.integers(2**31)),
        )
