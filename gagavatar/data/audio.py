"""A video's sound in a dataset: ``audio.wav`` in its folder, 16 kHz mono PCM16, sample 0 at
frame 0's time and exactly as long as the frames (``n_frames / fps`` seconds), so frame ``i``
is samples ``[i * 16000 / fps, (i + 1) * 16000 / fps)``. Decoding and WAV writing are
``gagavatar.io``'s; here is only the rule that ties the sound to the frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gagavatar.data.errors import DatasetError, MissingFileError
from gagavatar.data.layout import AUDIO_RATE
from gagavatar.errors import NoSoundError
from gagavatar.io import SOUND_RATE, atomic_path, read_audio, write_wav


def samples_for_frames(n_frames: int, fps: float, rate: int = AUDIO_RATE) -> int:
    """Samples of sound that ``n_frames`` frames at ``fps`` span."""
    return int(round(n_frames * rate / fps))


def fit_to_frames(samples: np.ndarray, n_frames: int, fps: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """Sound [N] (or [N, channels]) whose sample 0 is frame 0's time, cut (or padded with silence
    at the end) to the length of the frames: float32 [samples_for_frames(n_frames, fps), ...]. A
    clip whose frames were cut short (``max_frames``, a damaged end) keeps the sound of those frames."""
    n = samples_for_frames(n_frames, fps, rate)
    samples = np.asarray(samples, np.float32)[:n]
    return np.pad(samples, [(0, n - samples.shape[0])] + [(0, 0)] * (samples.ndim - 1))


def sound_track(path: str | Path, n_frames: int, fps: float) -> np.ndarray | None:
    """A recording's or a video's own sound as the sound track of ``n_frames`` frames at ``fps``
    that start at its time 0: float32 [N, 2] at ``SOUND_RATE`` (48 kHz stereo, the recording's
    quality; a dataset keeps 16 kHz mono), as long as the frames. None: the file has no sound."""
    try:
        return fit_to_frames(read_audio(path, SOUND_RATE, channels=2), n_frames, fps, SOUND_RATE)
    except NoSoundError:
        return None


def write_audio(path: str | Path, samples: np.ndarray, n_frames: int, fps: float) -> Path:
    """Write a video's sound (mono float [N] at 16 kHz, sample 0 at frame 0) atomically, exactly
    as long as the frames; a sound more than a frame longer or shorter is refused (it is not
    these frames' sound: cut it with ``fit_to_frames``)."""
    expected = samples_for_frames(n_frames, fps)
    if abs(len(samples) - expected) > AUDIO_RATE / fps:
        raise DatasetError(f"{path}: {len(samples)} samples of sound for {n_frames} frames at {fps} fps "
                           f"(expected {expected}); cut it to the frames with fit_to_frames")
    with atomic_path(path) as tmp:
        write_wav(tmp, fit_to_frames(samples, n_frames, fps), AUDIO_RATE)
    return Path(path)


def read_video_audio(path: str | Path) -> np.ndarray:
    """A video's ``audio.wav`` as float32 [N] at 16 kHz."""
    if not Path(path).is_file():
        raise MissingFileError(f"{path}: the video's sound file is missing (its video.json says it has audio)")
    return read_audio(path, AUDIO_RATE)
