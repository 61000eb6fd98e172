"""The dataset format: tracked talking-head videos on disk (see docs/data-format.md).

A dataset is a folder::

    root/
      index.json                  # format version + one entry per video
      <video folder>/             # any relative path, listed in index.json
        video.json                # this video's entry (update_index rebuilds the index from these)
        frames/000000.png ...     # RGB frames (PNG or JPEG), or frames.mp4
        mattes/000000.png ...     # 8-bit foreground mattes (255 = head, hair, neck)
        params.npz                # every per-frame array of the video

``params.npz`` holds head-model parameters (FLAME layout, x1 = metres), the
camera in the reference's 3x4 convention (SPEC §7.1) in world units = head
model x ``WORLD_SCALE``, pixel intrinsics at the stored frame size, the face box,
2D landmarks, the crop box and a validity flag. Writers: ``VideoWriter``,
``write_video``, ``update_index``. Readers: ``Dataset`` -> ``VideoRecord``
with lazy ``frame(i)``, ``matte(i)``, ``params`` and ``frames()`` (the one frame
type, ``gagavatar.data.frame.FrameParams``); nothing is read before it is asked
for, so a DataLoader worker only opens the files it samples.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gagavatar.data.frame import FrameParams
from gagavatar.geometry import REFERENCE_FOCAL, WORLD_SCALE
from gagavatar.io import atomic_path, resize_image

FORMAT_NAME = "gagavatar-dataset"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
VIDEO_FILE = "video.json"
PARAMS_FILE = "params.npz"
FRAMES_DIR = "frames"
MATTES_DIR = "mattes"
MP4_FILE = "frames.mp4"
FRAME_FORMATS = ("png", "jpg", "mp4")
SPLITS = ("train", "val", "test")

# Per-frame arrays of params.npz: name -> trailing shape (None = model-dependent size).
# All float32 except ``valid`` (bool). ``shape`` may also be one row [S] for the whole video.
FRAME_ARRAYS: dict[str, tuple] = {
    "shape": (None,),
    "expression": (None,),
    "global_pose": (3,),
    "neck_pose": (3,),
    "jaw_pose": (3,),
    "eye_pose": (6,),
    "translation": (3,),
    "transform": (3, 4),
    "focal": (),
    "K": (3, 3),
    "bbox": (4,),
    "landmarks": (None, 2),
    "crop_box": (4,),
    "valid": (),
}
# Arrays a writer may leave out; the reader fills them with these defaults.
OPTIONAL_ARRAYS = ("global_pose", "neck_pose", "translation", "valid")


class DatasetError(ValueError):
    """A dataset file is malformed or inconsistent; the message names the file."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A file the dataset needs does not exist; the message names it."""


def frame_name(i: int, ext: str = "png") -> str:
    """File name of frame ``i``: ``000123.png``."""
    return f"{i:06d}.{ext}"


# ---------------------------------------------------------------------------
# Index
# ---------------------------------------------------------------------------

@dataclass
class VideoInfo:
    """One entry of index.json (and the content of a video's video.json).

    ``path`` is the video folder relative to the dataset root; ``frames`` is how
    the frames are stored ("png", "jpg" or "mp4"); ``head_model`` names the head
    model whose parameters params.npz holds (e.g. "synthetic-flame-v1", "flame2020").
    """

    id: str
    identity: str
    split: str
    n_frames: int
    path: str
    width: int
    height: int
    head_model: str
    frames: str = "png"
    fps: float = 25.0
    source: str = ""  # where the video came from (a file name, "synthetic", ...)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "VideoInfo":
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("id", "identity", "split", "n_frames", "path", "width", "height", "head_model")
                   if k not in d]
        if missing:
            raise DatasetError(f"{where}: video entry {d.get('id', '?')!r} lacks {missing}")
        info = cls(**{k: v for k, v in d.items() if k in known})
        path = Path(str(info.path))
        if path.is_absolute() or ".." in path.parts or str(info.path).startswith(("/", "\\")):
            raise DatasetError(f"{where}: video {info.id!r} has path {info.path!r}, outside the dataset folder; "
                               f"paths in an index are relative to its folder, without '..'")
        if info.frames not in FRAME_FORMATS:
            raise DatasetError(f"{where}: video {info.id!r} has frames={info.frames!r}; expected one of {FRAME_FORMATS}")
        if info.split not in SPLITS:
            raise DatasetError(f"{where}: video {info.id!r} has split={info.split!r}; expected one of {SPLITS}")
        return info


