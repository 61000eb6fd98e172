"""Speech training and evaluation data: talking clips as (sound, motion) pairs, and random
aligned windows of them.

    clips = clips_from_dataset("DATASET", split="train")     # videos with sound, motion at 25 fps
    clips = read_clips("clips.npz")                           # or a file save_clips wrote (or a dataset)
    windows = SpeechWindows(clips, window_frames=100)         # (audio [64000], motion [100, D])
    save_clips("clips.npz", clips); clips = load_clips("clips.npz")

Motion is ARTalk's vector (SPEC §11, ``postprocess``): [expression (D-6) | head rotation 3 |
jaw 3], read from a tracked video with ``postprocess.frames_motion``. Sound and motion share
time 0: frame ``t`` spans samples ``[t * rate / fps, (t + 1) * rate / fps)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.audio import samples_for_frames
from gagavatar.data.format import Dataset
from gagavatar.errors import InputError
from gagavatar.io import SPEECH_RATE, atomic_path
from gagavatar.speech.postprocess import frames_motion

log = logging.getLogger(__name__)

MOTION_FPS = 25.0  # ARTalk's motion rate: every clip is brought to it


@dataclass
class SpeechClip:
    """One talking clip. audio: float32 [N], 16 kHz mono, sample 0 = frame 0; motion: float32
    [F, D] at ``fps``: [expression (D-6) | head rotation 3 | jaw 3]."""

    id: str
    audio: np.ndarray
    motion: np.ndarray
    fps: float = MOTION_FPS

    @property
    def seconds(self) -> float:
        return self.motion.shape[0] / self.fps


def resample_motion(motion: np.ndarray, fps: float, to_fps: float = MOTION_FPS) -> np.ndarray:
    """Motion [F, D] at ``fps`` -> [round(F * to_fps / fps), D] at ``to_fps``, linearly
    interpolated in time (frame t of the result is at time t / to_fps)."""
    n = max(1, int(round(motion.shape[0] * to_fps / fps)))
    t = np.minimum(np.arange(n) / to_fps * fps, motion.shape[0] - 1)  # in source frames, clamped at the end
    return np.stack([np.interp(t, np.arange(motion.shape[0]), column) for column in motion.T], 1).astype(np.float32)


def clips_from_dataset(root, split: str | None = None, expression_dims: int = 100) -> list[SpeechClip]:
    """The videos of a dataset (one split, or all) that have sound, as ``SpeechClip`` s at 25 fps.

    Motion from the tracked parameters (``frames_motion``; frames without a face hold their
    nearest tracked frame's parameters, as params.npz stores them); a video at another frame
    rate is resampled to 25 fps. Videos without sound are skipped and counted in a warning;
    none with sound at all is an ``InputError``."""
    dataset = Dataset(root)
    videos = dataset.videos if split is None else dataset.split(split)
    clips, silent = [], 0
    for video in videos:
        audio = video.audio()
        if audio is None:
            silent += 1
            continue
        motion = frames_motion(video.frames(), expression_dims).numpy().astype(np.float32)
        if video.info.fps != MOTION_FPS:
            motion = resample_motion(motion, video.info.fps)
        clips.append(SpeechClip(video.id, audio, motion))
    where = f"{root}" + ("" if split is None else f" (split {split})")
    if silent:
        log.warning("%s: %d of %d videos have no sound and were skipped", where, silent, len(videos))
    if not clips:
        raise InputError(f"{where}: none of its {len(videos)} videos has sound; build the dataset from videos "
                         f"with sound (build-dataset keeps it as audio.wav), or give another split")
    return clips


def read_clips(path: str | Path, split: str | None = None, expression_dims: int = 100) -> list[SpeechClip]:
    """Clips from a clips file (``save_clips``; read whole) or a dataset folder (its ``split``)."""
    path = Path(path)
    if path.is_file():
        return load_clips(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such clips file (.npz) or dataset folder")
    return clips_from_dataset(path, split, expression_dims)


class SpeechWindows(torch.utils.data.Dataset):
    """Random aligned windows of clips: item i -> (audio float32 [window_frames * rate / fps],
    motion float32 [window_frames, D]).

    A window starts at a random frame of a random clip (clips weighted by how many windows
    they hold); item i is a function of (seed, epoch, i), so workers agree and a run resumes
    the same; ``set_epoch`` draws new windows. ``windows_per_epoch``: the length (default:
    the clips' frames / window_frames). Clips shorter than a window are left out."""

    def __init__(self, clips: list[SpeechClip], window_frames: int, sample_rate: int = SPEECH_RATE,
                 fps: float = MOTION_FPS, seed: int = 0, windows_per_epoch: int | None = None):
        if window_frames < 1:
            raise ValueError(f"window_frames={window_frames}: use at least 1 frame")
        for clip in clips:
            if clip.fps != fps:
                raise InputError(f"clip {clip.id!r} has motion at {clip.fps} fps, the windows {fps}; resample it "
                                 f"(resample_motion) or make the windows at its rate")
        dims = {clip.motion.shape[1] for clip in clips}
        if len(dims) > 1:
            raise InputError(f"the clips' motions have different sizes {sorted(dims)}; read them all with one "
                             f"expression_dims")
        self.clips = [c for c in clips if c.motion.shape[0] >= window_frames]
        if not self.clips:
            raise InputError(f"no clip holds a window of {window_frames} frames ({window_frames / fps:.1f} s); "
                             f"give longer clips or a shorter window")
        self.window_frames, self.sample_rate, self.fps = window_frames, sample_rate, fps
        self.window_samples = samples_for_frames(window_frames, fps, sample_rate)
        self.seed, self.epoch = seed, 0
        starts = np.array([c.motion.shape[0] - window_frames + 1 for c in self.clips], np.float64)
        self._weights = starts / starts.sum()
        total = sum(c.motion.shape[0] for c in self.clips)
        self.length = windows_per_epoch or max(1, total // window_frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip = self.clips[rng.choice(len(self.clips), p=self._weights)]
        start = int(rng.integers(clip.motion.shape[0] - self.window_frames + 1))
        first = samples_for_frames(start, self.fps, self.sample_rate)
        audio = clip.audio[first:first + self.window_samples]
        audio = np.pad(audio, (0, self.window_samples - audio.shape[0]))  # a clip's sound may end a little early
        motion = clip.motion[start:start + self.window_frames]
        return torch.from_numpy(np.ascontiguousarray(audio, np.float32)), torch.from_numpy(
            np.ascontiguousarray(motion, np.float32))


def save_clips(path: str | Path, clips: list[SpeechClip]) -> Path:
    """Clips in one .npz (atomic; no pickles): ids, fps, and the sounds and motions joined
    end to end with their lengths."""
    if not clips:
        raise InputError(f"{path}: no clips to save")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temporary name
            np.savez(f, ids=np.array([c.id for c in clips]), fps=np.array([c.fps for c in clips], np.float64),
                     audio=np.concatenate([c.audio for c in clips]).astype(np.float32),
                     audio_lengths=np.array([len(c.audio) for c in clips], np.int64),
                     motion=np.concatenate([c.motion for c in clips]).astype(np.float32),
                     motion_lengths=np.array([len(c.motion) for c in clips], np.int64))
    return path


def load_clips(path: str | Path) -> list[SpeechClip]:
    """The clips ``save_clips`` wrote."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: speech clips file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("ids", "fps", "audio", "audio_lengths", "motion", "motion_lengths")}
    except (KeyError, ValueError, OSError) as e:  # numpy's own words would suggest loading a pickle
        raise InputError(f"{path}: not a speech clips file (a .npz of talking clips, as gagavatar synth-speech "
                         f"writes); give one, or a dataset folder of videos with sound (gagavatar build-dataset)"
                         ) from e
    lengths_agree = (arrays["audio_lengths"].sum() == len(arrays["audio"])
                     and arrays["motion_lengths"].sum() == len(arrays["motion"]))
    counts = {len(arrays[k]) for k in ("ids", "fps", "audio_lengths", "motion_lengths")}
    if not lengths_agree or len(counts) != 1 or arrays["motion"].ndim != 2:
        raise InputError(f"{path}: its arrays do not agree (lengths, clip counts); write it again with save_clips")
    audio = np.split(arrays["audio"], np.cumsum(arrays["audio_lengths"])[:-1])
    motion = np.split(arrays["motion"], np.cumsum(arrays["motion_lengths"])[:-1])
    return [SpeechClip(str(i), a, m, float(fps)) for i, a, m, fps in zip(arrays["ids"], audio, motion, arrays["fps"])]
