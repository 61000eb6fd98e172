"""From the model's motion to what GAGAvatar is driven by (ARTalk's demo engine, SPEC §11).

    motion = smooth_motion(model.generate(audio, style))     # [F, 106], 25 fps
    frames = motion_frames(motion, source)                   # FrameParams, F frames
    motion = frames_motion(tracked_frames)                   # and back: a tracked video's motion
    points = motion_vertices(frames, head)                   # [F, 5023, 3], forehead smoothed

Motion vector [D]: [0:D-6] expression, [D-6:D-3] head rotation (axis-angle, EMICA's
convention), [D-3:D] jaw pose; ARTalk's release: D = 106 (100 FLAME expressions). The head itself stays canonical (global, neck and eye
poses zero, the source's shape) and the head rotation becomes the camera's, as the
reference tracker puts head pose in the camera (SPEC §1, §9).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gagavatar.data.frame import FrameParams
from gagavatar.geometry import Camera, axis_angle_to_matrix, matrix_to_axis_angle, reference_to_viewmat

# Counted from the end, so any expression count has the same layout (106: 0:100, 100:103, 103:106).
EXPRESSION = slice(0, -6)
HEAD_ROTATION = slice(-6, -3)
JAW = slice(-3, None)

# FLAME vertex ids of the forehead and scalp above it, smoothed over time so the hairline
# does not shimmer: the 68 ``forehead_indices`` of ARTalk's GAGAvatar glue (xg-chu/ARTalk,
# MIT, artalk/GAGAvatar/models.py).
FOREHEAD_VERTICES = (
    2168, 2165, 3068, 2199, 2196, 3720, 2091, 2088, 3524, 625, 628, 3871, 705, 708, 2030, 667, 670,
    3708, 3706, 3729, 3721, 3773, 3789, 3735, 3732, 3786, 3876, 3878, 3913, 3899, 3872, 3874, 3864, 3865,
    3158, 3157, 336, 335, 3153, 3705, 2177, 2176, 3540, 671, 672, 3863, 2134, 16, 17, 2138, 2139,
    2567, 2566, 337, 338, 3154, 3712, 2178, 2179, 3495, 674, 673, 3868, 2135, 27, 18, 1429, 1430,
)


def _savgol(x: np.ndarray, window: int, order: int) -> np.ndarray:
    """Savitzky-Golay over axis 0; a clip shorter than the window gets the longest odd window
    it holds (none at all below order + 2 frames), where the reference would fail."""
    from scipy.signal import savgol_filter

    window = min(window, x.shape[0] - (x.shape[0] + 1) % 2)
    if window <= order:
        return x.copy()
    return savgol_filter(x, window_length=window, polyorder=order, axis=0)


def smooth_motion(motion: Tensor, fix_pose: bool = False) -> Tensor:
    """The demo engine's post-processing of motion [F, D] (a new tensor, same dtype/device).

    Savitzky-Golay over time (window 5, order 2; the head rotation window 9, order 3), then
    the jaw's 2nd and 3rd components zeroed; ``fix_pose`` also zeroes the head rotation.
    Smoothed in the motion's own precision (float32 stays float32, as in the reference)."""
    x = motion.detach().cpu().numpy()
    out = _savgol(x, 5, 2)
    out[:, HEAD_ROTATION] = _savgol(x[:, HEAD_ROTATION], 9, 3)
    if fix_pose:
        out[:, HEAD_ROTATION] = 0.0
    out[:, JAW.start + 1:] = 0.0
    return torch.from_numpy(np.ascontiguousarray(out)).to(motion)


def head_rotation_to_reference(rotation: Tensor) -> Tensor:
    """Head rotations [F, 3] (EMICA axis-angle) -> the camera rotation R [F, 3, 3] of the
    reference's 3x4 transform (PyTorch3D convention, SPEC §7.1).

    The reference: negate x and z, R = rotation of that, R = R diag(-1, 1, -1), camera
    rotation = R^-1 (= R^T: R is a rotation)."""
    flip = rotation.new_tensor([-1.0, 1.0, -1.0])
    R = axis_angle_to_matrix(rotation * flip) * flip  # columns times (-1, 1, -1) = R @ diag(flip)
    return R.transpose(-1, -2)


