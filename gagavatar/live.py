"""``gagavatar live``: drive an avatar from a webcam or a stream, frame by frame.

Each incoming frame goes through the tracker's stages one at a time (landmarks ->
framing -> a one-frame fit with the identity shape fixed after the first face) and
the motion controls (``Motion`` keeps its state over the stream: the first frame for
relative motion, the smoothing), and is rendered at once. A frame without a face
repeats the last result.

Where the result goes: a window when there is a display; ``--out FILE`` also writes
it (at the driver's frame rate, or the rate achieved from a webcam; with the driver's
sound, as far as it was driven). Without a display and without ``--out`` the result is
written to ``live.mp4`` (it is said so at the start), so a run on a server never renders
into nothing. FPS and latency (frame in -> image out) are printed every few seconds and
once more at the end, Ctrl-C included.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from gagavatar import io as gio
from gagavatar.commands import driver_sound
from gagavatar.reenact import Animator, Motion, MotionControls
from gagavatar.tracking.inputs import load_tracked, source_frame
from gagavatar.tracking.stream import FrameTracker

DEFAULT_OUT = "live.mp4"  # where the result goes without a display and without --out


@dataclass
class LiveStats:
    frames: int = 0
    no_face: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return (f"{self.frames} frames in {self.seconds:.1f} s: {self.frames / max(self.seconds, 1e-9):.1f} FPS; "
                f"latency median {np.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms; "
                f"{self.no_face} frame(s) without a face repeated the last result")


def camera_frames(index: int):
    """RGB frames from a webcam (OpenCV); a clear error when it cannot be opened."""
    import cv2

    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise gio.InputError(f"camera {index} cannot be opened: is a webcam connected (try --camera 1, "
                             f"or --driver VIDEO to drive from a file)?")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def tracked_frames(video) -> Iterator:
    """A tracked folder as a stream: each frame's stored parameters (None where no face was found),
    as ``FrameTracker`` gives them for raw frames."""
    valid = video.params["valid"]
    for i in range(video.n_frames):
        yield video.frames(i) if valid[i] else None


def live(source, animator: Animator, camera: int | None = 0, driver=None, out=None, show: bool = True,
         controls: MotionControls | None = None, max_frames: int | None = None, workdir=None,
         report_every: float = 3.0, say=print) -> LiveStats:
    """Drive ``source``'s avatar through ``animator`` (its model, head and background) from
    ``camera`` (an index) or ``driver`` (a video file, or a tracked folder, whose stored
    parameters drive it as they are). ``say(line)`` prints the running figures."""
    import tempfile

    window = _Window() if show and has_display() else None
    if window is None and out is None:
        out = DEFAULT_OUT
        say(f"no display: writing the result to {out} (--out FILE to choose another file)")
    if out is not None:
        gio.check_output(out, inputs=(source, driver), suffixes=gio.VIDEO_OUTPUT_EXTENSIONS)
    if driver is not None and not Path(driver).exists():
        raise gio.InputError(f"--driver {driver}: no such video file or folder")
    fps_out = gio.video_info(driver).fps if driver is not None and Path(driver).is_file() else None
    driving, video = None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        avatar = animator.reconstruct(src)
        if driver is not None and Path(driver).is_dir():  # a tracked folder (an image folder is tracked first)
            video = load_tracked(driver, Path(workdir or tmp) / "driver", animator.head)
            driving, fps_out = list(tracked_frames(video)), video.info.fps  # read before the work folder goes
    motion = Motion(src.frames(source_frame(src)), controls)
    tracker = FrameTracker(animator.head)
    if driving is not None:
        frames, track = driving, lambda params: params  # tracked already
    else:
        frames, track = gio.iter_video(driver) if driver is not None else camera_frames(camera), tracker
    written, last_image = [], np.zeros((animator.size,) * 2 + (3,), np.uint8)
    stats, t_start, t_report = LiveStats(), time.perf_counter(), time.perf_counter()
    try:
        for frame in frames:
            if max_frames is not None and stats.frames >= max_frames:
                break
            t0 = time.perf_counter()
            params = track(frame)
            if params is None:
                stats.no_face += 1
            else:
                last_image = next(animator.render(avatar, motion(params)))
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            stats.frames += 1
            if out is not None:
                written.append(last_image)
            if window is not None and not window.show(last_image):
                break
            if time.perf_counter() - t_report >= report_every:
                stats.seconds, t_report = time.perf_counter() - t_start, time.perf_counter()
                say(f"live: {stats}")
    except KeyboardInterrupt:
        say("stopped (Ctrl-C)")
    finally:
        tracker.close()
        if window is not None:
            window.close()
        stats.seconds = time.perf_counter() - t_start
    if out is not None and written:
        fps = fps_out or max(1.0, round(stats.frames / max(stats.seconds, 1e-9)))
        # the driver's sound goes with its frames, as far as they were driven (a camera has none)
        sound, rate = driver_sound(driver, len(written), fps, video)
        say(f"wrote {gio.write_video(out, written, fps=fps, audio=sound, audio_rate=rate)}")
    return stats


class _Window:
    """An OpenCV window (only made where there is a display)."""

    def __init__(self):
        import cv2

        self.cv2 = cv2

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        self.cv2.imshow("gagavatar live (q to quit)", self.cv2.cvtColor(image, self.cv2.COLOR_RGB2BGR))
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyAllWindows()
