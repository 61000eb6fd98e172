"""``gagavatar live``: drive an avatar from a webcam or a stream, frame by frame.

Each incoming frame goes through the tracker's stages one at a time (landmarks ->
framing -> a one-frame fit with the identity shape fixed after the first face)
and is rendered at once; the result is shown in a window and/or written to an
mp4. A frame without a face repeats the last result. At the end the achieved
FPS and the latency (frame in -> image out) are printed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gagavatar import io as gio
from gagavatar.reenact import Animator, MotionControls, drive_parameters, load_tracked


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


def live(source, camera: int | None = 0, driver=None, out=None, show: bool = True, checkpoint=None,
         head_model=None, controls: MotionControls | None = None, max_frames: int | None = None,
         workdir=None, background=(0.0, 0.0, 0.0)) -> LiveStats:
    """Drive ``source``'s avatar from ``camera`` (an index) or ``driver`` (a video file);
    ``background`` RGB in [0, 1] behind the avatar."""
    import tempfile

    from gagavatar.tracking import framing
    from gagavatar.tracking.fitting import FitConfig, fit_landmarks
    from gagavatar.tracking.rig import LandmarkRig
    from gagavatar.tracking.landmarks import LandmarkDetector
    from gagavatar.tracking.matting import Segmenter

    animator = Animator.from_checkpoint(checkpoint, head_model, background=background)
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        avatar = animator.reconstruct(src, 0)
    source_params = src.params.frame(0)
    frames = gio.iter_video(driver) if driver is not None else camera_frames(camera)
    detector, segmenter = LandmarkDetector(video=True), Segmenter()
    framer = framing.Framer(segmenter, 512, framing.BOX_EMA)
    config = FitConfig(iterations=3)
    with torch.no_grad():
        rig = LandmarkRig(animator.head, n_shape=config.shape_components)  # once, not per frame
    writer_frames, shape, first, last_image = [], None, None, None
    window = _Window() if show else None
    stats, t_start = LiveStats(), time.perf_counter()
    try:
        for frame in frames:
            if max_frames is not None and stats.frames >= max_frames:
                break
            t0 = time.perf_counter()
            landmarks = detector(frame)
            if landmarks is None:
                stats.no_face += 1
                image = last_image if last_image is not None else np.zeros((animator.size,) * 2 + (3,), np.uint8)
            else:
                framed = framer(frame, landmarks)
                fit = fit_landmarks(animator.head, framed.landmarks.points[None, :, :2], 512, config, shape=shape,
                                   rig=rig)
                shape = fit.shape if shape is None else shape
                current = {"expression": fit.expression, "jaw_pose": fit.jaw_pose, "eye_pose": fit.eye_pose,
                           "neck_pose": np.zeros((1, 3), np.float32), "transform": fit.transform}
                first = current if first is None else first
                # a two-frame driver (first, current) so relative motion has its reference
                seq = {k: np.concatenate([first[k], current[k]]) for k in current} | {"valid": np.ones(2, bool)}
                motion = {k: v[1:] for k, v in drive_parameters(source_params, seq, controls).items()}
                image = next(animator.render(avatar, motion))
            last_image = image
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            stats.frames += 1
            if out is not None:
                writer_frames.append(image)
            if window is not None and not window.show(image):
                break
    finally:
        detector.close()
        segmenter.close()
        if window is not None:
            window.close()
    stats.seconds = time.perf_counter() - t_start
    if out is not None and writer_frames:
        gio.write_video(out, writer_frames, fps=25)
    return stats


class _Window:
    """An OpenCV window; quietly absent where there is no display."""

    def __init__(self):
        import os

        import cv2

        self.cv2 = cv2
        self.enabled = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        if not self.enabled:
            return True
        self.cv2.imshow("gagavatar live (q to quit)", self.cv2.cvtColor(image, self.cv2.COLOR_RGB2BGR))
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            self.cv2.destroyAllWindows()
