"""Rotation conversions (gagavatar.geometry.rotation) against scipy, round trips and gradcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gagavatar.geometry import (axis_angle_to_matrix, axis_rotation, matrix_to_axis_angle, matrix_to_quaternion,
                                matrix_to_rotation_6d, quaternion_to_matrix, rotation_6d_to_matrix)


@pytest.fixture(scope="module")
def rotations() -> Rotation:
    """Random rotations plus the hard cases: identity, tiny angles, angles near pi, each axis."""
    rng = np.random.default_rng(0)
    rotvecs = np.concatenate([
        Rotation.random(200, random_state=1).as_rotvec(),
        np.zeros((1, 3)), rng.normal(size=(5, 3)) * 1e-7,  # at and near rest
        np.eye(3) * (np.pi - 1e-6), -np.eye(3) * 0.5, rng.normal(size=(5, 3)) * 3.0])
    return Rotation.from_rotvec(rotvecs)


def test_axis_angle_to_matrix_matches_scipy(rotations):
    got = axis_angle_to_matrix(torch.from_numpy(rotations.as_rotvec()))
    np.testing.assert_allclose(got.numpy(), rotations.as_matrix(), atol=1e-12)


def test_quaternions_match_scipy(rotations):
    xyzw = rotations.as_quat()
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], 1)
    np.testing.assert_allclose(quaternion_to_matrix(torch.from_numpy(wxyz)).numpy(), rotations.as_matrix(), atol=1e-12)
    q = matrix_to_quaternion(torch.from_numpy(rotations.as_matrix())).numpy()
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.abs((q * wxyz).sum(1)), 1.0, atol=1e-12)  # the same rotation (q ~ -q)
    # the formula applied as given: a scaled quaternion scales the non-identity part by |q|^2
    scaled = torch.from_numpy(wxyz * 0.1)
    want = np.eye(3) + 0.01 * (rotations.as_matrix() - np.eye(3))
    np.testing.assert_allclose(quaternion_to_matrix(scaled, normalize=False).numpy(), want, atol=1e-12)


def test_matrix_to_axis_angle_matches_scipy(rotations):
    got = matrix_to_axis_angle(torch.from_numpy(rotations.as_matrix())).numpy()
    want = rotations.as_rotvec()
    # near pi the axis sign is free: compare the rotations they give
    np.testing.assert_allclose(Rotation.from_rotvec(got).as_matrix(), rotations.as_matrix(), atol=1e-9)
    ok = np.linalg.norm(want, axis=1) < np.pi - 1e-3
    np.testing.assert_allclose(got[ok], want[ok], atol=1e-9)


def test_axis_rotation_and_6d(rotations):
    angles = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for i, axis in enumerate("xyz"):
        vec = np.zeros((13, 3))
        vec[:, i] = angles.numpy()
        np.testing.assert_allclose(axis_rotation(axis, angles).numpy(), Rotation.from_rotvec(vec).as_matrix(),
                                   atol=1e-12)
    R = torch.from_numpy(rotations.as_matrix())
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, rtol=0, atol=1e-12)
    # Gram-Schmidt: a perturbed 6D code gives the nearest rotation with the first row's direction
    noisy = matrix_to_rotation_6d(R) + 0.01 * torch.randn(len(R), 6, dtype=torch.float64)
    out = rotation_6d_to_matrix(noisy)
    torch.testing.assert_close(out @ out.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(out),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(out), torch.ones(len(R), dtype=torch.float64), rtol=0, atol=1e-12)


def test_gradients_are_exact():
    torch.manual_seed(0)
    rotvec = (torch.randn(6, 3, dtype=torch.float64) * 0.8).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (rotvec,))
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (torch.zeros(1, 3, dtype=torch.float64, requires_grad=True),))
    quats = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(quaternion_to_matrix, (quats,))
    R = axis_angle_to_matrix(torch.randn(6, 3, dtype=torch.float64) * 0.8).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (R,))
    d6 = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6,))
