"""Reenactment, novel views, PLY export and the demo, end to end on the bundled assets,
plus the errors a user sees for bad input."""
import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from gagavatar import commands
from gagavatar.cli import app
from gagavatar.data.format import Dataset, write_video
from gagavatar.reenact import DEMO_DATA, Animator, bundled

CLIPS = bundled(DEMO_DATA)


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
    summary = commands.reenact(source.folder, tmp_path / "drv" / "gappy", tmp_path / "out.mp4", animator=animator,
                               workdir=tmp_path / "work")
    assert summary.n_frames == n and summary.n_repeated == 2
    video = frames_of(summary.out)
    assert video.shape[0] == n
    # repeated, not dropped (equal up to H.264 rounding)
    assert np.abs(video[2].astype(int) - video[3].astype(int)).mean() < 0.5


def test_reenact_keeps_the_drivers_sound(animator, clips, tmp_path):
    """A driver with sound (a talking clip) gives a video that says the same, in step with the frames."""
    from gagavatar.io import read_audio

    source, driver = clips
    n = 10
    params = {k: v[:n] if v.ndim and v.shape[0] == driver.n_frames and k != "landmark_ids" else v
              for k, v in driver.params.arrays.items()}
    t = np.arange(n * 640) / 16000
    sound = (0.5 * np.sin(2 * np.pi * 440 * t) * (t > 0.2)).astype(np.float32)  # a tone from frame 5 on
    write_video(tmp_path / "drv", "talking", np.stack([driver.frame(i) for i in range(n)]),
                np.stack([driver.matte(i) for i in range(n)]), params, "someone", "test", fps=25.0, audio=sound)
    summary = commands.reenact(source.folder, tmp_path / "drv" / "talking", tmp_path / "out.mp4", animator=animator,
                               workdir=tmp_path / "work")
    heard = read_audio(summary.out)
    assert abs(len(heard) - len(sound)) <= 640  # within a frame
    loud = np.abs(heard[:len(sound)]) > 0.25
    assert not loud[:3000].any() and loud[3500:].mean() > 0.5  # silent, then the tone from 0.2 s


def test_a_driver_videos_own_sound_is_kept_whole(animator, clips, tmp_path):
    """A driver video's sound is the output's at 48 kHz stereo: the dataset's 16 kHz mono would lose
    its channels and everything over 8 kHz."""
    from gagavatar.io import SOUND_RATE, read_audio
    from gagavatar.io import write_video as write_mp4

    source, driver = clips
    n = 10
    t = np.arange(n * SOUND_RATE // 25) / SOUND_RATE
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 12000 * t)], -1)
    clip = write_mp4(tmp_path / "talking.mp4", [driver.frame(i) for i in range(n)], fps=25, audio=stereo,
                     audio_rate=SOUND_RATE)
    summary = commands.reenact(source.folder, clip, tmp_path / "out.mp4", animator=animator, workdir=tmp_path / "w")
    heard = read_audio(summary.out, SOUND_RATE, channels=2)
    assert abs(len(heard) - len(t)) <= SOUND_RATE // 25  # within a frame
    middle = heard[len(t) // 4:3 * len(t) // 4]
    peaks = [np.fft.rfftfreq(len(middle), 1 / SOUND_RATE)[np.argmax(np.abs(np.fft.rfft(middle[:, c])))] for c in (0, 1)]
    assert abs(peaks[0] - 440) < 10 and abs(peaks[1] - 12000) < 10, peaks  # each channel its own tone, 12 kHz kept


def test_reenact_tracks_without_an_overlay_video(animator, clips, tmp_path):
    """A raw driver is tracked for the reenactment only: no overlay video rendered and thrown away."""
    from PIL import Image

    source, driver = clips
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(driver.frame(i)).save(frames / f"{i:03d}.png")
    commands.reenact(source.folder, frames, tmp_path / "out.mp4", animator=animator, workdir=tmp_path / "work")
    tracked = list((tmp_path / "work").rglob("video.json"))
    assert tracked and not list((tmp_path / "work").rglob("overlay.*"))


def test_ply_follows_the_3dgs_conventions(animator, clips, tmp_path):
    """Read by property name with plyfile (not our reader) and checked against the 3D Gaussian
    splatting conventions written out here: f_dc = (rgb - 0.5) / C0, opacity as a logit, log
    scales, unit quaternions w first; then one feat_i per feature channel of the model."""
    from plyfile import PlyData

    source, _ = clips
    path = commands.export_ply(source.folder, tmp_path / "avatar.ply", animator=animator)
    vertex = PlyData.read(str(path))["vertex"]
    avatar = animator.reconstruct(source)
    n, channels = avatar.features.shape[1:]
    col = lambda *names: np.stack([np.asarray(vertex[name], np.float64) for name in names], 1)  # noqa: E731
    assert len(vertex) == n == animator.model.config.n_gaussians
    features = avatar.features[0].double().numpy()
    np.testing.assert_allclose(col("f_dc_0", "f_dc_1", "f_dc_2"),
                               (features[:, :3].clip(0, 1) - 0.5) / 0.28209479177387814, rtol=1e-5, atol=1e-4)
    opacity = avatar.opacities[0, :, 0].double().numpy().clip(1e-6, 1 - 1e-6)
    np.testing.assert_allclose(col("opacity")[:, 0], np.log(opacity / (1 - opacity)), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(col("scale_0", "scale_1", "scale_2"), np.log(avatar.splat_scales[0].double().numpy()),
                               rtol=1e-5, atol=1e-4)
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-5)
    want = avatar.splat_rotations[0].double().numpy()
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs((quats * want).sum(1)), 1.0, atol=1e-5)  # the same rotation (q ~ -q)
    np.testing.assert_allclose(col(*[f"feat_{i}" for i in range(channels)]), features, rtol=1e-5, atol=1e-5)
    assert f"feat_{channels}" not in vertex.data.dtype.names
    vertices = source.frames(0).vertices(animator.head)[0].double().numpy()  # expression Gaussians: the source's mesh
    np.testing.assert_allclose(col("x", "y", "z")[:len(vertices)], vertices, rtol=1e-5, atol=1e-5)


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


def test_a_checkpoint_is_refused_with_another_head_model_by_name(pipeline_fixture, tmp_path):
    """The head a checkpoint was trained with is recorded in it; another head is one line naming both."""
    from gagavatar.head import BUNDLED_HEAD_ID, HeadModel
    from gagavatar.model import CheckpointError, load

    assert load(bundled("demo/tiny.safetensors")).head_id == BUNDLED_HEAD_ID
    flame = HeadModel.load(pipeline_fixture / "FLAME_with_eye.pt")
    assert flame.id != BUNDLED_HEAD_ID
    with pytest.raises(CheckpointError, match=f"trained with the head model {BUNDLED_HEAD_ID}, not {flame.id}"):
        Animator.load(head_model=flame)
    result = CliRunner().invoke(app, ["export-ply", "--source", str(bundled(DEMO_DATA) / "source"),
                                      "--head-model", str(pipeline_fixture / "FLAME_with_eye.pt"),
                                      "--out", str(tmp_path / "a.ply")])
    assert result.exit_code == 1 and not (tmp_path / "a.ply").exists()
    line = result.output.strip()
    assert "\n" not in line and BUNDLED_HEAD_ID in line and flame.id in line, result.output
