"""Bad inputs and faults (issues 18 and 31): nothing lost, nothing half-written, one line per error.

Each test runs the command (in-process through ``gagavatar.cli.app``, or as a subprocess
where a signal is sent), checks the exit status, that the error is one line without a
traceback or ffmpeg's banner, and that nothing was lost: the previous output is
byte-identical and no temporary file is left behind. Full and read-only disks are small
tmpfs mounts (root, as in CI); without the right to mount, those tests skip and say why.
"""
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gagavatar import io as gio
from gagavatar.cli import app

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "source"  # a bundled tracked photo
TINY_NET = ["--model", "image_size=56", "--model", "vit_dim=48", "--model", "vit_heads=1", "--model", "plane_size=16",
            "--model", "render_size=32"]
NOT_IN_MESSAGES = ("Traceback", "ffmpeg version", "configuration:", "FFMPEG COMMAND", "Broken pipe",
                   "weights_only=False")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *expected: str, code: int = 1) -> str:
    """The command failed with exit status ``code`` (2: an option refused where it is parsed) and
    its last line is the one error line."""
    output = result.output
    assert result.exit_code == code, output[-2000:]
    assert not any(bad in output for bad in NOT_IN_MESSAGES), output[-2000:]
    lines = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output[-2000:]  # nothing after it: one line
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp*")]


@contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (unmounted afterwards); a skip where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({done.stderr.strip() or 'mount failed'}): the disk-full and read-only "
                    f"cases need root, as in CI")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        with open(folder / "filler2", "wb") as f:
            while True:
                f.write(b"\0")
                f.flush()
    except OSError:
        pass


@contextmanager
def unwritable(path: Path):
    """A folder nobody may write in: a read-only tmpfs for root (who ignores permissions), else chmod 555."""
    if os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, "1m"):
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path