@dataclass
class DatasetIndex:
    """index.json: the format version and the list of videos."""

    videos: list[VideoInfo] = field(default_factory=list)
    version: int = FORMAT_VERSION
    format: str = FORMAT_NAME

    @classmethod
    def load(cls, root: str | os.PathLike) -> "DatasetIndex":
        path = Path(root) / INDEX_FILE
        d = read_json(path)
        if d.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}: not a {FORMAT_NAME} index (format={d.get('format')!r})")
        if d.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{path}: format version {d.get('version')!r}; this code reads version "
                               f"{FORMAT_VERSION}. Regenerate the dataset or update gagavatar.")
        if not isinstance(d.get("videos"), list):
            raise DatasetError(f"{path}: 'videos' must be a list")
        return cls([VideoInfo.from_dict(v, str(path)) for v in d["videos"]], d["version"], d["format"])

    def save(self, root: str | os.PathLike) -> Path:
        path = Path(root) / INDEX_FILE
        write_json(path, {"format": self.format, "version": self.version,
                           "videos": [asdict(v) for v in self.videos]})
        return path


def scan_videos(root: str | os.PathLike) -> list[VideoInfo]:
    """The complete videos below ``root``: every ``video.json``, its ``path`` set to where it lies.

    Hidden folders (``.name``: a writer's work in progress) are not part of the dataset,
    and a video's own frames/ and mattes/ are not searched (a dataset of 15,000 clips
    holds millions of frame files).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: dataset folder does not exist")
    videos = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and not (VIDEO_FILE in files and d in (FRAMES_DIR, MATTES_DIR))]
        if VIDEO_FILE in files:
            vj = Path(folder) / VIDEO_FILE
            info = VideoInfo.from_dict(read_json(vj), str(vj))
            info.path = vj.parent.relative_to(root).as_posix()
            videos.append(info)
    return sorted(videos, key=lambda v: v.path)


def update_index(root: str | os.PathLike) -> DatasetIndex:
    """Rebuild ``root/index.json`` from every ``video.json`` below ``root`` (``scan_videos``).

    Writers (one per video, possibly in parallel processes) only write their own
    folder; one call here at the end lists them all. Videos are sorted by id.
    """
    root = Path(root)
    videos = scan_videos(root)
    ids = [v.id for v in videos]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)  # Counter: ids.count is quadratic
    if dup:
        raise DatasetError(f"{root}: video ids {dup} appear in more than one {VIDEO_FILE}")
    index = DatasetIndex(sorted(videos, key=lambda v: v.id))
    _check_identity_splits(index.videos, str(root / INDEX_FILE))
    index.save(root)
    return index


def _check_identity_splits(videos: list[VideoInfo], where: str) -> None:
    """Held-out identities must never appear in training: one split per identity."""
    split_of: dict[str, str] = {}
    for v in videos:
        if split_of.setdefault(v.identity, v.split) != v.split:
            raise DatasetError(f"{where}: identity {v.identity!r} is in splits {split_of[v.identity]!r} and "
                               f"{v.split!r}; every video of one identity must be in the same split")


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

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
        frame, matte = _to_uint8(frame), _to_uint8(matte)
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

    def close(self, params: dict) -> VideoInfo:
        """Write params.npz and video.json; returns the index entry."""
        if self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None
        arrays = validate_params(params, self.info.n_frames, f"params of video {self.info.id!r}")
        with atomic_path(self.folder / PARAMS_FILE) as tmp:
            np.savez(tmp, **arrays)
        write_json(self.folder / VIDEO_FILE, asdict(self.info))  # last: marks the video complete
        return self.info


def write_video(root: str | os.PathLike, video_id: str, frames, mattes, params: dict,
                identity: str, split: str, head_model: str = "synthetic-flame-v1",
                frame_format: str = "png", fps: float = 25.0, source: str = "") -> VideoInfo:
    """Write a whole video: frames uint8 [F,H,W,3], mattes uint8 [F,H,W] (or float in [0,1])."""
    frames = _to_uint8(frames)
    F, H, W = frames.shape[:3]
    w = VideoWriter(root, video_id, identity, split, W, H, head_model, frame_format, fps, source)
    for f, m in zip(frames, _to_uint8(mattes)):
        w.add(f, m)
    if w.info.n_frames != F:
        raise ValueError(f"got {F} frames but {w.info.n_frames} mattes")
    return w.close(params)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class VideoRecord:
    """One video of a dataset. Files are opened only when asked for.

    ``frame(i)`` -> RGB uint8 [H,W,3]; ``matte(i)`` -> uint8 [H,W];
    ``params`` -> ``VideoParams`` (read once, then cached).
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

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range for video {self.id!r} of {self.n_frames} frames")

    def frames(self, index=None) -> FrameParams:
        """Head parameters and cameras of frames ``index`` (an int, a slice, an index array; None: all)."""
        return FrameParams.from_arrays(self.params, self.width, self.height, index)

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
            img = _read_image(self.frame_path(i), "RGB")
        return self._check_size(img, self.frame_path(i))

    def matte(self, i: int) -> np.ndarray:
        """Foreground matte uint8 [H,W] of frame ``i`` (255 = foreground)."""
        self._check(i)
        return self._check_size(_read_image(self.matte_path(i), "L"), self.matte_path(i))

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
        _check_identity_splits(self.index.videos, str(self.root / INDEX_FILE))
        self.videos = [VideoRecord(self.root, v) for v in self.index.videos]
        root = self.root.resolve()
        for video in self.videos:  # a linked folder must not lead outside either
            if not video.folder.resolve().is_relative_to(root):
                raise DatasetError(f"{self.root / INDEX_FILE}: video {video.id!r} is in {video.folder}, which leads "
                                   f"outside the dataset folder")
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


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------

