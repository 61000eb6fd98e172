"""Videos in and out through the ffmpeg that imageio-ffmpeg ships: frames as RGB uint8
[H, W, 3]; ``write_video`` writes an H.264 mp4 every player opens, atomically."""
from __future__ import annotations

import errno
import re
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from gagavatar.errors import InputError, OutputError
from gagavatar.io.audio import write_wav
from gagavatar.io.ffmpeg import ffmpeg_error, ffmpeg_exe
from gagavatar.io.files import atomic_path, check_output, free_bytes, no_space_error, remove_stale_temps
from gagavatar.io.images import list_images, read_image, to_rgb_uint8

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
VIDEO_OUTPUT_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv")  # containers that hold H.264 (+ AAC): what write_video makes


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoFileInfo:
    """What a video file says about itself. ``n_frames`` may be an estimate (from duration)."""

    fps: float
    width: int
    height: int
    n_frames: int


def _header_info(meta: dict, fps: float | None = None) -> VideoFileInfo:
    """What the header says, for frames decoded at ``fps`` when given (else the clip's rate)."""
    duration = float(meta.get("duration") or 0.0)
    if fps is not None:
        width, height = meta.get("size", (0, 0))
        return VideoFileInfo(float(fps), int(width), int(height), int(round(duration * fps)))
    fps = float(meta.get("fps") or 25.0)
    width, height = meta.get("size", (0, 0))
    n = meta.get("nframes")
    if not n or n == float("inf"):
        n = int(round(float(meta.get("duration") or 0.0) * fps))
    return VideoFileInfo(fps, int(width), int(height), int(n))


def video_info(path: str | Path, fps: float | None = None) -> VideoFileInfo:
    """Frame rate, size and (approximate) frame count of a video file, as ``iter_video`` decodes
    it (``fps``: at that rate instead of the clip's own)."""
    reader = _open_video(path, fps)
    try:
        return _header_info(reader.get_meta_data(), fps)
    finally:
        reader.close()


