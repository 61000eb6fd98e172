"""Training and evaluation samples: (source, target) frame pairs from a dataset.

Self-reenactment (``mode="self"``, SPEC §4): source and target are two frames of
one video; the target frame (its own parameters, as the reference's training
loader) is both the driver and the ground truth.
Cross-reenactment (``mode="cross"``): the source comes from a video of another
identity; the target's expression, poses and camera drive the SOURCE's shape (as
the reference's driver loader), and ``target_image`` is the driver's frame (there
is no ground truth).

Sampling is a pure function of (seed, epoch, index), so the same seed gives
bit-identical samples in any process and with any number of DataLoader workers.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from torch.utils.data import default_collate

from gagavatar.data.format import SPLITS, Dataset
from gagavatar.data.frame import FrameParams
from gagavatar.head import canonical_head_id

MODES = ("self", "cross")


class PairDataset(torch.utils.data.Dataset):
    """Frame pairs of one split of a dataset (see docs/data-format.md).

    Args:
        root: dataset folder.
        split: "train", "val" or "test"; splits hold disjoint identities.
        mode: "self" (both frames from one video) or "cross" (source from another identity).
        size: output image size (square, pixels); None keeps the stored size.
        background: RGB in [0, 1] the frames are composited on with their mattes
            (the reference trains on black).
        seed: sampling seed. ``set_epoch(e)`` draws new pairs for epoch ``e``.
        length: number of samples; None = one sample per valid target frame of the
            split (in order). With a length, target frames are drawn at random.
        source_frame: "random" (any other valid frame) or "first" (the first valid
            frame of the source video, as the reference evaluates); default "random"
            for train and "first" for val/test.
        frames: (start, stop): only frames start <= i < stop of each video are sources or
            targets (personalising holds out a clip's end this way); None: all.

    A sample is a dict (``collate`` batches them):
        source_image, target_image [3, S, S] in [0, 1], composited on ``background``
        (``VideoRecord.image``); source, target: ``FrameParams`` of one frame, cameras at
        S x S (the target's vertices are ``target.vertices(head)``); target_bbox [4]
        (normalised xyxy head box); target_landmarks [L, 2] (pixels at S);
        source_video, target_video (str), source_frame, target_frame (int).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", mode: str = "self",
                 size: int | None = None, background=(0.0, 0.0, 0.0), seed: int = 0,
                 length: int | None = None, source_frame: str | None = None, frames: tuple[int, int] | None = None):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; use one of {SPLITS}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; use one of {MODES}")
        source_frame = source_frame or ("random" if split == "train" else "first")
        if source_frame not in ("random", "first"):
            raise ValueError(f"source_frame={source_frame!r}; use 'random' or 'first'")
        self.dataset = Dataset(root)
        self.videos = self.dataset.split(split)
        if not self.videos:
            raise ValueError(f"{self.dataset.root}: split {split!r} has no videos "
                             f"(identities per split: { {s: len(self.dataset.identities(s)) for s in SPLITS} })")
        models = sorted({canonical_head_id(v.info.head_model) for v in self.videos})
        if len(models) > 1:
            raise ValueError(f"{self.dataset.root}: split {split!r} mixes head models {models}; "
                             f"pairs need one head model")
        self.split, self.mode, self.size, self.seed = split, mode, size, seed
        self.source_frame, self.length = source_frame, length
        self.background = tuple(float(c) for c in np.broadcast_to(np.asarray(background, float), (3,)))
        self.epoch = 0
        def usable(video) -> np.ndarray:  # valid frames within ``frames`` (reads each small params.npz once)
            valid = np.flatnonzero(video.params["valid"])
            return valid if frames is None else valid[(valid >= frames[0]) & (valid < frames[1])]

        self.valid_frames = [usable(v) for v in self.videos]
        self.targets = [(vi, int(f)) for vi, frames in enumerate(self.valid_frames) for f in frames]
        if not self.targets:
            raise ValueError(f"{self.dataset.root}: split {split!r} has no valid frames"
                             + (f" in frames {frames[0]}..{frames[1] - 1}" if frames is not None else ""))
        self.identities = sorted({v.identity for v in self.videos})
        if mode == "cross":
            if len(self.identities) < 2:
                raise ValueError(f"{self.dataset.root}: cross mode needs two identities in split "
                                 f"{split!r}, found {self.identities}")
            self._other_videos = {
                ident: [vi for vi, v in enumerate(self.videos)
                        if v.identity != ident and len(self.valid_frames[vi])]
                for ident in self.identities}

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.targets)

    def set_epoch(self, epoch: int) -> None:
        """Draw different sources (and targets, with ``length``) for another epoch."""
        self.epoch = int(epoch)

    def pair(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((source video, source frame), (target video, target frame)) of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.length is None:
            tv, tf = self.targets[index]
        else:
            tv, tf = self.targets[int(rng.integers(len(self.targets)))]
        if self.mode == "self":
            sv = tv
        else:
            others = self._other_videos[self.videos[tv].identity]
            sv = others[int(rng.integers(len(others)))]
        frames = self.valid_frames[sv]
        if self.source_frame == "first":
            sf = int(frames[0])
        else:
            if self.mode == "self" and len(frames) > 1:
                frames = frames[frames != tf]  # a different frame of the same video
            sf = int(frames[rng.integers(len(frames))])
        return (sv, sf), (tv, tf)

    def __getitem__(self, index: int) -> dict:
        (sv, sf), (tv, tf) = self.pair(index)
        source, target = self.videos[sv], self.videos[tv]
        source_frames, target_frames = source.frames(sf), target.frames(tf)
        if self.mode == "cross":  # the source's identity, driven by the target's motion
            target_frames = target_frames.replace(shape=source_frames.shape)
        if self.size is not None:  # the cameras see the images at their output size
            source_frames, target_frames = (f.replace(camera=f.camera.resized(self.size))
                                            for f in (source_frames, target_frames))
        landmark_scale = torch.tensor([target_frames.camera.width / target.width,
                                       target_frames.camera.height / target.height])
        return {
            "source_image": source.image(sf, self.size, self.background),
            "target_image": target.image(tf, self.size, self.background),
            "source": source_frames,
            "target": target_frames,
            "target_bbox": torch.from_numpy(target.params["bbox"][tf].copy()),
            "target_landmarks": torch.from_numpy(target.params["landmarks"][tf].copy()) * landmark_scale,
            "source_video": source.id, "source_frame": sf,
            "target_video": target.id, "target_frame": tf,
        }


def collate(samples: list[dict]) -> dict:
    """A batch of ``PairDataset`` samples: FrameParams joined with ``FrameParams.cat``, the rest
    as torch's ``default_collate`` does (tensors stacked, strings and ints listed)."""
    return {key: FrameParams.cat([s[key] for s in samples]) if isinstance(samples[0][key], FrameParams)
            else default_collate([s[key] for s in samples]) for key in samples[0]}
