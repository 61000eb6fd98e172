"""What the user-facing commands do (``gagavatar reenact``, ``novel-views``, ``export-ply``,
``demo``), as plain functions the CLI, the app and scripts call; all of them drive the one
``Animator``."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gagavatar import io as gio
from gagavatar.data.audio import fit_to_frames, sound_track
from gagavatar.data.layout import AUDIO_RATE
from gagavatar.reenact import DEMO_DATA, DEMO_SENTENCE, Animator, Motion, MotionControls, bundled, load_tracked, source_frame
from gagavatar.head import BUNDLED_HEAD_ID
from gagavatar.reenact.speaker import Speaker, load_motion, save_motion


@dataclass
class ReenactSummary:
    out: Path
    n_frames: int
    n_repeated: int  # driver frames without a face, filled with the last good one
    seconds: float
    fps: float
    frames: list | None = None  # the avatar's frames (uint8 [R,R,3]) when asked to keep them

    def __str__(self) -> str:
        note = f", {self.n_repeated} driver frame(s) without a face repeated the last good one" if self.n_repeated else ""
        return f"wrote {self.out}: {self.n_frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS){note}"


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, disable=total <= 1)


def side_by_side(driver_frame: np.ndarray, image: np.ndarray) -> np.ndarray:
    """[R, 2R, 3] uint8: the driver's tracked crop resized to the avatar's size, beside the avatar."""
    return np.concatenate([gio.resize_frame(driver_frame, image.shape[0]), image], axis=1)


def check_video_output(out, *inputs) -> Path:
    """Before any work: ``out`` may be written as a video (``gio.check_output``: never over one of
    the command's ``inputs``, a device or a folder; an mp4/mov/m4v/mkv name; a writable folder)."""
    return gio.check_output(out, inputs=inputs, suffixes=gio.VIDEO_OUTPUT_EXTENSIONS)


def reenact(source, driver, out, animator: Animator, side_by_side_view: bool = False,
            controls: MotionControls | None = None, fps: float | None = None, workdir=None,
            keep_frames: bool = False, progress=None, avatar=None, sound_from=None) -> ReenactSummary:
    """Animate ``source`` (image or tracked folder) with ``driver`` (video, image folder or
    tracked folder) through ``animator`` (its model, head and background) and write an H.264 mp4
    to ``out``, with the driver's sound when it has some (``driver_sound``; ``sound_from``: the
    video a tracked ``driver`` came from). ``progress(done, total)`` is called after each frame;
    ``avatar``: the source's, when the caller has reconstructed it already."""
    t0 = time.perf_counter()
    check_video_output(out, source, driver, animator.checkpoint)  # before the work, not after it
    motion_file = Path(driver).suffix == ".npz"  # a motion `speak --motion-out` wrote
    if motion_file and side_by_side_view:
        raise gio.InputError(f"{driver} is a motion file: it has no pictures to put beside the result; leave "
                             f"--side-by-side out")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        src = load_tracked(source, work / "source", animator.head)
        avatar = animator.reconstruct(src) if avatar is None else avatar
        if motion_file:
            motion, fps = load_motion(driver)
            frames, repeated = Motion(src.frames(source_frame(src)), controls)(motion), np.zeros(len(motion), bool)
        else:
            drv = load_tracked(driver, work / "driver", animator.head)
            frames, repeated = animator.drive(src, drv, controls)
            fps = fps or drv.info.fps
        kept = [] if keep_frames else None

        def video():
            for i, image in enumerate(_progress(animator.render(avatar, frames), len(frames), "reenact")):
                if kept is not None:
                    kept.append(image)
                if progress is not None:
                    progress(i + 1, len(frames))
                yield side_by_side(drv.frame(i), image) if side_by_side_view else image

        # the driver's sound goes with its frames (not when they are retimed or come from a motion file)
        sound, rate = (driver_sound(sound_from or driver, len(frames), fps, drv)
                       if not motion_file and fps == drv.info.fps else (None, AUDIO_RATE))
        path = gio.write_video(out, video(), fps=fps, audio=sound, audio_rate=rate)
    seconds = time.perf_counter() - t0
    return ReenactSummary(path, len(frames), int(repeated.sum()), seconds, len(frames) / seconds, kept)


def driver_sound(driver, n_frames: int, fps: float, tracked=None) -> tuple[np.ndarray | None, int]:
    """(samples, rate) of the sound for ``n_frames`` frames at ``fps`` driven by ``driver`` from
    its first frame: a video file's own (48 kHz stereo, ``sound_track``), else that of the
    tracked folder ``tracked`` (a ``VideoRecord``; 16 kHz mono, what a dataset keeps); None
    without sound (or without a driver: a camera)."""
    if driver is not None and Path(driver).is_file():
        return sound_track(driver, n_frames, fps), gio.SOUND_RATE
    audio = tracked.audio() if tracked is not None else None
    return (None if audio is None else fit_to_frames(audio, n_frames, fps)), AUDIO_RATE


def speak(source, out, animator: Animator, speaker: Speaker, samples: np.ndarray,
          controls: MotionControls | None = None, motion_out=None, workdir=None, progress=None,
          recording=None) -> ReenactSummary:
    """Make ``source``'s avatar say ``samples`` (mono [N] at ``speaker.sample_rate``:
    ``gio.read_speech``); write an mp4 with the speech as its sound track, frames at the speech
    model's rate, the same length as the audio. ``recording``: the file ``samples`` came from,
    whose own sound (48 kHz stereo) is then the track. ``motion_out``: also the motion, as a file
    ``reenact`` takes as its driver, written with the video."""
    t0 = time.perf_counter()
    check_video_output(out, source, animator.checkpoint)
    if motion_out is not None:
        gio.check_output(motion_out, inputs=(source, out), suffixes=(".npz",))
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        frames, vertices = speaker.drive(src, samples, animator.head, controls)
        avatar = animator.reconstruct(src)

        def video():
            for i, image in enumerate(_progress(animator.render(avatar, frames, vertices=vertices), len(frames),
                                                "speak")):
                if progress is not None:
                    progress(i + 1, len(frames))
                yield image

        sound, rate = ((sound_track(recording, len(frames), speaker.fps), gio.SOUND_RATE) if recording is not None
                       else (samples, speaker.sample_rate))
        path = gio.write_video(out, video(), fps=speaker.fps, audio=sound, audio_rate=rate)
        if motion_out is not None:  # after the video: a run that fails or is stopped leaves neither
            save_motion(motion_out, frames, speaker.fps)
    seconds = time.perf_counter() - t0
    return ReenactSummary(path, len(frames), 0, seconds, len(frames) / seconds)


def novel_views(source, out, animator: Animator, n_frames: int = 60, yaw: float = 30.0, workdir=None) -> Path:
    """An orbit around the reconstructed avatar of ``source``, written as an mp4."""
    check_video_output(out, source, animator.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        orbit = animator.orbit(animator.reconstruct(src), src, n_frames, yaw)
        return gio.write_video(out, _progress(orbit, n_frames, "novel views"), fps=25)


def export_ply(source, out, animator: Animator, workdir=None) -> Path:
    """The reconstructed avatar of ``source`` as a 3D Gaussian splatting PLY."""
    gio.check_output(out, inputs=(source, animator.checkpoint), suffixes=(".ply",))
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        return animator.to_ply(animator.reconstruct(src), src, out)


def demo(out="demo", checkpoint=None, head_model=None) -> dict[str, Path]:
    """The built-in demo: bundled tiny model, synthetic head and clips -> reenactment mp4,
    orbit mp4 and a contact sheet in ``out``. Offline; seconds on 2 CPU cores."""
    from gagavatar.data.format import Dataset

    out = Path(out)
    check_video_output(out / "reenact.mp4", checkpoint, head_model)
    animator = Animator.load(checkpoint, head_model, device="cpu")
    videos = {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}
    source, driver = videos["source"], videos["driver"]
    avatar = animator.reconstruct(source)
    summary = reenact(source.folder, driver.folder, out / "reenact.mp4", animator, side_by_side_view=True,
                      keep_frames=True, avatar=avatar)
    views = list(animator.orbit(avatar, source, 48))
    orbit_video = gio.write_video(out / "novel_views.mp4", views, fps=25)

    # contact sheet: driver frames, reenacted frames, orbit frames
    picks = np.linspace(0, driver.n_frames - 1, 6).round().astype(int)[:-1]
    seen = gio.tensor_to_image(animator.source_image(source, 0)[0])  # as the network sees it
    sheet = gio.write_image_grid([[seen] + [gio.resize_frame(driver.frame(i), animator.size) for i in picks],
                                  [seen] + [summary.frames[i] for i in picks],
                                  [seen] + views[::8][:5]],
                                 out / "contact_sheet.png", row_labels=["driver", "avatar", "novel views"],
                                 background=(20, 20, 20))
    written = {"reenact": summary.out, "novel_views": orbit_video, "contact_sheet": sheet}
    if animator.head.id == BUNDLED_HEAD_ID:  # the bundled voice speaks the bundled head only
        speaker = Speaker.load(None, head=animator.head, device="cpu")
        sentence = gio.read_audio(bundled(DEMO_SENTENCE), speaker.sample_rate)
        written["speak"] = speak(source.folder, out / "speak.mp4", animator, speaker, sentence).out
    return written
