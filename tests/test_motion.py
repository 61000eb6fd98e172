"""The motion controls (``Motion``): what of a driver reaches the avatar, whole videos and streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gagavatar.data import Dataset
from gagavatar.geometry import Camera, reference_to_viewmat
from gagavatar.reenact import DEMO_DATA, Animator, Motion, MotionControls, bundled, driver_frames

pytestmark = pytest.mark.filterwarnings("ignore:the ViT backbone has RANDOM weights")


@pytest.fixture(scope="module")
def clips():
    """The bundled tracked clips: a one-frame source and a 48-frame driver (another person whose head turns)."""
    return {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}


@pytest.fixture(scope="module")
def frames(clips):
    """(the source's frame [1], the driver's frames [F])."""
    return clips["source"].frames(0), driver_frames(clips["driver"])[0]


def test_transfer_expression_keeps_the_source_head_pose_and_the_renderer_sees_it(clips, frames):
    animator = Animator.load(device="cpu")
    source, driver = frames
    avatar = animator.reconstruct(clips["source"])
    seen, render = [], animator.model.render

    def spy(avatar, vertices, camera):
        seen.append(camera.viewmat.detach().clone())
        return render(avatar, vertices, camera)

    animator.model.render = spy
    try:
        for mode in ("expression", "all"):
            seen.clear()
            driven = Motion(source, MotionControls(transfer=mode))(driver[:8])
            assert len(list(animator.render(avatar, driven))) == 8
            views = torch.cat(seen)
            same = torch.allclose(views, source.camera.viewmat.expand_as(views), atol=1e-5)
            assert same == (mode == "expression"), mode  # the driver's head turns: "all" must differ
            torch.testing.assert_close(driven.expression, driver.expression[:8], rtol=0, atol=0)
            torch.testing.assert_close(driven.jaw_pose, driver.jaw_pose[:8], rtol=0, atol=0)
    finally:
        del animator.model.render


def test_transfer_pose_keeps_the_source_expression(frames):
    source, driver = frames
    driven = Motion(source, MotionControls(transfer="pose"))(driver)
    for name in ("expression", "jaw_pose", "eye_pose"):
        torch.testing.assert_close(getattr(driven, name), getattr(source, name).expand(len(driver), -1), rtol=0, atol=0)
    torch.testing.assert_close(driven.camera.viewmat, driver.camera.viewmat, rtol=0, atol=0)
    torch.testing.assert_close(driven.shape, source.shape.expand(len(driver), -1), rtol=0, atol=0)
    assert not torch.allclose(driver.expression, source.expression.expand_as(driver.expression))


def test_relative_motion_moves_the_source_as_the_driver_moved(frames):
    """Known answer: at the driver's first frame the source is unchanged; later, the camera
    motion relative to the first frame is the driver's."""
    source, driver = frames
    driven = Motion(source, MotionControls(relative=True))(driver)
    torch.testing.assert_close(driven.camera.viewmat[0], source.camera.viewmat[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(driven.expression[0], source.expression[0], rtol=0, atol=1e-6)
    # V_t V_0^-1 is the same motion for the source and the driver
    ours = driven.camera.viewmat.double() @ torch.linalg.inv(driven.camera.viewmat[:1].double())
    theirs = driver.camera.viewmat.double() @ torch.linalg.inv(driver.camera.viewmat[:1].double())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    torch.testing.assert_close(driven.expression - source.expression, driver.expression - driver.expression[:1],
                               rtol=0, atol=1e-5)


def _noisy(driver, n: int = 40, seed: int = 0):
    """The driver's frames looped to n, with a shaking camera and jittering eyes."""
    rng = np.random.default_rng(seed)
    frames = driver[list(np.arange(n) % len(driver))]
    transform = frames.camera.to_reference().double().numpy()
    shake = Rotation.from_rotvec(rng.normal(0, 0.03, (n, 3))).as_matrix()
    transform[:, :, :3] = shake @ transform[:, :, :3]
    transform[:, :, 3] += rng.normal(0, 0.05, (n, 3))
    camera = Camera(reference_to_viewmat(torch.from_numpy(transform).float()), frames.camera.K,
                    frames.camera.width, frames.camera.height)
    return frames.replace(camera=camera, eye_pose=frames.eye_pose + torch.from_numpy(rng.normal(0, 0.05, (n, 6))).float())


def _jitter(transform: np.ndarray) -> tuple[float, float]:
    """Mean frame-to-frame rotation angle (radians) and translation step of [F,3,4] transforms."""
    R, T = transform[:, :, :3].astype(np.float64), transform[:, :, 3].astype(np.float64)
    rel = np.einsum("fij,fkj->fik", R[1:], R[:-1])
    angle = np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))
    return float(angle.mean()), float(np.linalg.norm(T[1:] - T[:-1], axis=1).mean())


def test_stabilize_lowers_the_jitter_of_a_noisy_driver(frames):
    source, driver = frames
    noisy = _noisy(driver)
    raw = Motion(source, MotionControls(stabilize=0.0))(noisy)
    calm = Motion(source, MotionControls(stabilize=1.0))(noisy)
    (r0, t0), (r1, t1) = (_jitter(m.camera.to_reference().numpy()) for m in (raw, calm))
    assert r1 < 0.8 * r0 and t1 < 0.8 * t0, (r0, r1, t0, t1)
    eyes = [(m.eye_pose[1:] - m.eye_pose[:-1]).abs().mean() for m in (raw, calm)]
    assert eyes[1] < 0.8 * eyes[0]
    torch.testing.assert_close(calm.expression, raw.expression, rtol=0, atol=0)  # expression is not smoothed
    rot = calm.camera.viewmat[:, :3, :3].double()  # still rotations
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(rot),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("controls", [MotionControls(stabilize=1.0, relative=True), MotionControls(transfer="pose")])
def test_a_stream_frame_by_frame_is_driven_as_the_whole_video(frames, controls):
    """``live`` and the service feed one frame at a time: the state carries over (relative
    motion's first frame, the smoothing), so the result equals driving the whole video."""
    source, driver = frames
    noisy = _noisy(driver, 12)
    whole = Motion(source, controls)(noisy)
    stream = Motion(source, controls)
    one_by_one = [stream(noisy[i]) for i in range(len(noisy))]
    for name in ("expression", "jaw_pose", "eye_pose", "global_pose"):
        torch.testing.assert_close(torch.cat([f.__dict__[name] for f in one_by_one]), getattr(whole, name),
                                   rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.cat([f.camera.viewmat for f in one_by_one]), whole.camera.viewmat,
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(expression_scale=float("nan")), dict(stabilize=float("nan")),
                                 dict(jaw_scale=float("inf")), dict(stabilize=-1.0), dict(transfer="face")])
def test_bad_controls_are_refused_up_front(bad):
    with pytest.raises(ValueError):
        MotionControls(**bad)
