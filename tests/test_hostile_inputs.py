"""Bad inputs and faults (issue 18): nothing lost, nothing half-written, one line per error.

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
import shutil
import signal
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


def one_line_error(result, *expected: str) -> str:
    """The command failed with exit status 1 and its last line is the one error line."""
    output = result.output
    assert result.exit_code == 1, output[-2000:]
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
    assert gio.check_writable(tmp_path / "new" / "out.mp4") == tmp_path / "new" / "out.mp4"
    assert (tmp_path / "new").is_dir() and list((tmp_path / "new").iterdir()) == []  # the probe is gone
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
import sys, time
import numpy as np
from gagavatar import io as gio

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
    one_line_error(invoke("train", "--data", tmp_path / "none", "--out", tmp_path / "run", *option), option[0])
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
    folder.mkdir(parents=True)
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
                     "samples/step_000002.png", "notes.txt"}
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


@pytest.mark.parametrize("option, value, expected", [("--expression-scale", "nan", "expression_scale=nan"),
                                                     ("--stabilize", "nan", "smoothing strength"),
                                                     ("--jaw-scale", "inf", "jaw_scale=inf")])
def test_non_finite_motion_controls_are_refused_up_front(tmp_path, option, value, expected):
    driver = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "driver"
    one_line_error(invoke("reenact", "--source", SOURCE, "--driver", driver, "--out", tmp_path / "o.mp4", option,
                          value), expected)
    assert not (tmp_path / "o.mp4").exists()
