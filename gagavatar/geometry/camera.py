"""Cameras: one convention inside the project, converters at the edges.

Inside the project a camera is OpenCV-style (x right, y down, z forward):
``viewmat`` [B,4,4] maps world points to camera points (X_cam = R X + t), and
``K`` [B,3,3] is in pixels, principal point at the image centre with pixel
centres at +0.5 (pixel (0, 0) covers [0, 1] x [0, 1]).

The reference GAGAvatar code stores a frame's camera as a 3x4
``transform_matrix`` [R|T] in PyTorch3D's row-vector convention
(X_cam = X_world R + T; camera axes x left, y up, z forward) with a focal of
12 in units of half the image size (SPEC §1, §7.1). Then:

    OpenCV world-to-camera = diag(-1, -1, 1) [R^T | T],   centre C = -R T.

World units are the head model's (metres for FLAME) times ``WORLD_SCALE`` (the
reference multiplies FLAME by 5, SPEC §1): cameras, the point plane and every
Gaussian live there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gagavatar.geometry.rotation import axis_rotation

# World units per head-model unit: the reference's FLAME x 5 (SPEC §1). Applied in one
# place, ``gagavatar.data.frame.FrameParams.vertices``.
WORLD_SCALE = 5.0

# Focal length of the reference tracker, in units of half the image size:
# tan(fov / 2) = 1 / 12, about 9.5 degrees full field of view.
REFERENCE_FOCAL = 12.0

_FLIP_XY = (-1.0, -1.0, 1.0)  # PyTorch3D camera axes <-> OpenCV camera axes


def intrinsics(focal: float | Tensor, width: int, height: int, batch: int = 1,
               dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """K [B,3,3] in pixels from a focal in units of half the image width.

    fx = fy = focal * width / 2 (3072 px at 512 for focal 12); cx = width / 2,
    cy = height / 2 (the image centre, since pixel centres sit at +0.5).
    """
    focal = torch.as_tensor(focal, dtype=dtype, device=device).reshape(-1)
    f = focal * (width / 2.0)
    K = torch.zeros(max(batch, f.numel()), 3, 3, dtype=dtype, device=device)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = width / 2.0
    K[:, 1, 2] = height / 2.0
    K[:, 2, 2] = 1.0
    return K


def reference_to_viewmat(transform: Tensor) -> Tensor:
    """Reference 3x4 [R|T] (PyTorch3D row-vector) [B,3,4] -> OpenCV viewmat [B,4,4]."""
    R, T = transform[..., :3, :3], transform[..., :3, 3]
    flip = transform.new_tensor(_FLIP_XY)
    view = torch.zeros(*transform.shape[:-2], 4, 4, dtype=transform.dtype, device=transform.device)
    view[..., :3, :3] = flip[:, None] * R.transpose(-1, -2)
    view[..., :3, 3] = flip * T
    view[..., 3, 3] = 1.0
    return view


def viewmat_to_reference(viewmat: Tensor) -> Tensor:
    """OpenCV viewmat [B,4,4] -> reference 3x4 [R|T] [B,3,4] (inverse of the above)."""
    flip = viewmat.new_tensor(_FLIP_XY)
    Rt = flip[:, None] * viewmat[..., :3, :3]  # = R^T
    T = flip * viewmat[..., :3, 3]
    return torch.cat([Rt.transpose(-1, -2), T[..., None]], dim=-1)


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenCV viewmat [B,4,4] of cameras at ``eye`` [B,3] looking at ``target`` [B,3].

    ``up`` [B,3] is the world's up direction (default +y); the camera's y axis
    points down the image, so it is the negated up vector made orthogonal.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32) if not torch.is_tensor(eye) else eye
    eye = eye.reshape(-1, 3)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype, device=eye.device).expand_as(eye)
    up = eye.new_tensor([0.0, 1.0, 0.0]).expand_as(eye) if up is None else torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = torch.nn.functional.normalize(target - eye, dim=-1)
    x = torch.nn.functional.normalize(torch.linalg.cross(-up, z, dim=-1), dim=-1)  # x = y x z
    y = torch.linalg.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=-2)  # rows are the camera axes in world coordinates
    view = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    view[:, :3, :3] = R
    view[:, :3, 3] = -(R @ eye[..., None])[..., 0]
    view[:, 3, 3] = 1.0
    return view


@dataclass
class Camera:
    """A batch of pinhole cameras: OpenCV ``viewmat`` [B,4,4], pixel ``K`` [B,3,3].

    ``Camera.from_reference(transform, size)`` reads the reference's 3x4
    transform (focal 12); ``camera.to_reference()`` writes it back.
    """

    viewmat: Tensor
    K: Tensor
    width: int
    height: int

    @classmethod
    def from_reference(cls, transform: Tensor, size: int | tuple[int, int] = 512,
                       focal: float = REFERENCE_FOCAL) -> "Camera":
        """From reference transforms [B,3,4] (or [3,4]) at ``size`` (int or (width, height))."""
        transform = transform[None] if transform.dim() == 2 else transform
        width, height = (size, size) if isinstance(size, int) else size
        K = intrinsics(focal, width, height, transform.shape[0], transform.dtype, transform.device)
        return cls(reference_to_viewmat(transform), K, width, height)

    @classmethod
    def look_at(cls, eye, target=None, size: int = 512, focal: float = REFERENCE_FOCAL) -> "Camera":
        view = look_at(eye, target)
        return cls(view, intrinsics(focal, size, size, view.shape[0], view.dtype, view.device), size, size)

    def to_reference(self) -> Tensor:
        """Reference 3x4 transforms [B,3,4]."""
        return viewmat_to_reference(self.viewmat)

    @property
    def batch(self) -> int:
        return self.viewmat.shape[0]

    @property
    def focal(self) -> Tensor:
        """Focal [B] in units of half the image width (12 for the reference)."""
        return self.K[:, 0, 0] / (self.width / 2.0)

    @property
    def center(self) -> Tensor:
        """Camera centres [B,3] in world coordinates."""
        R, t = self.viewmat[:, :3, :3], self.viewmat[:, :3, 3]
        return -(R.transpose(-1, -2) @ t[..., None])[..., 0]

    @property
    def forward(self) -> Tensor:
        """Viewing directions [B,3] (the camera's +z axis in world coordinates)."""
        return self.viewmat[:, 2, :3]

    def resized(self, width: int, height: int | None = None) -> "Camera":
        """Same camera and field of view, another image size."""
        height = width if height is None else height
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Camera(self.viewmat, K, width, height)

    def to(self, *args, **kwargs) -> "Camera":
        return Camera(self.viewmat.to(*args, **kwargs), self.K.to(*args, **kwargs), self.width, self.height)

    def __len__(self) -> int:
        return self.viewmat.shape[0]

    def __getitem__(self, index) -> "Camera":
        """Cameras ``index`` (an int keeps the batch axis: one camera is a batch of 1)."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return Camera(self.viewmat[index], self.K[index], self.width, self.height)

    @staticmethod
    def cat(cameras: list["Camera"]) -> "Camera":
        """One batch from several (all at one image size)."""
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cameras at different image sizes {sorted(sizes)} cannot share a batch")
        return Camera(torch.cat([c.viewmat for c in cameras]), torch.cat([c.K for c in cameras]), *sizes.pop())

    def to_camera(self, points: Tensor) -> Tensor:
        """Camera-space coordinates [B,N,3] (x right, y down, z = depth) of world points [B,N,3]."""
        return points @ self.viewmat[:, :3, :3].transpose(-1, -2) + self.viewmat[:, None, :3, 3]

    def project(self, points: Tensor) -> Tensor:
        """Pixel coordinates [B,N,2] of world points [B,N,3] (pixel centres at +0.5)."""
        uv = self.to_camera(points) @ self.K.transpose(-1, -2)
        return uv[..., :2] / uv[..., 2:3]


def orbit(camera: Camera, n: int, yaw: float = 30.0, pitch: float = 8.0) -> Camera:
    """``n`` cameras [n] circling the world origin (the head) at ``camera``'s distance, starting
    from its first view: yaw sweeps +-``yaw`` degrees and back, pitch nods +-``pitch`` twice."""
    t = torch.arange(n, dtype=torch.float64) / max(n, 1)
    a = math.radians(yaw) * torch.sin(2 * math.pi * t)
    b = math.radians(pitch) * torch.sin(4 * math.pi * t)
    rot = torch.zeros(n, 4, 4, dtype=torch.float64)
    # world rotation about y (yaw) then x (pitch); the camera sees the rotated head
    rot[:, :3, :3], rot[:, 3, 3] = axis_rotation("x", b) @ axis_rotation("y", a), 1.0
    view = camera.viewmat[:1].double() @ rot
    return Camera(view.to(camera.viewmat.dtype), camera.K[:1].expand(n, 3, 3), camera.width, camera.height)
