"""What the commands are given: tracked videos, and the one rule that picks the source frame.

``load_tracked`` accepts a tracked folder (ours or GAGAvatar_track's) or raw input (an
image, a video, a folder of images), which it tracks first; every command, the app and
the service read their sources and drivers through it. No face is a ``NoFaceError``.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from gagavatar.data.format import INDEX_FILE, VIDEO_FILE, Dataset, VideoRecord
from gagavatar.data.frame import FrameParams
from gagavatar.errors import NoFaceError

log = logging.getLogger(__name__)


def load_tracked(path: str | Path, workdir: str | Path | None = None, head=None, size: int = 512,
                 smooth: float = 0.0, progress: bool = True) -> VideoRecord:
    """A tracked video: read a tracked folder as it is, or track an image / video / image folder.

    ``path`` may be a dataset folder (its first video), one video folder of a dataset
    (``video.json``), a GAGAvatar_track output folder (imported into ``workdir``, or a
    new temporary folder), or raw input, which is tracked into ``workdir`` first
    (``progress``: with progress bars). With ``head`` given, parameters that do not fit it
    are refused at once (``VideoRecord.check_head``), not midway through a render.
    """
    video = _tracked(Path(path), workdir, head, size, smooth, progress)
    if head is not None:
        video.check_head(head)
    return video


def _tracked(path: Path, workdir, head, size: int, smooth: float, progress: bool) -> VideoRecord:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and (path / INDEX_FILE).is_file():
        videos = Dataset(path).videos
        if not videos:
            raise ValueError(f"{path}: the dataset has no videos")
        return videos[0]
    if path.is_dir() and (path / VIDEO_FILE).is_file():
        return VideoRecord.open(path)
    from gagavatar.data.reference import import_reference, is_reference_folder

    if is_reference_folder(path):  # checked after ours: `track --reference-format` writes both
        out = Path(workdir) / path.name if workdir is not None else Path(tempfile.mkdtemp(prefix="gagavatar-ref-"))
        import_reference(path, out)
        return Dataset(out).videos[0]

    from gagavatar.tracking.tracker import track

    if workdir is None:
        raise ValueError(f"{path} is not tracked yet: give a workdir to track it into")
    out = Path(workdir) / path.stem
    summary = track(path, out, head_model=head, size=size, smooth=smooth, overlay=False, progress=progress)
    for warning in summary.warnings:  # e.g. a video whose end is damaged: what decoded is used, and said
        log.warning("%s", warning)
    if summary.n_tracked == 0:
        raise NoFaceError(f"{path}: no face found in any frame; use a photo or video that shows a face")
    return Dataset(out).videos[0]


def source_frame(video: VideoRecord) -> int:
    """The frame an avatar is made from: the first frame with a tracked face (the one rule,
    everywhere: reenact, novel views, PLY export, the app, the service)."""
    valid = np.flatnonzero(video.params["valid"])
    if valid.size == 0:
        raise NoFaceError(f"no face found in the source {video.id}: use a photo that shows a face")
    return int(valid[0])


def driver_frames(video: VideoRecord) -> tuple[FrameParams, np.ndarray]:
    """Every frame of a driving video: (frames [F], repeated [F] bool). A frame where the
    tracker found no face repeats the last good one (the first good one before any)."""
    valid = np.asarray(video.params["valid"], bool)
    good = np.flatnonzero(valid)
    if good.size == 0:
        raise NoFaceError(f"the driver {video.id} has no frame with a face: nothing to drive the avatar with")
    take = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    take = np.where(take < 0, good[0], take)
    return video.frames(take), take != np.arange(len(valid))