def frames(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


# --------------------------------------------------------------------------- videos


def test_full_disk_keeps_the_previous_video_and_names_the_device(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = gio.write_video(disk / "orbit.mp4", frames(24))  # the previous good file
        before = out.read_bytes()
        fill(disk)
        message = one_line_error(invoke("novel-views", "--source", SOURCE, "--out", out, "--frames", 4),
                                 "no space left on device", str(disk))
        assert "tmpfs" in message  # the device
        assert out.read_bytes() == before and temps(disk) == []
        assert len(list(gio.iter_video(out))) == 24


def test_unwritable_folder_is_one_line_and_writes_nothing(tmp_path):
    with unwritable(tmp_path / "ro") as ro:
        for n in (1, 8):  # 8 frames used to end in "Broken pipe" and ffmpeg's command line
            one_line_error(invoke("novel-views", "--source", SOURCE, "--out", ro / "z.mp4", "--frames", n),
                           f"cannot write to {ro}")
            assert not (ro / "z.mp4").exists()
        with pytest.raises(gio.OutputError, match=f"cannot write to {ro}") as err:
            gio.check_writable(ro / "sub" / "z.mp4")  # what commands call before the work
        assert "\n" not in str(err.value)


def test_check_writable_before_work(tmp_path):
    assert gio.check_writable(tmp_path / "new" / "deeper" / "out.mp4") == tmp_path / "new" / "deeper" / "out.mp4"
    assert list(tmp_path.iterdir()) == []  # no folder made (a refused command leaves none), the probe gone
    (tmp_path / "new").mkdir()
    with pytest.raises(gio.OutputError, match="is a folder"):
        gio.check_writable(tmp_path / "new")
    (tmp_path / "file").write_text("x")
    with pytest.raises(gio.OutputError, match="is a file, not a folder"):
        gio.check_writable(tmp_path / "file" / "out.mp4")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        fill(disk)
        with pytest.raises(gio.OutputError, match="no space left on device tmpfs") as err:
            gio.check_writable(disk / "out.mp4")
        assert err.value.errno == 28


def test_error_in_the_frames_keeps_the_previous_video(tmp_path):
    out = gio.write_video(tmp_path / "out.mp4", frames(24))
    before = out.read_bytes()

    def interrupted():
        yield from frames(4)
        raise KeyboardInterrupt  # Ctrl-C while rendering

    with pytest.raises(KeyboardInterrupt):
        gio.write_video(out, interrupted())
    assert out.read_bytes() == before and temps(tmp_path) == []
    with pytest.raises(gio.InputError, match="frame 2 is 32x32, the first frame 64x64"):
        gio.write_video(out, frames(2) + frames(1, size=32))
    with pytest.raises(gio.InputError, match="no frames"):
        gio.write_video(out, [])
    assert out.read_bytes() == before and temps(tmp_path) == []


_WRITER = """
import signal, sys, time
import numpy as np
from gagavatar import io as gio

# Ctrl-C as in a terminal, even when the test runner was started in the background (a shell
# starts background jobs with SIGINT ignored, and children inherit that)
signal.signal(signal.SIGINT, signal.default_int_handler)

def frames():
    for i in range(100000):
        if i == 6:
            print("writing", flush=True)
        time.sleep(0.005)
        yield np.full((64, 64, 3), i % 255, np.uint8)

gio.write_video(sys.argv[1], frames())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_writer_killed_mid_video_keeps_the_previous_file(tmp_path, sig):
    out = gio.write_video(tmp_path / "out.mp4", frames(24))
    before = out.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
        time.sleep(0.2)
        assert temps(tmp_path), "the video is written to a temporary file beside the target"
        os.killpg(proc.pid, sig)  # as Ctrl-C in a terminal: the whole process group
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert out.read_bytes() == before
    if sig == signal.SIGKILL:  # nothing runs after kill -9: the next write clears the dead process's temp file
        gio.check_writable(out)
    assert temps(tmp_path) == []
    assert len(list(gio.iter_video(out))) == 24


def test_a_command_killed_with_sigterm_unwinds_as_ctrl_c(tmp_path):
    """`timeout`, a job scheduler or systemd stop a command with SIGTERM: it cleans up as Ctrl-C
    does (the previous output whole, no temporary file left), status 130."""
    out = gio.write_video(tmp_path / "orbit.mp4", frames(24))
    before = out.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "gagavatar", "novel-views", "--source", str(SOURCE), "--out",
                             str(out), "--frames", "5000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        while not temps(tmp_path) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)  # until the video is being written
        assert temps(tmp_path), proc.stderr.read() if proc.poll() is not None else "no temporary file in 120 s"
        proc.terminate()
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert "interrupted" in proc.stderr.read() and out.read_bytes() == before and temps(tmp_path) == []


def test_huge_image_is_one_line(tmp_path):
    """A 14000 x 14000 PNG header (196 megapixels; the pixels are never decoded)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", 14000, 14000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (tmp_path / "huge.png").write_bytes(bytes(png))
    one_line_error(invoke("track", tmp_path / "huge.png", "--out", tmp_path / "t"),
                   "huge.png: the image is too large (196 megapixels", "resize it")


def test_video_with_a_damaged_end_is_tracked_and_reported(tmp_path):
    """The header announces 48 frames; the file was cut short: the frames that decode are
    tracked, the exit status is 0, and one line says how many of the 48 could be read."""
    whole = gio.write_video(tmp_path / "whole.mp4", frames(48))
    fast = tmp_path / "fast.mp4"  # the index (moov) first, as phones and web videos have it
    subprocess.run([gio.ffmpeg_exe(), "-v", "error", "-i", whole, "-c", "copy", "-movflags", "+faststart", fast],
                   check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    decoded = gio.iter_video(cut)
    n = sum(1 for _ in decoded)
    assert decoded.n_expected == 48 and 0 < n < 40
    assert gio.iter_video(whole).warning() is None
    result = invoke("track", cut, "--out", tmp_path / "tracked", "--no-overlay")
    assert result.exit_code == 0, result.output
    assert f"warning: only {n} of 48 frames could be decoded; the rest of {cut} is damaged" in result.output
    assert json.loads((tmp_path / "tracked" / "cut" / "video.json").read_text())["n_frames"] == n


# --------------------------------------------------------------------------- tensor files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from gagavatar.model import create_model, save

    torch.manual_seed(0)
    return save(create_model("tiny"), tmp_path_factory.mktemp("model") / "tiny.safetensors")


def test_truncated_safetensors_is_one_line(tmp_path, model_file):
    data = model_file.read_bytes()
    for name, cut in (("half", len(data) // 2), ("header", 100), ("empty", 0)):
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(data[:cut])
        one_line_error(invoke("novel-views", "--source", SOURCE, "--out", tmp_path / "o.mp4", "--checkpoint", bad),
                       f"{bad} is truncated or corrupt ({cut} bytes): download it again")
    assert not (tmp_path / "o.mp4").exists()


def test_truncated_torch_file_is_one_line(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}, "meta_cfg": {}}, full)
    for cut in (40, full.stat().st_size // 2, full.stat().st_size - 30):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(full.read_bytes()[:cut])
        one_line_error(invoke("convert-official", bad, "-o", tmp_path / "c.safetensors"),
                       f"{bad} is truncated or corrupt ({cut} bytes)")
    assert not (tmp_path / "c.safetensors").exists()


def test_not_a_checkpoint_and_missing_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not a checkpoint\n" * 20)
    one_line_error(invoke("convert-official", text), f"{text} is not a checkpoint")
    fake = tmp_path / "fake.safetensors"
    fake.write_text("these are my notes, not a checkpoint\n" * 20)
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", tmp_path / "o.mp4", "--checkpoint", fake),
                   f"{fake} is not a checkpoint")
    one_line_error(invoke("convert-official", tmp_path / "nope.pt"), "nope.pt")


class _Touch:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_that_holds_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    for name, write in (("evil.pt", lambda p: torch.save({"model": {"w": torch.zeros(2)}, "x": _Touch(marker)}, p)),
                        ("evil.pkl", lambda p: p.write_bytes(pickle.dumps({"model": _Touch(marker)}, protocol=4)))):
        path = tmp_path / name
        write(path)
        message = one_line_error(invoke("convert-official", path, "-o", tmp_path / "c.safetensors"),
                                 f"{path} holds code", "was not run; only files of tensors are loaded")
        assert "weights_only" not in message
    # the head model (a FLAME pickle) is read by its own restricted unpickler: the same report
    head = tmp_path / "generic_model.pkl"
    head.write_bytes(pickle.dumps({"v_template": _Touch(marker)}, protocol=2))
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", tmp_path / "o.mp4", "--head-model", head),
                   f"{head} holds code", "was not run")
    assert not marker.exists()


def test_corrupt_lmdb_in_a_reference_folder_is_one_line(tmp_path):
    from gagavatar.data.reference_format import make_record, save_reference_pickle

    folder = tmp_path / "ref"
    record = make_record(np.zeros(300), np.zeros(100), np.zeros(3), np.zeros(6), np.eye(4)[:3], np.zeros(4))
    save_reference_pickle(folder / "optim.pkl", {"clip_0": record, "clip_1": record})
    (folder / "img_lmdb").mkdir()
    (folder / "img_lmdb" / "data.mdb").write_bytes(np.random.default_rng(0).bytes(64 << 10))
    one_line_error(invoke("import-reference", folder, "--out", tmp_path / "ds"),
                   f"{folder / 'img_lmdb'}: this image database cannot be read")
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- synth and train options


@pytest.mark.parametrize("option", [("--frames", "0"), ("--identities", "0"), ("--size", "8"),
                                    ("--videos-per-identity", "0")])
def test_synth_refuses_empty_settings(tmp_path, option):
    one_line_error(invoke("synth", "--out", tmp_path / "ds", *option), f"{option[0]} must be at least")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("option", [("--checkpoint-every", "0"), ("--max-steps", "0"), ("--batch-size", "-1"),
                                    ("--lr", "0"), ("--lr", "nan"), ("--keep-last", "0")])
def test_train_refuses_bad_numbers_up_front(tmp_path, option):
    parsed = option[0] != "--lr"  # bounds checked where the option is parsed (exit 2); --lr by the config
    one_line_error(invoke("train", "--data", tmp_path / "none", "--out", tmp_path / "run", *option), option[0],
                   code=2 if parsed else 1)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from gagavatar.synthetic.video import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(identities=2, videos_per_identity=1, frames=3, size=32, seed=3, workers=1,
                               n_gaussians=2000), progress=False)
    return root


def _train(dataset, out, *extra):
    return invoke("train", "--data", dataset, "--out", out, *TINY_NET, "--batch-size", 1, "--sample-every", 100,
                  *extra)


def _old_run(folder: Path) -> None:
    """What a finished 5-step run leaves, plus a file of the user's."""
    from gagavatar.train.state import mark_run

    folder.mkdir(parents=True)
    mark_run(folder)
    (folder / "config.json").write_text(json.dumps({"preset": "tiny", "max_steps": 5}))
    (folder / "step_000005.pt").write_bytes(b"old weights")
    (folder / "model.safetensors").write_bytes(b"old model")
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)))
    (folder / "samples").mkdir()
    (folder / "samples" / "step_000005.png").write_bytes(b"old sample")
    (folder / "notes.txt").write_text("my notes")


