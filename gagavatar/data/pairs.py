"""Training and evaluation samples: (source, target) frame pairs from a dataset.

Self-reenactment (``mode="self"``, SPEC §4): source and target are two frames of
one video; the target frame is both the driver and the ground truth.
Cross-reenactment (``mode="cross"``): the source comes from a video of another
identity; the target's expression, jaw, eyes and camera drive the source's
shape, and ``target_image`` is the driver's frame (there is no ground truth).

Sampling is a pure function of (seed, epoch, index), so the same seed gives
bit-identical samples in any process and with any number of DataLoader workers.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from gagavatar.data.format import SPLITS, Dataset, composite, image_to_tensor
from gagavatar.io import resize_image

MODES = ("self", "cross")
_HEAD_KEYS = ("expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")


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
        head_model: optional head model (``gagavatar.head.HeadModel``); when given each
            sample also has ``target_vertices`` [V,3] in world units (x ``scale``).

    A sample is a dict:
        source_image, target_image [3,H,W] in [0,1], composited on ``background``;
        source_matte, target_matte [1,H,W]; source_transform, target_transform [3,4]
        (reference convention); source_K, target_K [3,3] (pixels at the output size);
        source_bbox, target_bbox [4] (normalised xyxy head box); target_landmarks [L,2]
        (pixels at the output size); source_shape [S]; target head parameters
        target_shape [S] (= source_shape: the source's identity is animated),
        target_expression [E], target_global_pose / target_neck_pose / target_jaw_pose /
        target_translation [3], target_eye_pose [6]; scale [] (world units per head-model
        unit); source_video, target_video (str), source_frame, target_frame (int).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", mode: str = "self",
                 size: int | None = None, background=(0.0, 0.0, 0.0), seed: int = 0,
                 length: int | None = None, source_frame: str | None = None, head_model=None):
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
        models = sorted({v.info.head_model for v in self.videos})
        if len(models) > 1:
            raise ValueError(f"{self.dataset.root}: split {split!r} mixes head models {models}; "
                             f"pairs need one head model")
        self.split, self.mode, self.size, self.seed = split, mode, size, seed
        self.source_frame, self.length, self.head_model = source_frame, length, head_model
        self.background = tuple(float(c) for c in np.broadcast_to(np.asarray(background, float), (3,)))
        self.epoch = 0
        # Valid frames of every video (reads each small params.npz once).
        self.valid_frames = [np.flatnonzero(v.params["valid"]) for v in self.videos]
        self.targets = [(vi, int(f)) for vi, frames in enumerate(self.valid_frames) for f in frames]
        if not self.targets:
            raise ValueError(f"{self.dataset.root}: split {split!r} has no valid frames")
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
        s_img, s_matte, s_K = self._image(source, sf)
        t_img, t_matte, t_K = self._image(target, tf)
        sp, tp = source.params, target.params
        out = {
            "source_image": s_img, "source_matte": s_matte,
            "source_transform": torch.from_numpy(sp["transform"][sf].copy()),
            "source_K": s_K,
            "source_bbox": torch.from_numpy(sp["bbox"][sf].copy()),
            "source_shape": torch.from_numpy(sp.shape_of(sf).copy()),
            "target_image": t_img, "target_matte": t_matte,
            "target_transform": torch.from_numpy(tp["transform"][tf].copy()),
            "target_K": t_K,
            "target_bbox": torch.from_numpy(tp["bbox"][tf].copy()),
            "target_landmarks": torch.from_numpy(tp["landmarks"][tf].copy()) * self._landmark_scale(target),
            # The source identity is animated: its shape, the driver's expression and pose.
            "target_shape": torch.from_numpy(sp.shape_of(sf).copy()),
            **{f"target_{k}": torch.from_numpy(tp[k][tf].copy()) for k in _HEAD_KEYS},
            "scale": torch.tensor(sp.scale, dtype=torch.float32),
            "source_video": source.id, "source_frame": sf,
            "target_video": target.id, "target_frame": tf,
        }
        if self.head_model is not None:
            out["target_vertices"] = self._vertices(out)
        return out

    def _image(self, video, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Composited image [3,H,W], matte [1,H,W], K [3,3] at the output size."""
        img = image_to_tensor(video.frame(i))
        matte = image_to_tensor(video.matte(i))
        K = torch.from_numpy(video.params["K"][i].copy())
        if self.size is not None and (video.width, video.height) != (self.size, self.size):
            img, matte = (resize_image(x, self.size).clamp(0, 1) for x in (img, matte))
            K[0] *= self.size / video.width
            K[1] *= self.size / video.height
        return composite(img, matte, self.background), matte, K

    def _landmark_scale(self, video) -> torch.Tensor:
        if self.size is None:
            return torch.ones(2)
        return torch.tensor([self.size / video.width, self.size / video.height])

    @torch.no_grad()
    def _vertices(self, sample: dict) -> torch.Tensor:
        """World-space vertices [V,3] of the target's head parameters (x ``scale``)."""
        args = [sample[f"target_{k}"][None] for k in ("shape",) + _HEAD_KEYS]
        # HeadModel.forward(shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, translation);
        # the dataset's scale replaces whatever scale the model was loaded with
        own_scale = float(getattr(self.head_model, "scale", 1.0))
        return self.head_model(*args)[0] * (sample["scale"] / own_scale)
