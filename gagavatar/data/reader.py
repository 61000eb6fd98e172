"""Reading a dataset: ``Dataset`` (its index, checked to stay inside its folder) and one
``VideoRecord`` per video, whose frames, mattes and params are read only when asked for."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.audio import read_video_audio
from gagavatar.data.errors import DatasetError, DatasetPathError, MissingFileError
from gagavatar.data.frame import FrameParams
from gagavatar.data.images import composite, image_to_tensor, read_image
from gagavatar.data.index import DatasetIndex, VideoInfo, check_identity_splits
from gagavatar.data.json_files import read_json
from gagavatar.data.layout import (AUDIO_FILE, FRAMES_DIR, INDEX_FILE, MATTES_DIR, MP4_FILE, PARAMS_FILE, SPLITS,
                                   VIDEO_FILE, frame_name)
from gagavatar.data.params import VideoParams, read_params
from gagavatar.io import resize_image


class VideoRecord:
    """One video of a dataset. Files are opened only when asked for.

    ``frame(i)`` -> RGB uint8 [H,W,3]; ``matte(i)`` -> uint8 [H,W];
    ``params`` -> ``VideoParams`` (read once, then cached); ``audio()`` -> float32 [N] at 16 kHz or None.
    """

    def __init__(self, root: Path, info: VideoInfo):
        self.root = Path(root)
        self.info = info
        self.folder = self.root / info.path
        self._params: VideoParams | None = None
        self._mp4_reader = None

    # Attributes of the index entry, for convenience.
    id = property(lambda self: self.info.id)
    identity = property(lambda self: self.info.identity)
    split = property(lambda self: self.info.split)
    n_frames = property(lambda self: self.info.n_frames)
    width = property(lambda self: self.info.width)
    height = property(lambda self: self.info.height)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "VideoRecord":
        """One video folder on its own (its ``video.json``), without the dataset's index."""
        folder = Path(folder)
        info = VideoInfo.from_dict(read_json(folder / VIDEO_FILE), str(folder / VIDEO_FILE))
        return cls(folder.parent, replace(info, path=folder.name))

    def __repr__(self) -> str:
        return f"VideoRecord({self.id!r}, identity={self.identity!r}, split={self.split!r}, n_frames={self.n_frames})"

    def __getstate__(self):  # an open mp4 reader does not pickle (DataLoader workers)
        state = self.__dict__.copy()
        state["_mp4_reader"] = None
        return state

    @property
    def params(self) -> VideoParams:
        if self._params is None:
            self._params = read_params(self.folder / PARAMS_FILE, self.n_frames)
        return self._params

    def check_head(self, head) -> None:
        """Refuse, naming the params file, parameters with more shape or expression coefficients
        a frame than ``head`` (a ``HeadModel``) has: tracked with another head model. Fewer are
        fine (the missing ones are zero, as FLAME takes them)."""
        from gagavatar.head import canonical_head_id

        tracked_with = self.info.head_model
        fix = (f"the video was tracked with {tracked_with}: give that --head-model, or track the video again "
               f"with this one" if canonical_head_id(tracked_with) != canonical_head_id(head.id)
               else "track the video again")
        for name, n in (("shape", head.n_shape), ("expression", head.n_expression)):
            width = self.params[name].shape[-1]
            if width > n:
                raise DatasetError(f"{self.folder / PARAMS_FILE}: {width} {name} coefficients a frame, but the "
                                   f"head model {head.id} has {n}: {fix}")

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range for video {self.id!r} of {self.n_frames} frames")

    def frames(self, index=None) -> FrameParams:
        """Head parameters and cameras of frames ``index`` (an int, a slice, an index array; None: all)."""
        return FrameParams.from_arrays(self.params, self.width, self.height, index)

    def audio(self) -> np.ndarray | None:
        """The video's sound: float32 [N] at 16 kHz, sample 0 at frame 0, ``n_frames / fps``
        seconds long (docs/data-format.md); None for a video without sound."""
        return read_video_audio(self.folder / AUDIO_FILE) if self.info.audio else None

    def image(self, i: int, size: int | None = None, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
        """Frame ``i`` composited on ``background`` with its matte, then resized to ``size`` (None: as
        stored), the order the reference's crops were made in (matted at full size): float [3, S, S]
        in [0, 1]."""
        image = composite(image_to_tensor(self.frame(i)), image_to_tensor(self.matte(i)), background)
        return image if size is None else resize_image(image, size).clamp(0, 1)

    def frame_path(self, i: int) -> Path:
        if self.info.frames == "mp4":
            return self.folder / MP4_FILE
        return self.folder / FRAMES_DIR / frame_name(i, self.info.frames)

    def matte_path(self, i: int) -> Path:
        return self.folder / MATTES_DIR / frame_name(i)

    def frame(self, i: int) -> np.ndarray:
        """RGB uint8 [H,W,3] of frame ``i``."""
        self._check(i)
        if self.info.frames == "mp4":
            img = self._read_mp4(i)
        else:
            img = read_image(self.frame_path(i), "RGB")
        return self._check_size(img, self.frame_path(i))

    def matte(self, i: int) -> np.ndarray:
        """Foreground matte uint8 [H,W] of frame ``i`` (255 = foreground)."""
        self._check(i)
        return self._check_size(read_image(self.matte_path(i), "L"), self.matte_path(i))

    def _check_size(self, img: np.ndarray, path: Path) -> np.ndarray:
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{path}: image is {img.shape[1]}x{img.shape[0]} but the index says "
                               f"{self.width}x{self.height}")
        return img

    def _read_mp4(self, i: int) -> np.ndarray:
        path = self.folder / MP4_FILE
        if not path.is_file():
            raise MissingFileError(f"{path}: video file not found")
        try:
            if self._mp4_reader is None:
                import imageio.v2 as iio
                self._mp4_reader = iio.get_reader(path, "ffmpeg")
            return np.asarray(self._mp4_reader.get_data(i))[..., :3]
        except (OSError, RuntimeError, IndexError, StopIteration) as e:
            self._mp4_reader = None
            raise DatasetError(f"{path}: cannot read frame {i} ({type(e).__name__}: {e}); the video is "
                               f"corrupt or shorter than the index's {self.n_frames} frames") from e