def test_train_into_another_run_is_refused(tmp_path):
    run = tmp_path / "run"
    _old_run(run)
    before = snapshot(run)
    one_line_error(invoke("train", "--data", tmp_path / "none", "--out", run), f"{run} holds another training run",
                   "--resume", "--overwrite")
    assert snapshot(run) == before


@pytest.fixture(scope="module")
def overwritten(dataset, tmp_path_factory):
    """An old run's folder trained again with --overwrite (2 steps, a checkpoint each, keep-last 1)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    _old_run(run)
    result = _train(dataset, run, "--overwrite", "--max-steps", 2, "--checkpoint-every", 1, "--keep-last", 1)
    return run, result


def test_overwrite_starts_clean(overwritten):
    run, result = overwritten
    assert result.exit_code == 0, result.output[-2000:]
    names = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "tb" not in p.parts}
    # the old step_000005.pt would have counted as newer and made keep-last delete the new checkpoint
    assert names == {"config.json", "metrics.jsonl", "loss.png", "model.safetensors", "step_000002.pt",
                     "samples/step_000002.png", "notes.txt", "gagavatar_run.json"}
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2]
    assert json.loads((run / "config.json").read_text())["max_steps"] == 2
    assert (run / "notes.txt").read_text() == "my notes"  # not the trainer's: kept


def test_resume_skips_a_corrupt_checkpoint_and_redoes_its_metrics(overwritten, dataset, tmp_path):
    """Newest checkpoint truncated (killed mid-copy, disk trouble): resume from the newest that
    reads, say so in one line, keep the damaged file aside, drop the metrics after the resumed
    step, and remove the temporary file a killed writer left."""
    run = tmp_path / "run"
    shutil.copytree(overwritten[0], run)
    good = (run / "step_000002.pt").read_bytes()
    (run / "step_000003.pt").write_bytes(good[: len(good) // 2])
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 9.0}) + "\n" + '{"step": 4, "lo')  # the last line cut by a kill
    stale = run / ".step_000004.pt.tmp999999999.pt"  # no such process
    stale.write_bytes(b"half a checkpoint")
    result = _train(dataset, run, "--resume", "--max-steps", 2)  # already there: no step to take
    assert result.exit_code == 0, result.output[-2000:]
    skipped = [line for line in result.output.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "step_000003.pt: it is truncated or corrupt" in skipped[0], result.output
    assert "Resumed from" in result.output and "at step 2" in result.output
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2]
    assert (run / "step_000003.pt.corrupt").is_file() and not (run / "step_000003.pt").exists()
    assert (run / "step_000002.pt").read_bytes() == good
    assert not stale.exists()


def test_full_disk_during_a_checkpoint_is_one_line(dataset, tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:  # config, metrics and a sample fit; a checkpoint does not
        run = disk / "run"
        message = one_line_error(_train(dataset, run, "--max-steps", 1, "--checkpoint-every", 1),
                                 "no space left on device tmpfs", "step_000001.pt")
        assert str(disk) in message
        assert temps(disk) == [] and not list(run.glob("step_*"))
        assert (run / "config.json").is_file()


# --------------------------------------------------------------------------- numeric motion controls


@pytest.mark.parametrize("option, value, expected", [("--expression-scale", "nan", "the expression scale is nan"),
                                                     ("--stabilize", "nan", "smoothing strength"),
                                                     ("--jaw-scale", "inf", "the jaw scale is inf"),
                                                     ("--transfer", "bogus", "'bogus' is not one of all, expression")])
def test_non_finite_motion_controls_are_refused_up_front(tmp_path, option, value, expected):
    driver = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "driver"
    one_line_error(invoke("reenact", "--source", SOURCE, "--driver", driver, "--out", tmp_path / "o.mp4", option,
                          value), expected, code=2)  # a usage error, as an option refused where it is parsed
    assert not (tmp_path / "o.mp4").exists()


# =========================================================================== issue 31
# Outputs never replace inputs or special files; folders replaced whole; finite or refused;
# variable frame rates; options refused where they are parsed.

DRIVER = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "driver"  # a bundled tracked clip (48 frames)
BUNDLED_NOTE = "bundled model is a small demonstration model"  # printed once the model has loaded


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_an_output_over_an_input_is_refused_and_the_input_kept(tmp_path):
    clip = gio.write_video(tmp_path / "clip.mp4", frames(4))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((SOURCE / "frames" / "000000.png").read_bytes())
    os.link(photo, tmp_path / "hard.ply")  # the same file under another name
    (tmp_path / "link.mp4").symlink_to(clip)
    before = {p: digest(p) for p in (clip, photo)}
    for args, given in [(("reenact", "--source", SOURCE, "--driver", clip, "--out", clip), clip),
                        (("reenact", "--source", SOURCE, "--driver", clip, "--out", tmp_path / "link.mp4"), clip),
                        (("export-ply", "--source", photo, "--out", photo), photo),
                        (("export-ply", "--source", photo, "--out", tmp_path / "hard.ply"), photo)]:
        result = invoke(*args)
        one_line_error(result, "is also an input of this command", str(given), "choose another output file")
        assert BUNDLED_NOTE not in result.output  # refused before the model loaded
    assert {p: digest(p) for p in before} == before and temps(tmp_path) == []


def test_a_checkpoint_is_never_converted_over_itself(tmp_path, model_file):
    ckpt = tmp_path / "model.safetensors"
    shutil.copy(model_file, ckpt)
    before = digest(ckpt)
    one_line_error(invoke("convert-official", ckpt, "-o", ckpt), "is also an input")
    assert digest(ckpt) == before


def test_devices_fifos_and_folders_are_never_replaced(tmp_path):
    device = tmp_path / "null.ply"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    except PermissionError:
        device = None
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    if device is not None:
        one_line_error(invoke("export-ply", "--source", SOURCE, "--out", device), "is a character device",
                       "not a regular file")
        assert device.is_char_device()
        with pytest.raises(gio.OutputError, match="is a character device"):  # the last guard, at the rename
            with gio.atomic_path(device) as tmp:
                tmp.write_bytes(b"x")
        assert device.is_char_device()
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", fifo), "is a FIFO (named pipe)")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", folder), "is a folder")
    assert folder.is_dir() and temps(tmp_path) == []


@pytest.mark.parametrize("command, out, expected", [
    (("reenact", "--driver", DRIVER), "x.gif", "written as .mp4"),
    (("novel-views",), "orbit.avi", "written as .mp4"),
    (("export-ply",), "avatar.obj", "written as .ply"),
    (("live", "--driver", DRIVER, "--no-show"), "live.webm", "written as .mp4"),
])
def test_the_output_extension_is_checked_before_any_work(tmp_path, command, out, expected):
    result = invoke(*command, "--source", SOURCE, "--out", tmp_path / out)
    one_line_error(result, expected)
    assert BUNDLED_NOTE not in result.output and not (tmp_path / out).exists()


# --------------------------------------------------------------------------- folders replaced whole


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The bundled source photo, tracked into a dataset: (photo, dataset folder)."""
    root = tmp_path_factory.mktemp("tracked")
    photo = root / "in" / "person.png"
    photo.parent.mkdir()
    photo.write_bytes((SOURCE / "frames" / "000000.png").read_bytes())
    result = invoke("track", photo, "--out", root / "ds", "--no-overlay")
    assert result.exit_code == 0, result.output
    return photo, root / "ds"


