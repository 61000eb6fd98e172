"""The dataset's index: one ``VideoInfo`` per video (index.json, each video's video.json),
checked to stay inside the dataset folder and to keep each identity in one split, and
rebuilt from the video.json files (``update_index``)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gagavatar.data.errors import DatasetError, DatasetPathError, MissingFileError
from gagavatar.data.json_files import read_json, write_json
from gagavatar.data.layout import (FORMAT_NAME, FORMAT_VERSION, FRAME_FORMATS, FRAMES_DIR, INDEX_FILE, MATTES_DIR,
                                   SPLITS, VIDEO_FILE)


@dataclass
class VideoInfo:
    """One entry of index.json (and the content of a video's video.json).

    ``path`` is the video folder relative to the dataset root; ``frames`` is how
    the frames are stored ("png", "jpg" or "mp4"); ``head_model`` names the head
    model whose parameters params.npz holds (e.g. "synthetic-flame-v1", "flame2020");
    ``audio``: the folder holds the video's sound (audio.wav; False for a clip without sound
    and for datasets written before sound was kept).
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
    audio: bool = False

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
            raise DatasetPathError(f"{where}: video {info.id!r} has path {info.path!r}, outside the dataset folder; "
                                   f"paths in an index are relative to its folder, without '..'")
        if info.frames not in FRAME_FORMATS:
            raise DatasetError(f"{where}: video {info.id!r} has frames={info.frames!r}; expected one of {FRAME_FORMATS}")
        if not isinstance(info.audio, bool):
            raise DatasetError(f"{where}: video {info.id!r} has audio={info.audio!r}; expected true or false")
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
    check_identity_splits(index.videos, str(root / INDEX_FILE))
    index.save(root)
    return index


def check_identity_splits(videos: list[VideoInfo], where: str) -> None:
    """Held-out identities must never appear in training: one split per identity."""
    split_of: dict[str, str] = {}
    for v in videos:
        if split_of.setdefault(v.identity, v.split) != v.split:
            raise DatasetError(f"{where}: identity {v.identity!r} is in splits {split_of[v.identity]!r} and "
                               f"{v.split!r}; every video of one identity must be in the same split")