class Dataset:
    """A dataset folder: ``Dataset(root).videos`` lists ``VideoRecord`` s.

    Only index.json is read here; frames, mattes and params are read on demand.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(f"{self.root}: dataset folder does not exist")
        self.index = DatasetIndex.load(self.root)
        check_identity_splits(self.index.videos, str(self.root / INDEX_FILE))
        self.videos = [VideoRecord(self.root, v) for v in self.index.videos]
        root = self.root.resolve()
        for video in self.videos:  # a linked folder must not lead outside either
            if not video.folder.resolve().is_relative_to(root):
                raise DatasetPathError(f"{self.root / INDEX_FILE}: video {video.id!r} is in {video.folder}, which "
                                       f"leads outside the dataset folder")
        self._by_id = {v.id: v for v in self.videos}

    def __len__(self) -> int:
        return len(self.videos)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, {len(self.videos)} videos, {len(self.identities())} identities)"

    def video(self, video_id: str) -> VideoRecord:
        if video_id not in self._by_id:
            raise KeyError(f"no video {video_id!r} in {self.root / INDEX_FILE}")
        return self._by_id[video_id]

    def split(self, name: str) -> list[VideoRecord]:
        """Videos of one split ("train", "val" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r}; use one of {SPLITS}")
        return [v for v in self.videos if v.split == name]

    def identities(self, split: str | None = None) -> list[str]:
        """Sorted identity names (of one split, or all)."""
        return sorted({v.identity for v in self.videos if split is None or v.split == split})
