"""Reenactment, novel views, PLY export and the demo, end to end on the bundled assets,
plus the errors a user sees for bad input."""
import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from gagavatar import commands
from gagavatar.cli import app
from gagavatar.data.format import Dataset, write_video
from gagavatar.export import SH_C0, read_ply
from gagavatar.reenact import Animator, MotionControls, bundled, drive_parameters

CLIPS = bundled(commands.DEMO_DATA)


@pytest.fixture(scope="module")
def animator():
    return Animator.from_checkpoint(device="cpu")


@pytest.fixture(scope="module")
def clips():
    videos = {v.id: v for v in Dataset(CLIPS).videos}
    return videos["source"], videos["driver"]


def frames_of(path):
    """Decode an mp4 with the ffmpeg that imageio-ffmpeg ships: [F,H,W,3] uint8."""
    import imageio.v2 as iio2

    with iio2.get_reader(path, "ffmpeg") as reader:
        return np.stack([np.asarray(f) for f in reader])


def test_demo_end_to_end(tmp_path):
    out = commands.demo(tmp_path / "demo")
    driver = Dataset(CLIPS).video("driver")
    video = frames_of(out["reenact"])
    assert video.shape[0] == driver.n_frames
    assert video.shape[1:] == (128, 256, 3)  # driver | avatar
    assert video[:, :, 128:].std() > 5  # not a constant image
    assert np.abs(np.diff(video[:, :, 128:].astype(float), axis=0)).mean() > 0.1  # it moves
    orbit = frames_of(out["novel_views"])
    assert orbit.shape[0] == 48 and orbit.std() > 5
    sheet = iio.imread(out["contact_sheet"])
    assert sheet.shape[0] == 2 + 3 * (128 + 2) and sheet.std() > 5  # three rows of 128 px frames, 2 px apart


def test_reenact_repeats_frames_without_a_face(animator, clips, tmp_path):
    source, driver = clips
    params = {k: np.array(v) for k, v in driver.params.arrays.items()}
    params["valid"][[3, 4]] = False  # the tracker found no face there
    n = 8
    params = {k: v[:n] if v.ndim and v.shape[0] == driver.n_frames and k != "landmark_ids" else v
              for k, v in params.items()}
    frames = np.stack([driver.frame(i) for i in range(n)])
    mattes = np.stack([driver.matte(i) for i in range(n)])
    write_video(tmp_path / "drv", "gappy", frames, mattes, params, "someone", "test")
    summary = commands.reenact(source.folder, tmp_path / "drv" / "gappy", tmp_path / "out.mp4", animator=animator)
    assert summary.n_frames == n and summary.n_repeated == 2
    video = frames_of(summary.out)
    assert video.shape[0] == n
    # repeated, not dropped (equal up to H.264 rounding)
    assert np.abs(video[2].astype(int) - video[3].astype(int)).mean() < 0.5


def test_motion_controls(clips):
    source, driver = clips
    src = source.params.frame(0)
    expr_only = drive_parameters(src, driver.params, MotionControls(transfer="expression"))
    np.testing.assert_allclose(expr_only["transform"], np.broadcast_to(src["transform"], expr_only["transform"].shape))
    np.testing.assert_allclose(expr_only["expression"], driver.params["expression"])
    pose_only = drive_parameters(src, driver.params, MotionControls(transfer="pose"))
    np.testing.assert_allclose(pose_only["expression"], np.broadcast_to(src["expression"], pose_only["expression"].shape))
    np.testing.assert_allclose(pose_only["transform"], driver.params["transform"])
    rel = drive_parameters(src, driver.params, MotionControls(relative=True))
    np.testing.assert_allclose(rel["transform"][0], src["transform"], atol=1e-5)  # frame 0 = the source's pose
    np.testing.assert_allclose(rel["expression"][0], src["expression"], atol=1e-6)


def test_ply_round_trip(animator, clips, tmp_path):
    source, _ = clips
    path = commands.export_ply(source.folder, tmp_path / "avatar.ply", animator=animator)
    ply = read_ply(path)
    for name in ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                 "rot_0", "rot_1", "rot_2", "rot_3"]:
        assert name in ply["names"]
    avatar = animator.reconstruct(source, 0)
    n = avatar.features.shape[1]
    assert ply["means"].shape == (n, 3)
    np.testing.assert_allclose(ply["features"], avatar.features[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ply["opacities"], avatar.opacities[0, :, 0].numpy().clip(1e-6, 1 - 1e-6), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(ply["scales"], avatar.splat_scales[0].numpy(), rtol=1e-4)
    np.testing.assert_allclose(ply["means"][n - 10:], avatar.lifted_xyz[0, -10:].numpy(), rtol=1e-5, atol=1e-5)
    rgb = avatar.features[0, :, :3].numpy().clip(0, 1)
    np.testing.assert_allclose(ply["rgb"], rgb, atol=1e-5)
    assert abs(SH_C0 - 0.2820948) < 1e-6


def test_bad_inputs_give_clear_errors(tmp_path):
    from PIL import Image

    runner = CliRunner()
    result = runner.invoke(app, ["reenact", "--source", str(tmp_path / "nope.jpg"), "--driver", str(CLIPS / "driver")])
    assert result.exit_code == 1 and "no such file" in result.output
    (tmp_path / "text.jpg").write_text("not an image")
    result = runner.invoke(app, ["export-ply", "--source", str(tmp_path / "text.jpg"), "--out", str(tmp_path / "a.ply")])
    assert result.exit_code == 1 and "text.jpg" in result.output
    Image.new("RGB", (256, 256), (90, 120, 200)).save(tmp_path / "sky.png")
    result = runner.invoke(app, ["export-ply", "--source", str(tmp_path / "sky.png"), "--out", str(tmp_path / "a.ply")])
    assert result.exit_code == 1 and "no face" in result.output
    from gagavatar.model import create_model, save

    save(create_model("tiny", n_vertices=100), tmp_path / "wrong.safetensors")
    result = runner.invoke(app, ["novel-views", "--source", str(CLIPS / "source"), "--checkpoint",
                                 str(tmp_path / "wrong.safetensors")])
    assert result.exit_code == 1 and "head model" in result.output