def _video_rates(path: Path) -> tuple[float | None, float | None] | None:
    """(average frame rate, base rate "tbr") of the file's first video stream as ffmpeg reads its
    header ((None, None): not read); None when it has sound but no video stream (a sound file)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                            text=True, errors="replace")
    streams = [line for line in result.stderr.splitlines() if "Stream #" in line]
    for line in streams:
        if "Video:" in line:
            rates = [re.search(rf"([\d.]+)(k?) {name}\b", line) for name in ("fps", "tbr")]
            return tuple(float(m[1]) * (1000 if m[2] else 1) if m else None for m in rates)
    return None if any("Audio:" in line for line in streams) else (None, None)


def _open_video(path: str | Path, fps: float | None = None):
    """imageio's ffmpeg reader of ``path``, decoding by the frames' timestamps at ``fps`` (default:
    the clip's average rate). A variable-frame-rate clip (most phone videos) would otherwise come
    out at its base rate, with repeated frames, while its header gives the average: a 1.6 s clip
    would drive a 9 s result."""
    import imageio.v2 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); give the video itself")
    rates = _video_rates(path)
    if rates is None:
        raise InputError(f"{path} has no video stream (a sound file?): give a video, an image or a folder of images")
    average, base = rates
    if fps is None and average and base and abs(average - base) > 0.005:
        fps = average  # variable frame rate: resampled on the timestamps to its real duration
    try:
        return iio.get_reader(path, "ffmpeg", **({"fps": fps} if fps else {}))
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        raise InputError(f"{path}: cannot open this video ({type(e).__name__}: {_reader_error(e)}): the file is "
                         f"damaged or cut short (copy it again), or in a form ffmpeg does not read (re-encode it, "
                         f"e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4)") from e


def _reader_error(error: Exception) -> str:
    """imageio's error without the ffmpeg banner it appends: ffmpeg's last line says what went wrong."""
    text, _, stderr = str(error).partition("=== stderr ===")
    return " ".join(f"{text.strip()} {ffmpeg_error(stderr) if stderr else ''}".split())


class VideoFrames:
    """The frames of a video file, an iterator of RGB uint8 [H, W, 3] (``iter_video``).

    A file whose end is damaged (cut short while copying or recording) decodes fewer
    frames than its header announces; the frames that decode are used, and after the
    last one ``damaged`` / ``warning()`` say so ("only N of M frames could be decoded").
    """

    def __init__(self, path: str | Path, fps: float | None = None):
        self.path = Path(path)
        self._reader = _open_video(self.path, fps)
        self.n_expected = _header_info(self._reader.get_meta_data(), fps).n_frames  # from the header's duration
        self.n_decoded = 0
        self.finished = False
        self._frames = self._decode()

    def _decode(self) -> Iterator[np.ndarray]:
        try:
            for frame in self._reader:
                self.n_decoded += 1
                yield to_rgb_uint8(frame)
        except (OSError, RuntimeError, ValueError) as e:
            raise InputError(f"{self.path}: cannot decode frame {self.n_decoded} ({type(e).__name__}: {e}); "
                             f"re-encode the video, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e
        finally:
            self._reader.close()
        self.finished = True
        if self.n_decoded == 0:
            raise InputError(f"{self.path}: the video has no frames that can be decoded")

    def __iter__(self) -> VideoFrames:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()
        self._reader.close()

    @property
    def damaged(self) -> bool:
        """All frames were read, and clearly fewer than the header announces (the estimate
        from the duration is off by a frame or two in healthy files)."""
        return self.finished and self.n_decoded < self.n_expected - max(2, self.n_expected // 100)

    def warning(self) -> str | None:
        """One line when the file is damaged, else None."""
        if not self.damaged:
            return None
        return f"only {self.n_decoded} of {self.n_expected} frames could be decoded; the rest of {self.path} is damaged"


def iter_video(path: str | Path, fps: float | None = None) -> VideoFrames:
    """The frames of a video file as RGB uint8 [H, W, 3] (an iterator; see ``VideoFrames``
    for a file whose end is damaged), by their timestamps at ``fps`` (default: the clip's
    average rate, so a variable-rate clip keeps its duration: ``video_info`` says the same)."""
    return VideoFrames(path, fps)


def iter_frames(source: str | Path) -> Iterator[np.ndarray]:
    """Frames of an image file, a folder of images, or a video file (RGB uint8 [H, W, 3])."""
    source = Path(source)
    if source.is_dir():
        for p in list_images(source):
            yield read_image(p)
    elif is_video(source):
        yield from iter_video(source)
    elif source.is_file():
        yield read_image(source)
    else:
        raise InputError(f"{source}: no such file or folder")


def frame_names(source: str | Path) -> list[str] | None:
    """Names of a folder's images or a single image's stem; None for a video (frames are numbered)."""
    source = Path(source)
    if source.is_dir():
        return [p.stem for p in list_images(source)]
    if source.is_file() and not is_video(source):
        return [source.stem]
    return None


@contextmanager
def _sound_file(beside: Path, audio: np.ndarray | None, rate: int) -> Iterator[Path | None]:
    """``audio`` as a temporary 16-bit WAV file beside the video being written (None: no sound)."""
    if audio is None:
        yield None
        return
    path = beside.with_name(beside.name + ".wav")
    try:
        write_wav(path, audio, rate)
        yield path
    finally:
        path.unlink(missing_ok=True)


class _Encoder:
    """ffmpeg encoding raw RGB frames from a pipe into an H.264 yuv420p mp4 at ``path``.

    Its own process group, so Ctrl-C reaches only Python (which then stops it: ffmpeg
    would otherwise finish a short but playable file); stderr is kept for the message."""

    def __init__(self, path: Path, width: int, height: int, fps: float, quality: int, audio: Path | None = None):
        from fractions import Fraction

        crf = int((1 - quality / 10.0) * 51)  # imageio's 0-10 quality scale, as before
        sound = ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if audio else ["-an"]
        cmd = [ffmpeg_exe(), "-y", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", *sound,
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), str(path)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def write(self, frame: np.ndarray) -> bool:
        """False when ffmpeg has stopped reading (it failed; ``finish`` says why)."""
        try:
            self.process.stdin.write(frame.tobytes())
            return True
        except (BrokenPipeError, OSError):
            return False

    def finish(self) -> int:
        """Close the input, wait for ffmpeg; its exit status."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        code = self.process.wait()
        self._reader.join()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join()


def count_decodable_frames(path: str | Path) -> tuple[int, str]:
    """(frames that decode, ffmpeg's error text) of a video file: every frame is decoded."""
    result = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null",
                             "-progress", "pipe:1", "-"], capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", result.stdout, flags=re.M)
    return (int(counts[-1]) if counts and result.returncode == 0 else 0), result.stderr


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, quality: int = 8,
                audio: np.ndarray | None = None, audio_rate: int = 16000) -> Path:
    """Write frames (RGB uint8 [H, W, 3], all one size) as an H.264 yuv420p mp4 that every player opens;
    with ``audio`` (mono float samples [N] at ``audio_rate``) it gets an AAC sound track, from time 0.

    Atomic: the video is encoded into a temporary file beside ``path``, checked (the encoder
    succeeded and every frame decodes), then renamed over ``path``. On any error or Ctrl-C
    ``path`` keeps what it held and the temporary file is removed. A full disk or an
    unwritable folder raise ``OutputError``, one line. Odd sizes are padded by one black
    pixel (yuv420p needs even sizes). ``quality`` is imageio's 0-10 scale. Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name in it, e.g. {path / 'out.mp4'}", errno.EISDIR)
    check_output(path, suffixes=VIDEO_OUTPUT_EXTENSIONS)  # before the first frame is made, not after the last
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"{path}: the frame rate must be a positive number, got {fps}")
    remove_stale_temps(path.parent, path.name)  # what an earlier writer, killed, left
    with atomic_path(path) as tmp, _sound_file(tmp, audio, audio_rate) as sound:
        open(tmp, "wb").close()  # an unwritable folder fails here, in Python, with a plain error
        encoder, n, size = None, 0, None
        try:
            for frame in frames:
                f = to_rgb_uint8(frame)
                H, W = f.shape[:2]
                if encoder is None:
                    size = (H, W)
                    encoder = _Encoder(tmp, W + W % 2, H + H % 2, fps, quality, sound)
                elif (H, W) != size:
                    raise InputError(f"{path}: frame {n} is {W}x{H}, the first frame {size[1]}x{size[0]}; "
                                     f"a video needs frames of one size")
                if H % 2 or W % 2:
                    f = np.pad(f, ((0, H % 2), (0, W % 2), (0, 0)))
                if not encoder.write(np.ascontiguousarray(f)):
                    break  # ffmpeg stopped: finish() gives its status and message
                n += 1
            if encoder is None:
                raise InputError(f"{path}: no frames to write")
            code = encoder.finish()
        except BaseException:
            if encoder is not None:
                encoder.kill()
            raise
        if code != 0 or "No space left on device" in encoder.stderr:
            if "No space left on device" in encoder.stderr:
                raise no_space_error(path)
            raise OutputError(f"could not write {path}: the video encoder (ffmpeg) failed: "
                              f"{ffmpeg_error(encoder.stderr)}")
        decoded, errors = count_decodable_frames(tmp)
        if decoded != n:
            if "No space left on device" in errors or free_bytes(tmp.parent) == 0:
                raise no_space_error(path)
            raise OutputError(f"could not write {path}: the encoded video has {decoded} readable frames "
                              f"of {n} ({ffmpeg_error(errors)})")
    return path
