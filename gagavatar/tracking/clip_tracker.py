"""Tracking one clip of a build-dataset run: into a hidden staging folder, renamed into the
dataset in one step once complete; a GAGAvatar_track folder is imported instead. Any failure
becomes a ``ClipResult`` with a one-line reason, never an exception."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gagavatar import io as gio
from gagavatar.data.format import VIDEO_FILE, write_json
from gagavatar.tracking.build_config import BuildConfig
from gagavatar.tracking.clips import Clip
from gagavatar.tracking.partition import split_of

STAGING_DIR = ".staging"            # work in progress; hidden folders are not part of a dataset


@dataclass
class ClipResult:
    """What became of one clip. status: "tracked", "imported" or "failed"."""

    clip: Clip
    status: str
    frames: int | None = None       # frames of the clip (None: unknown, it could not be read)
    no_face: int = 0                # frames without a face (valid=False)
    reason: str = ""                # why it failed, one line
    seconds: float = 0.0
    videos: int = 0                 # dataset videos written (a reference folder may hold several)


class ClipFailed(Exception):
    """A clip was read but is no use (no face in any frame); ``frames`` says how many it had."""

    def __init__(self, message: str, frames: int | None = None):
        super().__init__(message)
        self.frames = frames


class ClipTracker:
    """Tracks clips into ``out`` one at a time (one per worker process; the head model is loaded once)."""

    def __init__(self, out: str | Path, config: BuildConfig):
        self.out = Path(out)
        self.config = config
        self._head = None

    @property
    def head(self):
        if self._head is None:
            from gagavatar.head import HeadModel

            if self.config.head_model is not None:
                self._head = HeadModel.load(self.config.head_model, landmark_embedding=self.config.landmark_embedding)
            else:
                self._head = HeadModel.default()
        return self._head

    def __call__(self, clip: Clip) -> ClipResult:
        staging = self.out / STAGING_DIR / clip.id
        shutil.rmtree(staging, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            if clip.reference:
                folder, frames, no_face, videos = self._import(clip, staging)
            else:
                folder, frames, no_face, videos = self._track(clip, staging)
            os.rename(folder, self.out / clip.id)  # complete: it appears in one step
            return ClipResult(clip, "imported" if clip.reference else "tracked", frames, no_face,
                              seconds=time.perf_counter() - t0, videos=videos)
        except Exception as e:  # noqa: BLE001 - any failure of one clip is recorded, the run goes on
            frames = e.frames if isinstance(e, ClipFailed) else count_frames(clip)
            return ClipResult(clip, "failed", frames, reason=_one_line(e), seconds=time.perf_counter() - t0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _track(self, clip: Clip, staging: Path) -> tuple[Path, int, int, int]:
        from gagavatar.tracking.tracker import track

        c = self.config
        identity = clip.identity or clip.id
        s = track(clip.path, staging, head_model=self.head, size=c.size, smooth=c.smooth, video_id=clip.id,
                  identity=identity, split=split_of(identity, c.splits, c.seed), overlay=c.overlay,
                  frame_format=c.frame_format, progress=False)
        if s.n_tracked == 0:
            raise ClipFailed(f"no face in any of its {s.n_frames} frame(s)", s.n_frames)
        return s.video_dir, s.n_frames, len(s.no_face), 1

    def _import(self, clip: Clip, staging: Path) -> tuple[Path, int, int, int]:
        """A GAGAvatar_track folder: imported, each of its videos renamed ``<clip id>__<its video>``
        (just ``<clip id>`` for one video), of the clip's identity (default: each video its own)."""
        import numpy as np

        from gagavatar.data.format import PARAMS_FILE
        from gagavatar.data.reference import import_reference

        infos = import_reference(clip.path, staging / "import", frame_format=self.config.frame_format)
        single = len(infos) == 1
        result = staging / "result"
        if not single:
            result.mkdir()
        frames = no_face = 0
        for info in infos:
            video_id = clip.id if single else f"{clip.id}__{info.id}"
            folder = result if single else result / info.id
            os.rename(staging / "import" / info.path, folder)
            identity = clip.identity or video_id
            split = split_of(identity, self.config.splits, self.config.seed)
            path = clip.id if single else f"{clip.id}/{info.id}"
            info = replace(info, id=video_id, identity=identity, split=split, path=path)
            write_json(folder / VIDEO_FILE, asdict(info))
            with np.load(folder / PARAMS_FILE) as p:
                no_face += int((~p["valid"]).sum())
            frames += info.n_frames
        return result, frames, no_face, len(infos)


def count_frames(clip: Clip) -> int | None:
    """Frames of a clip that failed, when its file says (None when it cannot be read at all)."""
    try:
        path = Path(clip.path)
        if path.is_dir():
            return len(gio.list_images(path))
        return gio.video_info(path).n_frames if gio.is_video(path) else 1
    except Exception:  # noqa: BLE001 - a count is only a courtesy
        return None


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = str(error)
    if "=== stderr ===" in text:  # imageio-ffmpeg appends ffmpeg's whole banner: its last line says what went wrong
        head, _, tail = text.partition("=== stderr ===")
        text = f"{head.strip()} ... {(tail.strip().splitlines() or [''])[-1]}"
    text = " ".join(text.split()) or "(no message)"
    text = text if isinstance(error, (ClipFailed, gio.InputError)) else f"{type(error).__name__}: {text}"
    # a long one loses its middle (a long path, a library's words), not its end, where the fix is said
    return text if len(text) <= limit else f"{text[:limit // 2 - 3]} ... {text[-(limit - limit // 2 - 2):]}"