def motion_frames(motion: Tensor, source: FrameParams) -> FrameParams:
    """Motion [F, D] + the source frame (one frame) -> F frames to drive the source's avatar.

    shape: the source's; expression = motion[:D-6]; jaw = motion[D-3:]; global, neck and
    eye poses zero; translation: the source's (zero for the reference tracker's frames);
    camera: the source's intrinsics, image size and reference translation, its rotation
    from the head rotation (``head_rotation_to_reference``)."""
    if len(source) != 1:
        raise ValueError(f"motion_frames needs one source frame, got {len(source)}")
    F = motion.shape[0]
    dtype, device = source.shape.dtype, source.shape.device
    motion = motion.to(dtype=dtype, device=device)
    translation = source.camera.to_reference()[:, :, 3:]  # [1, 3, 1]
    transform = torch.cat([head_rotation_to_reference(motion[:, HEAD_ROTATION]), translation.expand(F, 3, 1)], -1)
    camera = Camera(reference_to_viewmat(transform), source.camera.K.expand(F, 3, 3).clone(),
                    source.camera.width, source.camera.height)
    zeros = motion.new_zeros(F, 3)
    return FrameParams(shape=source.shape.expand(F, -1).clone(), expression=motion[:, EXPRESSION].clone(),
                       global_pose=zeros, neck_pose=zeros.clone(), jaw_pose=motion[:, JAW].clone(),
                       eye_pose=motion.new_zeros(F, 6), translation=source.translation.expand(F, 3).clone(),
                       camera=camera)


def frames_motion(frames: FrameParams, expression_dims: int = 100) -> Tensor:
    """Tracked frames -> motion [F, expression_dims + 6]: the inverse of ``motion_frames``
    (what a speech model learns from a tracked talking video).

    expression: the frames' first ``expression_dims`` coefficients (zero-padded when they have
    fewer); head rotation: the camera's rotation read back through ``head_rotation_to_reference``,
    with the frames' global pose folded in (this project's tracker leaves it zero; the reference
    tracker's files hold small ones; its pivot, the root joint, is not kept); jaw: the jaw pose.
    Shape, translation, neck and eye poses are not part of the motion."""
    expression = frames.expression[:, :expression_dims]
    expression = torch.nn.functional.pad(expression, (0, expression_dims - expression.shape[1]))
    # X_cam = X_world R + T with X_world = X R_global^T (row vectors): the head's own rotation is R_global^T R
    R = axis_angle_to_matrix(frames.global_pose).transpose(-1, -2) @ frames.camera.to_reference()[:, :, :3]
    flip = R.new_tensor([-1.0, 1.0, -1.0])
    rotation = matrix_to_axis_angle(R.transpose(-1, -2) * flip) * flip  # head_rotation_to_reference, undone
    return torch.cat([expression, rotation, frames.jaw_pose], -1)


def smooth_forehead(vertices: Tensor, indices=FOREHEAD_VERTICES, weight: float = 0.02) -> Tensor:
    """Vertices [F, V, 3] with the ``indices`` smoothed over time (a new tensor):
    kept = 0.98 kept + 0.02 new, the first frame's as they are (the reference's glue)."""
    idx = torch.as_tensor(indices, device=vertices.device)
    if vertices.shape[1] <= int(idx.max()):
        raise ValueError(f"the forehead vertex ids are FLAME's (up to {int(idx.max())}); "
                         f"this head model has {vertices.shape[1]} vertices")
    out = vertices.clone()
    kept = vertices[0, idx]
    for t in range(1, vertices.shape[0]):
        kept = (1.0 - weight) * kept + weight * vertices[t, idx]
        out[t, idx] = kept
    return out


def motion_vertices(frames: FrameParams, head, before: Tensor | None = None) -> Tensor:
    """World-space vertices [F, V, 3] of speech-driven frames: ``frames.vertices(head)`` (the
    world contract), forehead smoothed over the clip (``smooth_forehead``). ``before`` [1, V, 3]:
    the last frame's vertices given out before these (a stream's earlier piece); the smoothing
    carries on from it."""
    vertices = frames.vertices(head)
    if before is None:
        return smooth_forehead(vertices)
    return smooth_forehead(torch.cat([before.to(vertices), vertices]))[1:]