def test_another_clip_of_the_same_name_is_refused(tracked, tmp_path):
    photo, ds = tracked
    before = snapshot(ds)
    other = tmp_path / "person.png"  # same name, another picture
    other.write_bytes((DRIVER / "frames" / "000010.png").read_bytes())
    one_line_error(invoke("track", other, "--out", ds, "--no-overlay"), f"{ds / 'person'} holds the tracking of "
                   f"another clip named person", "choose another --out")
    assert snapshot(ds) == before


def test_retracking_interrupted_keeps_the_previous_folder_whole(tracked, tmp_path, monkeypatch):
    photo, ds = tracked
    work = tmp_path / "ds"
    shutil.copytree(ds, work)
    before = snapshot(work)
    import gagavatar.tracking.tracker as tracker

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C after the new frames and params are written, before the swap

    monkeypatch.setattr(tracker, "_write_overlay", interrupted)
    result = invoke("track", photo, "--out", work)
    assert result.exit_code == 130, result.output
    assert {k: v for k, v in snapshot(work).items() if not k.startswith(".")} == before
    monkeypatch.undo()
    result = invoke("track", photo, "--out", work, "--no-overlay")  # the same clip again: replaced whole
    assert result.exit_code == 0, result.output
    assert not [p for p in work.iterdir() if p.name.startswith(".person.tmp")]  # its own leftover is gone
    assert (work / "person" / "video.json").is_file() and "person/video.json" in snapshot(work)


