"""A video's head-model parameters and cameras (params.npz): a complete default set, the
check that normalises them (``validate_params``), and reading them (``read_params``)."""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.errors import DatasetError, MissingFileError
from gagavatar.data.layout import FRAME_ARRAYS, OPTIONAL_ARRAYS
from gagavatar.geometry import REFERENCE_FOCAL, WORLD_SCALE


def default_params(n_frames: int, width: int, height: int, n_shape: int, n_expression: int,
                   n_landmarks: int = 68) -> dict[str, np.ndarray]:
    """A complete params dict of zeros (identity camera at the reference focal, full-frame crop).

    Handy for writers that fill in only what they know.
    """
    K = np.zeros((n_frames, 3, 3), np.float32)
    K[:, 0, 0] = K[:, 1, 1] = REFERENCE_FOCAL * width / 2.0
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2.0, height / 2.0, 1.0
    transform = np.zeros((n_frames, 3, 4), np.float32)
    transform[:, :3, :3] = np.eye(3, dtype=np.float32)
    return {
        "shape": np.zeros(n_shape, np.float32),
        "expression": np.zeros((n_frames, n_expression), np.float32),
        "global_pose": np.zeros((n_frames, 3), np.float32),
        "neck_pose": np.zeros((n_frames, 3), np.float32),
        "jaw_pose": np.zeros((n_frames, 3), np.float32),
        "eye_pose": np.zeros((n_frames, 6), np.float32),
        "translation": np.zeros((n_frames, 3), np.float32),
        "transform": transform,
        "focal": np.full(n_frames, REFERENCE_FOCAL, np.float32),
        "K": K,
        "bbox": np.zeros((n_frames, 4), np.float32),
        "landmarks": np.zeros((n_frames, n_landmarks, 2), np.float32),
        "crop_box": np.tile(np.array([0, 0, width, height], np.float32), (n_frames, 1)),
        "valid": np.ones(n_frames, bool),
        "scale": np.float32(WORLD_SCALE),
        "landmark_set": np.str_("ibug68"),
    }


def validate_params(params: dict, n_frames: int, where: str) -> dict[str, np.ndarray]:
    """Check and normalise a params dict; returns numpy arrays with the documented dtypes.

    Fills the optional arrays (global/neck pose, translation = 0, valid = True) and
    raises ``DatasetError`` naming ``where`` and the array for anything else missing,
    mis-shaped or non-finite.
    """
    out: dict[str, np.ndarray] = {}
    for name, trailing in FRAME_ARRAYS.items():
        if name not in params:
            if name in OPTIONAL_ARRAYS:
                shape = (n_frames,) + trailing
                out[name] = np.ones(shape, bool) if name == "valid" else np.zeros(shape, np.float32)
                continue
            raise DatasetError(f"{where}: missing array {name!r} (expected [F={n_frames}, "
                               f"{', '.join('?' if t is None else str(t) for t in trailing)}])")
        a = params[name]
        a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
        a = a.astype(bool) if name == "valid" else a.astype(np.float32)
        if name == "shape" and a.ndim == 1:
            pass  # one shape for the whole video
        elif a.ndim != 1 + len(trailing) or a.shape[0] != n_frames or any(
                t is not None and s != t for s, t in zip(a.shape[1:], trailing)):
            want = ", ".join(["F"] + ["?" if t is None else str(t) for t in trailing])
            raise DatasetError(f"{where}: array {name!r} has shape {list(a.shape)}; expected [{want}] "
                               f"with F = {n_frames} frames")
        if name != "valid" and not np.isfinite(a).all():
            raise DatasetError(f"{where}: array {name!r} has NaN or infinite values")
        out[name] = a
    scale = float(np.asarray(params.get("scale", WORLD_SCALE)))
    if scale != WORLD_SCALE:  # one world scale everywhere: a second one would be applied twice or not at all
        raise DatasetError(f"{where}: world scale {scale:g}; gagavatar uses {WORLD_SCALE:g} (FLAME x 5, as the "
                           f"reference): re-track or re-import this video")
    out["scale"] = np.float32(scale)
    out["landmark_set"] = np.str_(str(params.get("landmark_set", "ibug68")))
    n_landmarks = out["landmarks"].shape[1]
    ids = np.asarray(params["landmark_ids"] if "landmark_ids" in params else np.arange(n_landmarks))
    if ids.shape != (n_landmarks,):
        raise DatasetError(f"{where}: array 'landmark_ids' has shape {list(ids.shape)}; expected [{n_landmarks}] "
                           f"(which landmark of the set each row of 'landmarks' is)")
    out["landmark_ids"] = ids.astype(np.int64)
    return out


@dataclass
class VideoParams:
    """The arrays of one params.npz (see ``FRAME_ARRAYS``), plus ``scale`` (= WORLD_SCALE) and
    ``landmark_set``. ``VideoRecord.frames`` turns them into ``FrameParams``."""

    arrays: dict[str, np.ndarray]

    @property
    def n_frames(self) -> int:
        return self.arrays["expression"].shape[0]

    @property
    def landmark_set(self) -> str:
        return str(self.arrays["landmark_set"])

    @property
    def landmark_ids(self) -> np.ndarray:
        """[L] which landmark of ``landmark_set`` each row of ``landmarks`` is."""
        return self.arrays["landmark_ids"]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def read_params(path: str | os.PathLike, n_frames: int | None = None) -> VideoParams:
    """Load and validate a params.npz; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: parameter file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DatasetError(f"{path}: cannot read parameters ({type(e).__name__}: {e}); the file is "
                           f"corrupt - regenerate or re-track this video") from e
    if "expression" not in raw:
        raise DatasetError(f"{path}: missing array 'expression'")
    n = raw["expression"].shape[0] if n_frames is None else n_frames
    return VideoParams(validate_params(raw, n, str(path)))
