"""Writing one video of a dataset, frame by frame (``VideoWriter``) or whole (``write_video``):
frames, mattes, params.npz, its sound (audio.wav) when it has one, and video.json last, which
marks it complete."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from gagavatar.data.audio import write_audio
from gagavatar.data.errors import DatasetError
from gagavatar.data.images import to_uint8
from gagavatar.data.index import VideoInfo
from gagavatar.data.json_files import write_json
from gagavatar.head.model import BUNDLED_HEAD_ID
from gagavatar.data.layout import (AUDIO_FILE, FRAME_FORMATS, FRAMES_DIR, MATTES_DIR, MP4_FILE, PARAMS_FILE, SPLITS,
                                   VIDEO_FILE, frame_name)
from gagavatar.data.params import validate_params
from gagavatar.io import atomic_path



class VideoWriter:
    """Writes one video folder frame by frame; ``close(params)`` finishes it.

    >>> w = VideoWriter(root, "id0001_v00", identity="id0001", split="train", width=128, height=128,
    ...                 head_model="synthetic-flame-v1")
    >>> for img, matte in frames: w.add(img, matte)      # uint8 [H,W,3], uint8 [H,W]
    >>> w.close(params)                                   # arrays as in FRAME_ARRAYS

    The video appears in the dataset once ``update_index(root)`` runs. Frames are
    PNG by default; "jpg" (quality 95) or "mp4" (H.264, lossy) save space.
    """

    def __init__(self, root: str | os.PathLike, video_id: str, identity: str, split: str,
                 width: int, height: int, head_model: str, frame_format: str = "png",
                 fps: float = 25.0, source: str = "", path: str | None = None):
        if frame_format not in FRAME_FORMATS:
            raise ValueError(f"frame_format={frame_format!r}; use one of {FRAME_FORMATS}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; use one of {SPLITS}")
        if frame_format == "mp4" and (width % 2 or height % 2):
            raise ValueError(f"mp4 frames need even sizes, got {width}x{height}; use png")
        self.root = Path(root)
        self.info = VideoInfo(video_id, identity, split, 0, path or video_id, width, height,
                              head_model, frame_format, fps, source)
        self.folder = self.root / self.info.path
        if Path(self.info.path).is_absolute() or not self.folder.resolve().is_relative_to(self.root.resolve()):
            raise DatasetError(f"video {video_id!r}: its folder {self.info.path!r} would be outside the dataset "
                               f"folder {self.root}")
        (self.folder / MATTES_DIR).mkdir(parents=True, exist_ok=True)
        (self.folder / VIDEO_FILE).unlink(missing_ok=True)  # incomplete until close()
        if frame_format == "mp4":
            import imageio.v2 as iio
            self._mp4 = iio.get_writer(self.folder / MP4_FILE, fps=fps, codec="libx264", quality=9,
                                       macro_block_size=1, ffmpeg_log_level="error")
        else:
            self._mp4 = None
            (self.folder / FRAMES_DIR).mkdir(exist_ok=True)

    def add(self, frame: np.ndarray, matte: np.ndarray) -> None:
        """Append one frame: RGB uint8 [H,W,3] and matte uint8 [H,W] (float [0,1] also accepted)."""
        frame, matte = to_uint8(frame), to_uint8(matte)
        H, W = self.info.height, self.info.width
        if frame.shape != (H, W, 3) or matte.shape != (H, W):
            raise ValueError(f"frame {list(frame.shape)} / matte {list(matte.shape)} must be "
                             f"[{H},{W},3] / [{H},{W}]")
        i = self.info.n_frames
        if self._mp4 is not None:
            self._mp4.append_data(frame)
        else:
            ext = self.info.frames
            Image.fromarray(frame).save(self.folder / FRAMES_DIR / frame_name(i, ext),
                                        **({"quality": 95, "subsampling": 0} if ext == "jpg" else {"compress_level": 1}))
        Image.fromarray(matte).save(self.folder / MATTES_DIR / frame_name(i), compress_level=1)
        self.info.n_frames += 1

    def close(self, params: dict, audio: np.ndarray | None = None) -> VideoInfo:
        """Write params.npz, the sound (``audio``: mono float [N] at 16 kHz, sample 0 at frame 0,
        as long as the frames: ``gagavatar.data.audio.fit_to_frames``; None: no sound) and
        video.json; returns the index entry."""
        if self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        arrays = validate_params(params, self.info.n_frames, f"params of video {self.info.id!r}")
        with atomic_path(self.folder / PARAMS_FILE) as tmp:
            np.savez(tmp, **arrays)
        (self.folder / AUDIO_FILE).unlink(missing_ok=True)  # a rewritten video without sound has none
        if audio is not None:
            write_audio(self.folder / AUDIO_FILE, audio, self.info.n_frames, self.info.fps)
        self.info.audio = audio is not None
        write_json(self.folder / VIDEO_FILE, asdict(self.info))  # last: marks the video complete
        return self.info


def write_video(root: str | os.PathLike, video_id: str, frames, mattes, params: dict,
                identity: str, split: str, head_model: str = BUNDLED_HEAD_ID,
                frame_format: str = "png", fps: float = 25.0, source: str = "",
                audio: np.ndarray | None = None) -> VideoInfo:
    """Write a whole video: frames uint8 [F,H,W,3], mattes uint8 [F,H,W] (or float in [0,1]),
    and its sound (``audio``, mono float [N] at 16 kHz aligned to the frames; see ``close``)."""
    frames = to_uint8(frames)
    F, H, W = frames.shape[:3]
    w = VideoWriter(root, video_id, identity, split, W, H, head_model, frame_format, fps, source)
    for f, m in zip(frames, to_uint8(mattes)):
        w.add(f, m)
    if w.info.n_frames != F:
        raise ValueError(f"got {F} frames but {w.info.n_frames} mattes")
    return w.close(params, audio)