def composite(image: torch.Tensor, matte: torch.Tensor, background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """``image * matte + background * (1 - matte)``.

    image [..., 3, H, W] in [0, 1]; matte [..., 1, H, W] in [0, 1]; background a
    colour (3 floats or one float) or an image broadcastable to [..., 3, H, W].
    The reference trains on frames matted on black, i.e. background (0, 0, 0).
    """
    if not torch.is_tensor(background):
        background = torch.as_tensor(background, dtype=image.dtype, device=image.device)
        if background.dim() == 1:
            background = background.reshape(-1, 1, 1)
    background = background.to(image)
    return image * matte + background * (1.0 - matte)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H,W,3] -> float [3,H,W] in [0,1]; uint8 [H,W] -> float [1,H,W]."""
    t = torch.from_numpy(np.ascontiguousarray(image)).float().div_(255.0)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def _to_uint8(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"images must be uint8 or float in [0,1], got {a.dtype}")


def _read_image(path: Path, mode: str) -> np.ndarray:
    if not path.is_file():
        raise MissingFileError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file is corrupt - "
                           f"regenerate or re-track this video") from e


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found" + (
            " - is this a dataset folder? (run update_index(root) after writing videos)"
            if path.name == INDEX_FILE else ""))
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return d


def write_json(path: Path, d: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(d, indent=1) + "\n")
