"""How a build-dataset run tracks its clips (``track``'s options) and spreads them over
processes, and which of those settings shape what a video holds."""
from __future__ import annotations

from dataclasses import dataclass

# Settings that change what a video holds: a resumed run or a merge must use the same.
SHAPING_SETTINGS = ("size", "frame_format", "smooth", "head_model", "splits", "seed")


@dataclass
class BuildConfig:
    """How clips are tracked (``track``'s options) and how the run is spread.

    workers: tracking processes (0: in this process, without crash isolation).
    threads: torch/BLAS/OpenCV threads per worker (default: the usable cores / workers).
    """

    size: int = 512
    frame_format: str = "jpg"
    smooth: float = 0.0
    overlay: bool = False
    head_model: str | None = None          # FLAME-format file (default: the bundled synthetic head)
    landmark_embedding: str | None = None
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    retry_failed: bool = False              # track clips that failed in an earlier run again
    progress: bool = True

    def settings(self) -> dict:
        return {"size": self.size, "frame_format": self.frame_format, "smooth": self.smooth,
                "head_model": self.head_model or "bundled", "splits": list(self.splits), "seed": self.seed}
