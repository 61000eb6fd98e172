"""What the commands are given: tracked videos, bundled files, and the one rule that picks
the source frame.

``load_tracked`` accepts a tracked folder (ours or GAGAvatar_track's) or raw input (an
image, a video, a folder of images), which it tracks first; every command, the app and
the service read their sources and drivers through it.
"""
from __future__ import annotations

import logging
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from gagavatar.data.format import INDEX_FILE, VIDEO_FILE, Dataset, VideoRecord
from gagavatar.data.frame import FrameParams

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "demo/tiny.safetensors"  # the bundled demonstration model
BUNDLED_MODEL_NOTE = (
    "The bundled model is a small demonstration model trained only on synthetic heads: real photos come out "
    "blurry and unlike the person. For real results use the released GAGAvatar.pt + FLAME 2020 (README: 'Using the "
    "released GAGAvatar checkpoint'), or personalise it on a video of the person: gagavatar personalize --video CLIP")
DEMO_DATA = "demo/clips"  # bundled tracked clips: video "source" (1 frame) and "driver"


def bundled(name: str) -> Path:
    """Path of a file shipped in ``gagavatar/assets``."""
    return Path(str(resources.files("gagavatar.assets").joinpath(name)))


def is_bundled_model(checkpoint) -> bool:
    """True when ``checkpoint`` (a path, or None for the default) is the bundled demonstration model."""
    return checkpoint is None or Path(checkpoint).resolve() == bundled(DEFAULT_CHECKPOINT).resolve()


def load_tracked(path: str | Path, workdir: str | Path | None = None, head=None, size: int = 512,
                 smooth: float = 0.0, progress: bool = True) -> VideoRecord:
    """A tracked video: read a tracked folder as it is, or track an image / video / image folder.

    ``path`` may be a dataset folder (its first video), one video folder of a dataset
    (``video.json``), a GAGAvatar_track output folder (imported into ``workdir``, or a
    new temporary folder), or raw input, which is tracked into ``workdir`` first
    (``progress``: with progress bars).
    """
    path = Path(path)
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
        raise ValueError(f"{path}: no face found in any frame; use a photo or video that shows a face")
    return Dataset(out).videos[0]


def source_frame(video: VideoRecord) -> int:
    """The frame an avatar is made from: the first frame with a tracked face (the one rule,
    everywhere: reenact, novel views, PLY export, the app, the service)."""
    valid = np.flatnonzero(video.params["valid"])
    if valid.size == 0:
        raise ValueError(f"no face found in the source {video.id}: use a photo that shows a face")
    return int(valid[0])


def driver_frames(video: VideoRecord) -> tuple[FrameParams, np.ndarray]:
    """Every frame of a driving video: (frames [F], repeated [F] bool). A frame where the
    tracker found no face repeats the last good one (the first good one before any)."""
    valid = np.asarray(video.params["valid"], bool)
    good = np.flatnonzero(valid)
    if good.size == 0:
        raise ValueError(f"the driver {video.id} has no frame with a face: nothing to drive the avatar with")
    take = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    take = np.where(take < 0, good[0], take)
    return video.frames(take), take != np.arange(len(valid))


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