def _synth(out: Path, size: int, frames_: int = 2):
    return invoke("synth", "--out", out, "--identities", 2, "--videos-per-identity", 1, "--frames", frames_,
                  "--size", size, "--gaussians", 1500, "--workers", 1)


def test_synth_replaces_its_dataset_whole_and_refuses_other_folders(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    assert _synth(ds, 32, 3).exit_code == 0
    before = snapshot(ds)
    import gagavatar.synthetic.video as synthetic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "contact_sheet", interrupted)
    assert _synth(ds, 64).exit_code == 130
    assert snapshot(ds) == before and temps(tmp_path) == []  # Ctrl-C: the previous dataset as it was
    monkeypatch.undo()
    assert _synth(ds, 64).exit_code == 0
    from PIL import Image

    sizes = {Image.open(p).size for p in ds.rglob("frames/*.png")}
    assert sizes == {(64, 64)} and len(list(ds.rglob("frames/*.png"))) == 4  # no 32 px frame of the old run left
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    one_line_error(_synth(mine, 32), "holds files that are not a dataset", "choose a new or empty folder")
    assert snapshot(mine) == {"notes.txt": digest(mine / "notes.txt")}


def test_overwrite_replaces_only_a_run_of_this_project(tmp_path):
    run = tmp_path / "other-tool"
    run.mkdir()
    (run / "config.json").write_text('{"theirs": true}')
    (run / "metrics.jsonl").write_text("theirs\n")
    before = snapshot(run)
    one_line_error(invoke("train", "--data", tmp_path / "none", "--out", run, "--overwrite"),
                   "holds files that no gagavatar training run wrote", "gagavatar_run.json")
    assert snapshot(run) == before


@pytest.mark.parametrize("override, expected", [("plane_size=-1", "plane_size=-1: must be a whole number"),
                                                ("plane_size=abc", "plane_size takes a whole number")])
