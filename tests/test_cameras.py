"""Camera conventions: reference 3x4 transforms <-> OpenCV viewmats, intrinsics, look-at and orbits."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from gagavatar.geometry import REFERENCE_FOCAL, Camera, intrinsics, look_at, orbit
from gagavatar.render import rasterize
from gagavatar.geometry import reference_to_viewmat, viewmat_to_reference


def random_reference_transforms(n: int, seed: int = 0) -> torch.Tensor:
    """[n, 3, 4] PyTorch3D-style [R | T]: random rotations, the head 8-10 units in front."""
    R = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())
    rng = np.random.default_rng(seed)
    T = torch.from_numpy(np.stack([rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(8, 10, n)], -1))
    return torch.cat([R, T[..., None]], -1)


def test_intrinsics_at_the_reference_focal():
    K = intrinsics(REFERENCE_FOCAL, 512, 512)
    assert torch.equal(K[0], torch.tensor([[3072.0, 0, 256], [0, 3072, 256], [0, 0, 1]]))
    K = intrinsics(12.0, 256, 128, batch=3, dtype=torch.float64)
    assert K.shape == (3, 3, 3) and K[0, 0, 0] == 1536 and K[0, 1, 1] == 1536 and K[0, 1, 2] == 64
    assert torch.allclose(Camera(torch.eye(4)[None], intrinsics(12.0, 512, 512), 512, 512).focal,
                          torch.tensor([12.0]))


def test_reference_round_trip():
    transform = random_reference_transforms(5)
    viewmat = reference_to_viewmat(transform)
    assert torch.allclose(viewmat_to_reference(viewmat), transform, atol=1e-12)
    assert torch.allclose(viewmat[:, 3], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))
    R = viewmat[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(5, dtype=torch.float64))  # a rotation, no mirror
    view = look_at(torch.tensor([[1.0, 2.0, 5.0], [-3.0, 0.5, 4.0]]))
    assert torch.allclose(reference_to_viewmat(viewmat_to_reference(view)), view, atol=1e-6)


def test_camera_centre_is_minus_R_T():
    transform = random_reference_transforms(4, seed=1)
    camera = Camera.from_reference(transform, 512)
    R, T = transform[:, :, :3], transform[:, :, 3]
    assert torch.allclose(camera.center, -(R @ T[..., None])[..., 0], atol=1e-12)
    # the centre maps to the camera-space origin
    centre = camera.viewmat[:, :3, :3] @ camera.center[..., None] + camera.viewmat[:, :3, 3:]
    assert torch.allclose(centre, torch.zeros_like(centre), atol=1e-12)
    assert torch.allclose(camera.to_reference(), transform, atol=1e-12)


def test_projection_follows_the_reference_pinhole():
    """Reference: X_cam = X R + T with x left, y up; a pixel is (W/2 - f x/z, H/2 - f y/z), f = 6 W."""
    transform = random_reference_transforms(3, seed=2)
    points = torch.randn(3, 10, 3, dtype=torch.float64) * 0.5
    R, T = transform[:, :, :3], transform[:, :, 3]
    cam = points @ R + T[:, None]
    f = REFERENCE_FOCAL * 512 / 2
    expected = torch.stack([256 - f * cam[..., 0] / cam[..., 2], 256 - f * cam[..., 1] / cam[..., 2]], -1)
    assert torch.allclose(Camera.from_reference(transform, 512).project(points), expected, atol=1e-9)
    # the same camera at another size sees the same field of view
    half = Camera.from_reference(transform, 512).resized(256)
    assert torch.allclose(half.project(points), expected / 2, atol=1e-9)


def test_look_at_and_orbit_face_the_target():
    target = torch.tensor([0.3, -0.2, 0.1])
    eye = torch.tensor([[2.0, 1.0, 6.0], [-4.0, 0.5, 3.0]])
    camera = Camera.look_at(eye, target, size=512)
    assert torch.allclose(camera.project(target.expand(2, 1, 3)), torch.full((2, 1, 2), 256.0), atol=1e-3)
    assert torch.allclose(camera.forward, torch.nn.functional.normalize(target - eye, dim=-1), atol=1e-6)
    assert torch.allclose(camera.center, eye, atol=1e-5)
    # world up is image up, and world +x is to the right seen from +z
    above = camera.project((target + torch.tensor([0.0, 0.1, 0.0])).expand(2, 1, 3))
    assert (above[..., 1] < 256).all()
    front = Camera.look_at(torch.tensor([[0.0, 0.0, 5.0]]), size=512)
    assert front.project(torch.tensor([[[0.1, 0.0, 0.0]]]))[0, 0, 0] > 256

    # orbit: circles the origin at the camera's distance, from its view, keeping the head centred
    start = Camera.look_at(torch.tensor([[1.0, 0.5, 4.0]]), size=512)
    n = 8
    cams = orbit(start, n, yaw=30.0, pitch=0.0)
    assert torch.allclose(cams.viewmat[0], start.viewmat[0], atol=1e-6)
    assert torch.allclose(cams.center.norm(dim=-1), start.center.norm(dim=-1).expand(n), atol=1e-5)
    origin = torch.zeros(n, 1, 3)
    assert torch.allclose(cams.project(origin), start.project(origin[:1]).expand(n, 1, 2), atol=1e-3)
    # with no pitch each view is the first turned about world y; the turn sweeps +-30 degrees
    relative = cams.viewmat[:, :3, :3].transpose(1, 2) @ start.viewmat[0, :3, :3]  # world-frame turn
    assert torch.allclose(relative[:, 1], torch.tensor([0.0, 1.0, 0.0]).expand(n, 3), atol=1e-6)
    angles = torch.atan2(relative[:, 0, 2], relative[:, 0, 0])
    assert abs(angles.abs().max().item() - math.radians(30)) < 1e-5


def test_a_splat_lands_where_the_camera_projects():
    """The rasterizer and Camera.project agree on pixel centres (+0.5) and axes."""
    transform = random_reference_transforms(2, seed=3)
    camera = Camera.from_reference(transform.float(), 64)
    point = torch.tensor([[[0.05, -0.08, 0.02]]]).expand(2, 1, 3).contiguous()
    out = rasterize(point, torch.tensor([1.0, 0, 0, 0]).expand(2, 1, 4), torch.full((2, 1, 3), 1e-3),
                    torch.full((2, 1), 0.9), torch.ones(2, 1, 1), camera.viewmat, camera.K, 64, 64)
    weights = out.alpha[:, 0]
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    centroid = torch.stack([(weights * xs).sum((1, 2)), (weights * ys).sum((1, 2))], -1) / weights.sum((1, 2))[:, None]
    assert torch.allclose(centroid, camera.project(point)[:, 0], atol=0.02)
