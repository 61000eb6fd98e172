"""The tracker: input/output, the landmark rig and solver, synthetic recovery, framing against
the reference's own crops, a real video and photos, the reference format, odd inputs."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from gagavatar import io as gio
from gagavatar.geometry import axis_angle_to_matrix
from gagavatar.head import HeadModel
from gagavatar.geometry import Camera, intrinsics
from gagavatar.tracking import fitting, framing, smoothing
from gagavatar.data import reference_format as refmt
from gagavatar.tracking.rig import LandmarkRig, rotation_jacobian


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return HeadModel.default()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


# ----------------------------------------------------------------------------- input / output

def test_read_image_any_mode(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    for name in ("gray.png", "rgba.png", "deep.png"):
        img = gio.read_image(tmp_path / name)
        assert img.dtype == np.uint8 and img.shape == (20, 30, 3), name
    assert np.array_equal(gio.read_image(tmp_path / "rgba.png"), rgb)
    assert np.array_equal(gio.read_image(tmp_path / "deep.png")[..., 1], rgb[..., 0])
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(gio.InputError, match="bad.jpg"):
        gio.read_image(tmp_path / "bad.jpg")
    with pytest.raises(gio.InputError, match="not found"):
        gio.read_image(tmp_path / "missing.png")


def test_write_and_read_video(tmp_path):
    frames = [np.full((33, 47, 3), 20 * i, np.uint8) for i in range(6)]  # odd size: padded to even
    path = gio.write_video(tmp_path / "v.mp4", frames, fps=12)
    back = list(gio.iter_video(path))
    assert len(back) == 6 and back[0].shape == (34, 48, 3)
    assert abs(int(back[3][:33, :47].mean()) - 60) <= 3
    info = gio.video_info(path)
    assert info.fps == pytest.approx(12) and (info.width, info.height) == (48, 34)
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(gio.InputError, match="bad.mp4"):
        list(gio.iter_video(tmp_path / "bad.mp4"))


# ----------------------------------------------------------------------------- rig and solver

def test_rig_equals_head_model(head):
    """The landmark-only evaluation and its Jacobians against the full head model."""
    import copy

    head = copy.deepcopy(head).double()
    rig = LandmarkRig(head, subset=False).double()
    g = torch.Generator().manual_seed(1)
    shape, expr = torch.randn(300, generator=g), torch.randn(4, 100, generator=g)
    jaw, eyes = torch.randn(4, 3, generator=g) * 0.2, torch.randn(4, 6, generator=g) * 0.2
    full = head.landmarks(head(shape[None].double(), expr.double(), jaw_pose=jaw.double(), eye_pose=eyes.double()))
    S, E = rig.n_shape, rig.n_expression
    args = (shape[:S].double(), expr[:, :E].double(), jaw.double(), eyes.double())
    assert torch.allclose(rig(*args), full[:, rig.indices], atol=1e-7)  # the rig stores float32
    # Jacobians: blend shapes (exact, linear) and jaw/eyes, against central differences
    eps = 1e-6
    for block, k in (("expression", 3), ("shape", 7)):
        d = torch.zeros(E if block == "expression" else S, dtype=torch.float64)
        d[k] = eps
        plus = rig(args[0] + d, args[1], *args[2:]) if block == "shape" else rig(args[0], args[1] + d, *args[2:])
        minus = rig(args[0] - d, args[1], *args[2:]) if block == "shape" else rig(args[0], args[1] - d, *args[2:])
        assert torch.allclose(rig.jacobian(block, args[2], args[3])[..., k], (plus - minus) / (2 * eps), atol=1e-7)
    X, dX = rig.pose_jacobian(rig.expressed(rig.neutral(args[0]), args[1]), args[2], args[3])
    q = torch.cat([args[2], args[3]], 1)
    for k in range(9):
        d = torch.zeros_like(q)
        d[:, k] = eps
        fd = (rig(args[0], args[1], (q + d)[:, :3], (q + d)[:, 3:]) - rig(args[0], args[1], (q - d)[:, :3],
                                                                           (q - d)[:, 3:])) / (2 * eps)
        assert torch.allclose(dX[..., k], fd, atol=1e-7), k


def test_rotation_jacobian_against_differences():
    w = torch.cat([torch.randn(4, 3, dtype=torch.float64), torch.full((1, 3), 1e-7, dtype=torch.float64),
                   torch.zeros(1, 3, dtype=torch.float64)])
    R, dR = rotation_jacobian(w)
    assert torch.allclose(R, axis_angle_to_matrix(w))
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = 1e-7
        fd = (axis_angle_to_matrix(w + e) - axis_angle_to_matrix(w - e)) / 2e-7
        assert torch.allclose(dR[:, k], fd, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 5, 33])
def test_block_tridiagonal_solver_against_dense(n):
    g = torch.Generator().manual_seed(n)
    P, R = 4, 3
    A = torch.randn(n, P, P, generator=g, dtype=torch.float64)
    off = -torch.rand(max(n - 1, 0), P, generator=g, dtype=torch.float64) * 5
    D = A @ A.mT + P * torch.eye(P, dtype=torch.float64)
    D[:-1] += torch.diag_embed(-off)
    D[1:] += torch.diag_embed(-off)
    b = torch.randn(n, P, R, generator=g, dtype=torch.float64)
    dense = torch.block_diag(*D)
    for t in range(n - 1):
        dense[t * P:(t + 1) * P, (t + 1) * P:(t + 2) * P] = torch.diag(off[t])
        dense[(t + 1) * P:(t + 2) * P, t * P:(t + 1) * P] = torch.diag(off[t])
    x = fitting.solve_block_tridiagonal(D, off, b)
    assert torch.allclose(x.reshape(n * P, R), torch.linalg.solve(dense, b.reshape(n * P, R)), atol=1e-10)


# ----------------------------------------------------------------------------- synthetic recovery

def test_synthetic_recovery(head):
    """Landmarks projected from known parameters + 0.5 px noise -> the parameters back.

    Tolerances (measured: yaw 0.56, pitch 0.35, roll 0.25 deg max; jaw 0.84 deg;
    gaze 2.6 deg mean, 6.0 max; expression motion error 31 % of the motion):
    head rotation 1.5 deg, jaw opening 2 deg, gaze 4 deg mean and 10 max (the
    eyeball's position comes from the shape: 1 mm of it is ~5 degrees of gaze),
    expression-driven landmark motion within 50 %.
    """
    F = 40
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, F)
    shape = torch.randn(1, 300, generator=g) * 0.5
    expr = torch.zeros(F, 100)
    expr[:, :10] = torch.sin(6 * t[:, None] + torch.rand(1, 10, generator=g) * 6) * torch.rand(1, 10, generator=g)
    jaw = torch.stack([0.1 * (1 + torch.sin(9 * t)), torch.zeros(F), torch.zeros(F)], 1)
    eyes = torch.stack([0.15 * torch.sin(5 * t), 0.3 * torch.cos(4 * t), torch.zeros(F)], 1).repeat(1, 2)
    rot = torch.stack([0.2 * torch.sin(3 * t), 0.5 * torch.sin(5 * t), 0.1 * torch.cos(2 * t)], 1)
    trans = torch.stack([0.1 * torch.sin(2 * t), -0.1 + 0.05 * t, 9 + 0.5 * t], 1)
    with torch.no_grad():
        verts = head(shape, expr, jaw_pose=jaw, eye_pose=eyes) * fitting.WORLD_SCALE
        camera = Camera(fitting.viewmats(rot, trans), intrinsics(12.0, 512, 512, F), 512, 512)
        pixels = camera.project(head.landmarks(verts)).numpy()
    targets = pixels + np.random.default_rng(0).normal(size=pixels.shape) * 0.5
    fit = fitting.fit_landmarks(head, targets, 512)

    deg = np.degrees
    rot_err = deg(np.abs(fit.rotation - rot.numpy())).max(0)
    jaw_err = deg(np.abs(fit.jaw_pose[:, 0] - jaw[:, 0].numpy())).max()
    gaze_err = deg(np.abs(fit.eye_pose - eyes.numpy()))[:, [0, 1, 3, 4]]
    with torch.no_grad():
        def motion(s, e):  # what the expression does to the landmarks, mm
            return (head.landmarks(head(s, e)) - head.landmarks(head(s, torch.zeros_like(e)))).numpy() * 1000
        true_motion = motion(shape, expr)
        fit_motion = motion(torch.as_tensor(fit.shape)[None], torch.as_tensor(fit.expression))
    motion_err = np.sqrt(((fit_motion - true_motion) ** 2).mean()) / np.sqrt((true_motion ** 2).mean())
    print(f"\nrecovery: rotation error (pitch, yaw, roll) max {rot_err.round(2)} deg, jaw {jaw_err:.2f} deg, "
          f"gaze mean {gaze_err.mean():.2f} max {gaze_err.max():.2f} deg, expression motion error "
          f"{100 * motion_err:.0f} %, reprojection {fit.error_px.mean():.2f} px")
    assert rot_err.max() < 1.5 and rot_err[1] < 2.0
    assert jaw_err < 2.0
    assert gaze_err.mean() < 4.0 and gaze_err.max() < 10.0
    assert motion_err < 0.5
    assert fit.error_px.mean() < 1.0  # noise is 0.5 px per axis: ~0.63 px expected
    # the camera written for the reference (PyTorch3D 3x4) projects like ours
    cam_ref = Camera.from_reference(torch.as_tensor(fit.transform), 512)
    world = head.landmarks(head(torch.as_tensor(fit.shape)[None], torch.as_tensor(fit.expression),
                                jaw_pose=torch.as_tensor(fit.jaw_pose), eye_pose=torch.as_tensor(fit.eye_pose)))
    with torch.no_grad():
        reprojected = cam_ref.project(world * fitting.WORLD_SCALE).numpy()
    assert np.abs(reprojected - targets).mean() < 1.0


# ----------------------------------------------------------------------------- smoothing, pickles

def test_smoothing_matches_reference_weights():
    rng = np.random.default_rng(0)
    R = axis_angle_to_matrix(torch.as_tensor(rng.normal(size=(10, 3)) * 0.3)).numpy()
    transforms = np.concatenate([R, rng.normal(size=(10, 3, 1))], -1)
    eyes = rng.normal(size=(10, 6))
    out_t, out_e = smoothing.smooth_track(transforms, eyes, 1.0)
    # independent: the reference's loop on the first two rows of R, then Gram-Schmidt
    s6, st, se = [R[0, :2].reshape(6)], [transforms[0, :, 3]], [eyes[0]]
    for i in range(1, 10):
        s6.append(0.6 * R[i, :2].reshape(6) + 0.4 * s6[-1])
        st.append(0.6 * transforms[i, :, 3] + 0.4 * st[-1])
        se.append(0.7 * eyes[i] + 0.3 * se[-1])
    a, b = np.array(s6)[:, :3], np.array(s6)[:, 3:]
    r1 = a / np.linalg.norm(a, axis=1, keepdims=True)
    r2 = b - (r1 * b).sum(1, keepdims=True) * r1
    r2 /= np.linalg.norm(r2, axis=1, keepdims=True)
    assert np.allclose(out_t[:, :3, :3], np.stack([r1, r2, np.cross(r1, r2)], 1), atol=1e-5)
    assert np.allclose(out_t[:, :, 3], st, atol=1e-5) and np.allclose(out_e, se, atol=1e-5)
    t0, e0 = smoothing.smooth_track(transforms, eyes, 0.0)
    assert np.allclose(t0, transforms, atol=1e-6) and np.allclose(e0, eyes, atol=1e-6)
    with pytest.raises(ValueError, match="strength"):
        smoothing.smooth_track(transforms, eyes, -1.0)


def test_reference_pickle_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"a_0": Evil()}))
    with pytest.raises(ValueError, match="refused"):
        refmt.load_reference_pickle(tmp_path / "evil.pkl")
    record = refmt.make_record(np.zeros(300), np.zeros(100), np.ones(3), np.zeros(6), np.zeros((3, 4)), [0, 0, 1, 1])
    refmt.save_reference_pickle(tmp_path / "ok.pkl", {"v_0": record})
    back = refmt.load_reference_pickle(tmp_path / "ok.pkl")
    assert np.array_equal(back["v_0"]["posecode"], [0, 0, 0, 1, 1, 1])


# ----------------------------------------------------------------------------- framing

@pytest.mark.realdata
def test_framing_on_reference_crops(realdata):
    """Tracking a crop the reference made gives back (nearly) the whole crop."""
    from gagavatar.tracking.landmarks import LandmarkDetector
    from gagavatar.tracking.matting import Segmenter

    files = sorted((realdata / "vfhq_crops").glob("*.jpg"))
    assert len(files) == 28
    detector, segmenter = LandmarkDetector(), Segmenter()
    scale, cx, cy, measures = [], [], [], []
    for f in files:
        img = gio.read_image(f)
        S = img.shape[0]
        face = detector(img)
        assert face is not None and face.n_faces == 1, f.name
        box = framing.Framer(segmenter, 512, smoothing=1.0)(img, face).crop_box
        scale.append((box[2] - box[0]) / S)
        cx.append(((box[0] + box[2]) / 2 - S / 2) / S)
        cy.append(((box[1] + box[3]) / 2 - S / 2) / S)
        # the measurements calibrate() turns into FramingParams
        m = framing.measure_face(face)
        region = framing.expand_box(framing.head_box(m))
        matte = segmenter(framing.crop(img, region, framing.SEGMENT_SIZE, fast=True))
        h = framing.hair_to_chin(framing.to_crop(face, region, framing.SEGMENT_SIZE), matte)
        measures.append(framing.HeadMeasure(m.centre / S, m.radius / S, h * (region[2] - region[0]) / 256 / S))
    scale, cx, cy = map(np.array, (scale, cx, cy))
    worst = np.maximum(np.abs(scale - 1), np.maximum(np.abs(cx), np.abs(cy)))
    print(f"\nframing on {len(files)} reference crops: scale median {np.median(scale):.3f} "
          f"(|1 - scale| median {np.median(np.abs(scale - 1)):.3f}, max {np.abs(scale - 1).max():.3f}); "
          f"centre x median {np.median(np.abs(cx)):.3f} max {np.abs(cx).max():.3f}, "
          f"y median {np.median(np.abs(cy)):.3f} max {np.abs(cy).max():.3f} (fractions of the side)")
    assert abs(np.median(scale) - 1) < 0.05
    assert np.median(np.abs(cx)) < 0.02 and np.median(np.abs(cy)) < 0.02
    assert worst.max() < 0.15
    # the shipped constants are what calibration on these crops gives
    p, ref = framing.calibrate(measures), framing.FramingParams()
    assert p.gain == pytest.approx(ref.gain, rel=0.02) and p.hair_ratio == pytest.approx(ref.hair_ratio, rel=0.02)
    assert np.allclose(p.offset, ref.offset, atol=0.005)


def test_framing_crop_and_ema():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    out = framing.crop(img, np.array([-2, -2, 8, 8]), 10)  # 10x10 window, 2 px off the top-left
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all() and np.array_equal(out[2:, 2:], img[:8, :8])
    box = framing.expand_box(np.array([10.0, 20.0, 30.0, 60.0]))  # w 20, h 40 -> side 1.65 sqrt(800)
    assert box[2] - box[0] == pytest.approx(np.trunc(20 + 1.65 * np.sqrt(800) / 2) - np.trunc(20 - 1.65 * np.sqrt(800) / 2))
    assert np.allclose(framing.ema(np.array([0.0, 0, 0, 0]), np.array([100.0, 100, 100, 100]), 0.03), 3.0)


# ----------------------------------------------------------------------------- real video and photos

@pytest.mark.realdata
def test_real_video(realdata, tmp_path, head):
    """obama.mp4 (first 72 frames): every frame fitted, error and jitter bounds, reference format."""
    from gagavatar.data.format import Dataset
    from gagavatar.tracking.tracker import track

    n = 72
    summary = track(realdata / "obama.mp4", tmp_path, head_model=head, smooth=1.0, reference_format=True,
                    max_frames=n, progress=False)
    assert summary.n_frames == n and summary.n_tracked == n and not summary.several_faces
    video = Dataset(tmp_path).video("obama")
    p = video.params
    assert p["valid"].all() and video.frame(0).shape == (512, 512, 3) and video.matte(0).shape == (512, 512)
    errors = np.load(summary.video_dir / "tracking.npz")["error_px"]
    # head rotation of the smoothed cameras, frame to frame: jitter = second differences
    R = Camera.from_reference(torch.as_tensor(p["transform"])).viewmat[:, :3, :3].numpy()
    angles = np.degrees(np.stack([np.arctan2(R[:, 2, 1], R[:, 2, 2]), np.arcsin(-np.clip(R[:, 2, 0], -1, 1)),
                                  np.arctan2(R[:, 1, 0], R[:, 0, 0])], 1))
    jitter = np.abs(np.diff(angles, 2, axis=0)).mean()
    print(f"\nobama: {n} frames, landmark error mean {errors.mean():.2f} px max {errors.max():.2f} px at 512; "
          f"rotation jitter (mean |2nd difference|, smoothed) {jitter:.3f} deg; crop box 0: {p['crop_box'][0]}")
    assert errors.mean() < 2.0 and errors.max() < 4.0
    assert jitter < 0.35
    assert summary.overlay.is_file() and summary.overlay.suffix == ".mp4"
    # the crop box traces each crop back to the input frame
    frame0 = next(gio.iter_video(realdata / "obama.mp4"))
    assert np.abs(framing.crop(frame0, p["crop_box"][0], 512).astype(int) - video.frame(0)).mean() < 4

    # --reference-format, read back as the reference's loader would (restricted unpickler here)
    optim = refmt.load_reference_pickle(tmp_path / "optim.pkl")
    smoothed = refmt.load_reference_pickle(tmp_path / "smoothed.pkl")
    keys = [f"obama_{i}" for i in range(n)]
    assert sorted(optim) == sorted(keys) and sorted(smoothed) == sorted(keys)
    assert sorted(refmt.lmdb_keys(tmp_path / "img_lmdb")) == sorted(keys)
    for key in keys[::17]:
        rec = optim[key]
        assert {k: v.shape for k, v in rec.items()} == refmt.RECORD_SHAPES
        assert all(v.dtype == np.float32 for v in rec.values())
        assert np.all(rec["posecode"][:3] == 0)  # head rotation lives in the camera
        assert np.array_equal(rec["shapecode"], optim[keys[0]]["shapecode"])  # one identity per video
        Rr = rec["transform_matrix"][:, :3]
        assert np.allclose(Rr @ Rr.T, np.eye(3), atol=1e-5) and np.linalg.det(Rr) > 0
        distance = np.linalg.norm(-Rr @ rec["transform_matrix"][:, 3])
        assert 5.0 < distance < 15.0  # FLAME x 5 seen with focal 12: the head ~1/1.65 of the crop
        assert 0 <= rec["bbox"].min() and rec["bbox"].max() <= 1 and rec["bbox"][2] > rec["bbox"][0]
        # the reference camera projects the x5 head model onto this frame's landmarks
        i = int(key.split("_")[1])
        verts = head(torch.as_tensor(rec["shapecode"])[None], torch.as_tensor(rec["expcode"])[None],
                     jaw_pose=torch.as_tensor(rec["posecode"][3:])[None],
                     eye_pose=torch.as_tensor(rec["eyecode"])[None])
        with torch.no_grad():
            uv = Camera.from_reference(torch.as_tensor(rec["transform_matrix"]), 512).project(
                head.landmarks(verts) * 5.0)[0].numpy()
        ids = head.landmark_indices.numpy()
        assert np.abs(uv - p["landmarks"][i][ids]).mean() < 3.0
        # img_lmdb: the 512 crop matted on black, JPEG
        img = refmt.read_lmdb_image(tmp_path / "img_lmdb", key)
        expected = video.frame(i).astype(float) * (video.matte(i)[..., None] / 255.0)
        assert img.shape == (512, 512, 3) and np.abs(img - expected).mean() < 6
    assert not np.allclose(smoothed[keys[5]]["transform_matrix"], optim[keys[5]]["transform_matrix"])
    assert np.array_equal(smoothed[keys[5]]["expcode"], optim[keys[5]]["expcode"])


@pytest.mark.realdata
def test_photos(realdata, astronaut, tmp_path, head):
    """Each portrait: one face, a crop inside the photo's head region, a fit; monroe via the CLI."""
    from typer.testing import CliRunner

    from gagavatar.cli import app
    from gagavatar.tracking.tracker import track

    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    s = track(tmp_path / "astronaut.png", tmp_path / "out", head_model=head, progress=False)
    result = CliRunner().invoke(app, ["track", str(realdata / "monroe.jpg"), "--out", str(tmp_path / "out"),
                                      "--reference-format"])
    assert result.exit_code == 0, result.output
    errors = {}
    for name in ("astronaut", "monroe"):
        folder = tmp_path / "out" / name
        p = np.load(folder / "params.npz")
        errors[name] = float(np.load(folder / "tracking.npz")["error_px"][0])
        assert p["valid"].tolist() == [True] and (folder / "overlay.jpg").is_file()
        box = p["crop_box"][0]
        assert box[2] - box[0] == box[3] - box[1] > 100
    print(f"\nphotos: landmark error astronaut {errors['astronaut']:.2f} px, monroe {errors['monroe']:.2f} px")
    assert s.n_tracked == 1 and not s.several_faces and "1/1 frames tracked" in result.output
    assert max(errors.values()) < 3.0
    assert refmt.lmdb_keys(tmp_path / "out" / "img_lmdb") == ["monroe_0"]


# ----------------------------------------------------------------------------- odd inputs

def test_odd_inputs(astronaut, tmp_path, head):
    """Documented results: no face -> kept, valid=False; grayscale -> tracked as RGB; a 40 px
    image -> no face; a 4096 px image -> the same crop x 8;
    several faces -> the largest, reported; unreadable files -> InputError."""
    from gagavatar.tracking.tracker import track

    img = Image.fromarray(astronaut)
    img.convert("L").save(tmp_path / "gray.png")
    img.resize((40, 40)).save(tmp_path / "tiny.png")
    img.resize((4096, 4096), Image.BICUBIC).save(tmp_path / "huge.png")
    img.save(tmp_path / "plain_first.png")
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(tmp_path / "plain.png")
    two = np.zeros((512, 900, 3), np.uint8)
    two[:, :512] = astronaut
    two[60:420, 520:880] = np.asarray(img.resize((360, 360)))
    Image.fromarray(two).save(tmp_path / "two.png")
    out = tmp_path / "out"
    run = lambda name: track(tmp_path / name, out, head_model=head, overlay=False, progress=False)  # noqa: E731

    plain = run("plain.png")
    assert plain.n_tracked == 0 and plain.no_face == [0]
    assert np.load(plain.video_dir / "params.npz")["valid"].tolist() == [False]
    assert (plain.video_dir / "frames" / "000000.jpg").is_file()  # every frame keeps its file
    # a frame without a face still has one camera, in front of the head: params and tracking.npz agree
    transform = np.load(plain.video_dir / "params.npz")["transform"]
    viewmat = np.load(plain.video_dir / "tracking.npz")["viewmat"]
    assert np.allclose(Camera.from_reference(torch.as_tensor(transform)).viewmat.numpy(), viewmat, atol=1e-6)
    gray = run("gray.png")
    assert gray.n_tracked == 1 and gio.read_image(gray.video_dir / "frames" / "000000.jpg").shape == (512, 512, 3)
    assert run("tiny.png").n_tracked == 0
    huge = run("huge.png")
    box_gray = np.load(gray.video_dir / "params.npz")["crop_box"][0]
    box_huge = np.load(huge.video_dir / "params.npz")["crop_box"][0]
    assert huge.n_tracked == 1 and np.abs(box_huge / 8 - box_gray).max() < 0.03 * (box_gray[2] - box_gray[0])
    several = run("two.png")
    assert several.n_tracked == 1 and several.several_faces == [0]
    assert np.load(several.video_dir / "params.npz")["crop_box"][0][2] < 512  # the larger, left face

    # a folder with a frameless gap: valid [T, F, T]; the reference numbering skips it
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, name in enumerate(("plain_first.png", "plain.png", "gray.png")):
        (folder / f"{i:03d}.png").write_bytes((tmp_path / name).read_bytes())
    gap = track(folder, tmp_path / "gap", head_model=head, overlay=False, reference_format=True, progress=False)
    p = np.load(gap.video_dir / "params.npz")
    assert p["valid"].tolist() == [True, False, True] and gap.no_face == [1]
    assert np.isfinite(p["transform"]).all() and np.array_equal(p["transform"][1], p["transform"][0])
    assert sorted(refmt.load_reference_pickle(tmp_path / "gap" / "optim.pkl")) == ["frames_0", "frames_1"]

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(gio.InputError, match="broken.jpg"):
        run("broken.jpg")
    with pytest.raises(gio.InputError, match="no such file"):
        run("missing.mp4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(gio.InputError, match="not an image"):
        run("notes.txt")


def test_the_matte_is_zero_outside_the_image():
    """A crop that runs past the frame (a chin near its bottom edge) is padded with black, which
    the segmenter takes for shoulders: the matte keeps none of it. Coverage against OpenCV's
    area resize of an all-ones image (a box filter: the same share per crop pixel)."""
    height, width, box = 300, 400, np.array([-120, 60, 392, 572])  # past the left and bottom edges
    coverage = framing.image_coverage(box, height, width, framing.SEGMENT_SIZE)
    reference = framing.crop(np.ones((height, width), np.float32), box, framing.SEGMENT_SIZE, fast=True)
    np.testing.assert_allclose(coverage, reference, atol=1e-5)
    framer = framing.Framer(segmenter=lambda image: np.ones(image.shape[:2], np.float32))
    matte = framer._segment(np.full((height, width, 3), 128, np.uint8), box)
    assert matte[:, :50].max() == 0 and matte[-40:].max() == 0 and matte[100, 200] == 1