def test_a_bad_model_setting_leaves_nothing_that_blocks_a_retry(dataset, tmp_path, override, expected):
    run = tmp_path / "run"
    one_line_error(invoke("train", "--data", dataset, "--out", run, "--model", override), expected)
    from gagavatar.train.state import run_files

    assert run_files(run) == []  # no stub: the retry below is not "another training run"
    result = _train(dataset, run, "--max-steps", 1)
    assert result.exit_code == 0, result.output[-2000:]


def test_the_output_folder_may_not_hold_an_input(dataset, tmp_path):
    inside = tmp_path / "runs"
    shutil.copytree(dataset, inside / "data")
    before = snapshot(inside)
    one_line_error(invoke("train", "--data", inside / "data", "--out", inside, "--overwrite"),
                   "holds an input of this command")
    one_line_error(invoke("import-reference", inside, "--out", inside / "data" / "x"), "lies inside an input")
    assert snapshot(inside) == before


# --------------------------------------------------------------------------- finite or refused


def _with_nan(arrays: dict, name: str) -> dict:
    arrays = dict(arrays)
    bad = arrays[name].copy() if isinstance(arrays[name], np.ndarray) else arrays[name].clone()
    bad.reshape(-1)[0] = float("nan")
    arrays[name] = bad
    return arrays


def test_a_checkpoint_or_head_model_with_nan_is_refused_and_doctor_says_so(tmp_path, model_file):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from gagavatar.head.model import DEFAULT_HEAD_PATH

    with safe_open(str(model_file), framework="pt") as f:
        metadata = f.metadata()
    name = "refiner.to_rgb.weight" if "refiner.to_rgb.weight" in load_file(str(model_file)) else \
        sorted(load_file(str(model_file)))[-1]
    ckpt = tmp_path / "diverged.safetensors"
    save_file(_with_nan(load_file(str(model_file)), name), str(ckpt), metadata=metadata)
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", tmp_path / "o.mp4", "--checkpoint", ckpt),
                   f"{ckpt}: tensor {name} holds 1 NaN or Inf value(s)", "use an earlier checkpoint")
    head = tmp_path / "head.npz"
    with np.load(DEFAULT_HEAD_PATH) as f:
        np.savez(head, **_with_nan(dict(f), "v_template"))
    one_line_error(invoke("novel-views", "--source", SOURCE, "--out", tmp_path / "o.mp4", "--head-model", head),
                   f"{head}: tensor v_template holds 1 NaN")
    result = invoke("doctor", "--checkpoint", ckpt, "--head-model", head)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any("checkpoint" in line and f"tensor {name} holds 1 NaN" in line for line in lines), result.output
    assert any("head model" in line and "tensor v_template holds 1 NaN" in line for line in lines), result.output
    assert not (tmp_path / "o.mp4").exists()


def test_a_render_that_produces_nan_stops(tmp_path):
    from gagavatar.data.format import VideoRecord
    from gagavatar.errors import NonFiniteError
    from gagavatar.reenact import Animator

    animator = Animator.load(device="cpu")
    source = VideoRecord.open(SOURCE)
    avatar = animator.reconstruct(source)
    with torch.no_grad():
        next(iter(animator.model.refiner.parameters())).fill_(float("nan"))  # as a diverged model would
    with pytest.raises(NonFiniteError, match="rendered frames hold NaN or Inf"):
        next(animator.render(avatar, source.frames(0)))
    with pytest.raises(NonFiniteError, match="rendered frames hold NaN or Inf"):
        gio.write_video(tmp_path / "o.mp4", animator.orbit(avatar, source, 2))
    assert not (tmp_path / "o.mp4").exists() and temps(tmp_path) == []


def test_training_that_diverges_stops_and_keeps_the_last_good_checkpoint(dataset, tmp_path, monkeypatch):
    from gagavatar.train import trainer
    from gagavatar.train.state import read_training_state

    forward, calls = trainer.GAGAvatarLoss.forward, []

    def diverging(self, *args, **kwargs):  # steps 1 and 2 as usual, then NaN as a diverged run gives
        loss, terms = forward(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), terms) if len(calls) > 2 else (loss, terms)

    monkeypatch.setattr(trainer.GAGAvatarLoss, "forward", diverging)
    monkeypatch.setattr(trainer, "MAX_BAD_STEPS", 3)  # fewer steps to the same end
    run = tmp_path / "run"
    result = _train(dataset, run, "--max-steps", 50, "--checkpoint-every", 1, "--keep-last", 5)
    one_line_error(result, f"training diverged at step {2 + trainer.MAX_BAD_STEPS}",
                   f"the last good checkpoint, {run / 'step_000002.pt'}, is kept", "--resume")
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_000001.pt", "step_000002.pt"]
    assert read_training_state(run / "step_000002.pt")["step"] == 2 and not (run / "model.safetensors").exists()


# --------------------------------------------------------------------------- personalize


