"""Smooth random fields for textures (skin, hair streaks, freckles, patchy beards):
trilinear value noise on a periodic lattice, summed over octaves."""
from __future__ import annotations

import numpy as np


class Noise3D:
    """Smooth random field: trilinear value noise on a periodic lattice, summed over octaves."""

    def __init__(self, rng: np.random.Generator, size: int = 32):
        self.table = rng.uniform(-1, 1, (size, size, size)).astype(np.float32)
        self.size = size

    def __call__(self, p: np.ndarray, frequency: float, octaves: int = 3) -> np.ndarray:
        """Noise in about [-1, 1] at points p [N,3]; ``frequency`` = lattice cells per unit."""
        total, norm, amp = np.zeros(len(p), np.float32), 0.0, 1.0
        for o in range(octaves):
            q = p * frequency * 2 ** o + 7.31 * o
            i0 = np.floor(q).astype(np.int64)
            f = q - i0
            f = f * f * (3 - 2 * f)  # smoothstep: no lattice creases
            v = 0.0
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                        v = v + w * self.table[(i0[:, 0] + dx) % self.size, (i0[:, 1] + dy) % self.size,
                                               (i0[:, 2] + dz) % self.size]
            total += amp * v
            norm += amp
            amp *= 0.5
        return total / norm
