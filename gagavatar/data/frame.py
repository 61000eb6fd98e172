"""The one frame type: head-model parameters and a camera, and the world contract.

``FrameParams`` is what every stage produces or takes: params.npz and the
reference's pickles are read into it, the tracker and the pair loader make it,
the motion controls map it, and the network is given its camera and its
vertices. Two rules, written here once:

- vertices: ``frames.vertices(head)`` = the head model at every pose it has
  (global, neck, jaw, eyes), plus translation, times ``WORLD_SCALE``;
- camera: a stored frame's camera is its reference transform (SPEC §7.1) with
  its stored intrinsics ``K`` at its stored image size, so a crop of any size
  renders right (``Camera.resized`` carries it to the render size).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry import WORLD_SCALE, Camera, reference_to_viewmat

# the head-model fields, in HeadModel.forward's argument order
HEAD_FIELDS = ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")


@dataclass
class FrameParams:
    """F frames (one frame is F = 1) of head-model parameters and cameras.

    shape [F, S], expression [F, E]; global_pose, neck_pose, jaw_pose [F, 3] and
    eye_pose [F, 6] (left, right) axis-angle in radians; translation [F, 3] in
    head-model units; camera: ``Camera`` with F cameras (OpenCV viewmat [F, 4, 4],
    K [F, 3, 3] in pixels at camera.width x camera.height).

    Indexing keeps the batch axis (``frames[3]`` has F = 1); ``FrameParams.cat``
    joins batches (the pair loader's collate); ``to`` moves every tensor.
    """

    shape: Tensor
    expression: Tensor
    global_pose: Tensor
    neck_pose: Tensor
    jaw_pose: Tensor
    eye_pose: Tensor
    translation: Tensor
    camera: Camera

    def __post_init__(self):
        n = {name: getattr(self, name).shape[0] for name in HEAD_FIELDS} | {"camera": len(self.camera)}
        if len(set(n.values())) != 1:
            raise ValueError(f"FrameParams fields disagree on the number of frames: {n}")

    def __len__(self) -> int:
        return self.shape.shape[0]

    def __getitem__(self, index) -> "FrameParams":
        index = slice(index, index + 1) if isinstance(index, int) else index
        return FrameParams(**{name: getattr(self, name)[index] for name in HEAD_FIELDS}, camera=self.camera[index])

    def to(self, *args, **kwargs) -> "FrameParams":
        return FrameParams(**{name: getattr(self, name).to(*args, **kwargs) for name in HEAD_FIELDS},
                           camera=self.camera.to(*args, **kwargs))

    def replace(self, **changes) -> "FrameParams":
        return replace(self, **changes)

    @staticmethod
    def cat(frames: list["FrameParams"]) -> "FrameParams":
        return FrameParams(**{name: torch.cat([getattr(f, name) for f in frames]) for name in HEAD_FIELDS},
                           camera=Camera.cat([f.camera for f in frames]))

    def repeat(self, n: int) -> "FrameParams":
        """A one-frame FrameParams repeated n times (a still source, seen by n cameras)."""
        if len(self) != 1:
            raise ValueError(f"repeat needs one frame, got {len(self)}")
        return self[[0] * n]

    # ------------------------------------------------------------------ the world contract
    def vertices(self, head) -> Tensor:
        """World-space vertices [F, V, 3] of ``head`` (a ``HeadModel``) at these parameters."""
        like = head.v_template
        return head(*[getattr(self, name).to(like) for name in HEAD_FIELDS]) * WORLD_SCALE

    @classmethod
    def from_arrays(cls, arrays, width: int, height: int, index=None) -> "FrameParams":
        """Frames of stored arrays (a ``VideoParams`` or a params.npz-like dict: ``FRAME_ARRAYS``
        of ``gagavatar.data.format``; ``shape`` may be one row [S] for all frames) at ``index``
        (None: all). The camera is the stored transform with the stored ``K``, whose image size
        ``width`` x ``height`` is the stored frames' (the video's)."""
        n = np.shape(arrays["expression"])[0]
        index = np.arange(n) if index is None else np.atleast_1d(np.arange(n)[index])
        t = lambda name: torch.as_tensor(np.asarray(arrays[name], np.float32)[index])  # noqa: E731
        shape = np.asarray(arrays["shape"], np.float32)
        shape = np.broadcast_to(shape, (n, shape.shape[-1]))[index] if shape.ndim == 1 else shape[index]
        camera = Camera(reference_to_viewmat(t("transform")), t("K"), int(width), int(height))
        return cls(torch.from_numpy(np.ascontiguousarray(shape)), t("expression"), t("global_pose"), t("neck_pose"),
                   t("jaw_pose"), t("eye_pose"), t("translation"), camera)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The params.npz arrays these frames give (head fields, ``transform``, ``K``, ``focal``)."""
        out = {name: getattr(self, name).detach().cpu().float().numpy() for name in HEAD_FIELDS}
        out["transform"] = self.camera.to_reference().detach().cpu().float().numpy()
        out["K"] = self.camera.K.detach().cpu().float().numpy()
        out["focal"] = self.camera.focal.detach().cpu().float().numpy()
        return out