@pytest.mark.parametrize("option, value", [("--steps", "0"), ("--minutes", "0"), ("--lr", "0"),
                                           ("--batch-size", "0")])
def test_personalize_refuses_empty_settings_naming_its_own_options(tmp_path, option, value):
    out = tmp_path / "person.safetensors"
    message = one_line_error(invoke("personalize", "--video", DRIVER, "--out", out, option, value), option,
                             code=2 if option in ("--steps", "--batch-size") else 1)
    assert "--max-" not in message and not out.exists() and not (tmp_path / "person.work").exists()


def test_personalize_on_a_new_video_starts_a_new_run(tmp_path, monkeypatch):
    from gagavatar.model.checkpoint import checkpoint_info
    from gagavatar.train import personalize as module
    from gagavatar.train.personalize import PersonalizeConfig, personalize

    monkeypatch.setattr(module, "_identity_encoder", lambda: (None, "off in this test"))  # dlib's CSIM: slow

    other = tmp_path / "other"  # another person's clip (here: the same frames, one of them changed)
    shutil.copytree(DRIVER, other)
    (other / "frames" / "000000.png").write_bytes((DRIVER / "frames" / "000001.png").read_bytes())
    out = tmp_path / "person.safetensors"
    settings = dict(out=str(out), steps=1, batch_size=1, eval_frames=2, checkpoint_every=1)
    first = personalize(PersonalizeConfig(video=str(DRIVER), **settings), say=lambda line: None)
    second = personalize(PersonalizeConfig(video=str(other), **settings), say=lambda line: None)
    assert second["steps"] == 1 and second["run"] != first["run"]  # trained, in a run of its own
    assert len(list(tmp_path.glob("person.work/run-*"))) == 2
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["made_from"]["video_sha256"] == gio.fingerprint(other) != gio.fingerprint(DRIVER)
    assert checkpoint_info(out)["personalized"]["video_sha256"] == report["made_from"]["video_sha256"]


# --------------------------------------------------------------------------- variable frame rate


def test_a_variable_frame_rate_clip_keeps_its_duration(tmp_path):
    """A phone-like clip: 8 frames 1/60 s apart, then 8 frames 1/20 s apart (base rate 60):
    reenacted, it lasts as long as the clip, not about twice as long."""
    clip = tmp_path / "phone.mp4"
    pattern = str(DRIVER / "frames" / "%06d.png")
    subprocess.run([gio.ffmpeg_exe(), "-v", "error", "-framerate", "60", "-i", pattern, "-frames:v", "16",
                    "-vf", "setpts='if(lt(N,8),N/60,8/60+(N-8)/20)/TB'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", clip], check=True)
    probe = subprocess.run([gio.ffmpeg_exe(), "-hide_banner", "-i", clip], capture_output=True, text=True).stderr
    h, m, sec = re.search(r"Duration: (\d+):(\d+):([\d.]+)", probe).groups()
    duration = int(h) * 3600 + int(m) * 60 + float(sec)
    info = gio.video_info(clip)
    decoded = sum(1 for _ in gio.iter_video(clip))
    slack = 0.1  # the last frame's own time (1/20 s) and a frame of rounding; at the base rate: twice as long
    assert abs(decoded / info.fps - duration) < slack, (decoded, info, duration)
    out = tmp_path / "out.mp4"
    result = invoke("reenact", "--source", SOURCE, "--driver", clip, "--out", out)
    assert result.exit_code == 0, result.output[-2000:]
    written = gio.video_info(out)
    assert abs(sum(1 for _ in gio.iter_video(out)) / written.fps - duration) < slack
    assert gio.video_info(clip, fps=10).fps == 10 and abs(sum(1 for _ in gio.iter_video(clip, 10)) - 10 * duration) < 3


# --------------------------------------------------------------------------- build-dataset


def test_build_dataset_fails_when_no_clip_is_tracked(tmp_path):
    clips = tmp_path / "clips"
    gio.write_video(clips / "noise.mp4", frames(3))  # no face anywhere
    message = one_line_error(invoke("build-dataset", clips, "--out", tmp_path / "ds", "--workers", 0),
                             "none of the 1 clip(s) could be tracked", "no dataset was made")
    assert "build_report.json" in message
    one_line_error(invoke("build-dataset", clips, "--out", tmp_path / "ds", "--workers", -1), "--workers", code=2)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("args, expected", [
    (("app", "--port", "70000"), "--port"),
    (("app", "--port", "-1"), "--port"),
    (("novel-views", "--source", "x", "--frames", "-1"), "--frames"),
    (("bench", "reenact", "--batches", "0"), "whole numbers of at least 1"),
    (("bench", "head", "--repeat", "0"), "--repeat"),
    (("eval", "--data", "d", "--out", "o", "--checkpoint", "c", "--device", "tpu"), "not a device gagavatar runs on"),
    (("serve", "--device", "tpu"), "not a device gagavatar runs on"),
    (("train-speech", "--data", "d", "--batch-size", "0"), "--batch-size"),
    (("eval", "--data", "d", "--out", "o", "--checkpoint", "c", "--batch-size", "0"), "--batch-size"),
    (("live", "--source", "x", "--camera", "-1"), "--camera"),
    (("track", "x.png", "--out", "o", "--size", "1000000"), "--size 1000000 needs about"),
    (("build-dataset", "x", "--out", "o", "--size", "1000000"), "--size 1000000 needs about"),
    (("personalize", "--video", "x", "--steps", "0"), "--steps"),
    (("train", "--data", "d", "--out", "o", "--seed", "-1"), "--seed"),
])
def test_options_are_refused_where_they_are_parsed(tmp_path, args, expected):
    one_line_error(invoke(*args), expected, code=2)


def test_a_device_this_machine_lacks_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    one_line_error(invoke("eval", "--data", "d", "--out", "o", "--checkpoint", "c", "--device", "cuda"),
                   "this machine has no CUDA GPU", "--device cpu", code=2)


def test_memory_sized_options_are_bounded_by_the_machine(tmp_path):
    one_line_error(invoke("synth", "--out", tmp_path / "ds", "--gaussians", 2_000_000_000), "--gaussians 2000000000",
                   "of memory", "GB free")
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- messages


def test_a_sound_file_given_as_a_video_is_one_clear_line(tmp_path):
    sound = tmp_path / "voice.mp4"
    subprocess.run([gio.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", sound],
                   check=True)
    message = one_line_error(invoke("track", sound, "--out", tmp_path / "t"), "has no video stream (a sound file?)")
    assert len(message) < 300 and not (tmp_path / "t").exists()


def test_a_temporary_file_is_never_named_in_an_error(tmp_path):
    out = tmp_path / ("a" * 245 + ".mp4")  # fits, but its temporary file's name does not
    message = one_line_error(invoke("novel-views", "--source", SOURCE, "--out", out, "--frames", 1),
                             "file name too long", "choose another output path")
    assert ".tmp" not in message and "Errno" not in message


def test_live_takes_a_tracked_folder_as_driver(tmp_path):
    out = tmp_path / "live.mp4"
    result = invoke("live", "--source", SOURCE, "--driver", DRIVER, "--out", out, "--no-show", "--max-frames", 3)
    assert result.exit_code == 0, result.output[-2000:]
    assert sum(1 for _ in gio.iter_video(out)) == 3 and gio.video_info(out).fps == 25


def test_parameters_of_another_head_model_are_refused_before_rendering(tmp_path):
    driver = tmp_path / "driver"
    shutil.copytree(DRIVER, driver)
    with np.load(driver / "params.npz") as z:
        arrays = dict(z)
    arrays["expression"] = np.zeros((len(arrays["expression"]), 150), np.float32)  # the bundled head has 100
    np.savez(driver / "params.npz", **arrays)
    out = tmp_path / "r.mp4"
    one_line_error(invoke("reenact", "--source", SOURCE, "--driver", driver, "--out", out),
                   f"{driver / 'params.npz'}: 150 expression coefficients a frame, but the head model",
                   "has 100: track the video again")
    assert not out.exists()


def test_a_file_given_as_a_folder_output_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    for args in (["build-dataset", SOURCE], ["eval", "--baselines", "--data", DRIVER.parent]):
        one_line_error(invoke(*args, "--out", tmp_path / "afile"), "afile is not a folder")
    assert (tmp_path / "afile").read_text() == "x"


def test_a_speech_model_and_an_avatar_checkpoint_swapped_say_which_is_which(tmp_path):
    voice = ROOT / "gagavatar" / "assets" / "speech" / "tiny_voice.safetensors"
    avatar = ROOT / "gagavatar" / "assets" / "demo" / "tiny.safetensors"
    one_line_error(invoke("reenact", "--source", SOURCE, "--driver", DRIVER, "--out", tmp_path / "a.mp4",
                          "--checkpoint", voice), "a speech model's", "give it as --speech-model")
    speech = tmp_path / "speech.wav"
    gio.write_wav(speech, np.zeros(8000, np.float32))
    one_line_error(invoke("speak", "--source", SOURCE, "--audio", speech, "--out", tmp_path / "b.mp4",
                          "--speech-model", avatar), "is an avatar checkpoint", "give it as --checkpoint")


def test_refused_training_runs_leave_no_run_folder(tmp_path):
    """The inputs are read before the run folder is made: a corrected command is not refused
    for a folder the failed one left."""
    one_line_error(invoke("train", "--data", tmp_path / "none", "--out", tmp_path / "run"))
    one_line_error(invoke("train-speech", "--data", tmp_path / "none.npz", "--out", tmp_path / "speech_run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "speech_run").exists()
