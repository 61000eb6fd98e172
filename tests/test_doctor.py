"""`gagavatar doctor`: identifying files (release, truncated, different; FLAME layouts and
landmark embeddings) and the install report. Small stand-ins replace the published files
in ``known_files.KNOWN_FILES``: the tests never need the 747 MB GAGAvatar.pt."""
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REALDATA
from typer.testing import CliRunner

from gagavatar import doctor, known_files
from gagavatar.cli import app
from gagavatar.head import flame_io
from gagavatar.head.model import DEFAULT_HEAD_PATH
from gagavatar.reenact import DEFAULT_CHECKPOINT, bundled

REFERENCE_FLAME = REALDATA.parent / "reference" / "pipeline_fixture" / "FLAME_with_eye.pt"


def _stand_in(path: Path, key: str, monkeypatch) -> known_files.KnownFile:
    """Make ``path`` the published file ``key`` (its size and an independently computed SHA-256)."""
    known = known_files.KnownFile(f"the stand-in {key}", path.name, path.stat().st_size,
                             hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(known_files.KNOWN_FILES, key, known)
    return known


@pytest.fixture
def release(tmp_path, monkeypatch) -> Path:
    """A small torch checkpoint standing in for GAGAvatar.pt (a zip, as torch.save writes it)."""
    path = tmp_path / "GAGAvatar.pt"
    torch.save({"model": {"a.weight": torch.arange(5000.0), "b.bias": torch.ones(300)}}, path)
    _stand_in(path, "checkpoint", monkeypatch)
    return path


def test_release_is_named(release):
    check = doctor.checkpoint_check(release)
    assert check.status == doctor.OK
    assert "the stand-in checkpoint" in check.detail and "SHA-256 matches" in check.detail
    assert known_files.check_release(release) is None


def test_truncated_download(release, tmp_path):
    data = release.read_bytes()
    part = tmp_path / "GAGAvatar_part.pt"
    part.write_bytes(data[: len(data) // 2])
    check = doctor.checkpoint_check(part)
    assert check.status == doctor.ERROR
    assert f"a truncated download ({len(data) // 2:,} of {len(data):,} bytes)" in check.detail
    assert known_files.check_release(part) is None  # another size: no warning (and no hashing)


def test_unrelated_files_are_different(release, tmp_path, monkeypatch):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint at all\n")
    html = tmp_path / "download.pt"
    html.write_text("<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)

    def no_hashing(*args, **kwargs):
        raise AssertionError("a file of another size was hashed")

    monkeypatch.setattr(known_files, "sha256_file", no_hashing)
    for path, what in ((text, "a text file"), (html, "an HTML page"), (other, "a torch checkpoint with 1 tensors")):
        check = doctor.checkpoint_check(path)
        assert check.status == doctor.ERROR, check
        assert "a different file" in check.detail and what in check.detail, check.detail
        assert known_files.check_release(path) is None


def test_same_size_other_bytes_warns(release, tmp_path, caplog):
    data = bytearray(release.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, the size kept
    copy = tmp_path / "copy.pt"
    copy.write_bytes(bytes(data))
    warning = known_files.check_release(copy)
    assert warning is not None and str(copy) in warning and "not the released file" in warning
    assert warning in caplog.text
    check = doctor.checkpoint_check(copy)
    assert "a different file" in check.detail and "another SHA-256" in check.detail


def test_our_checkpoints_are_named():
    check = doctor.checkpoint_check(bundled(DEFAULT_CHECKPOINT))
    assert check.status == doctor.OK
    assert "a different file: a gagavatar checkpoint, preset 'tiny' (128 px render" in check.detail


def test_release_named_tensors_are_recognised(tmp_path):
    """A file holding the release's tensor names (e.g. re-saved GAGAvatar.pt) is a usable checkpoint."""
    from gagavatar.model.reference_weights import official_listing

    path = tmp_path / "resaved.pt"
    torch.save({"model": {name: torch.zeros(0) for name, _ in official_listing()}}, path)
    check = doctor.checkpoint_check(path)
    assert check.status == doctor.OK
    assert "the GAGAvatar network's tensors (597 of the release's 597 names" in check.detail


def test_missing_checkpoint_is_an_error(tmp_path):
    check = doctor.checkpoint_check(tmp_path / "nothere.pt")
    assert check.status == doctor.ERROR and "not found" in check.detail


def test_synthetic_head_and_its_embedding():
    head, embedding = doctor.head_model_checks(DEFAULT_HEAD_PATH)
    assert head.status == doctor.OK and "this project's synthetic head" in head.detail and "not FLAME" in head.detail
    assert embedding.status == doctor.OK and "478 mediapipe points" in embedding.detail
    assert "land on the face" in embedding.detail


def _flame_like(tmp_path: Path, name: str) -> Path:
    """The synthetic head in FLAME's layout: 9,976 faces, 300 shape + 100 expression columns."""
    arrays = flame_io.read_head_file(DEFAULT_HEAD_PATH)
    shapedirs = np.zeros(arrays["shapedirs"].shape[:2] + (400,), np.float32)
    shapedirs[..., :100] = arrays["shapedirs"][..., :100]
    shapedirs[..., 300:350] = arrays["shapedirs"][..., 100:]
    emb = arrays["landmarks"]
    keep = emb["face_idx"] < 9976
    landmarks = {k: v[keep] for k, v in emb.items() if k != "format"} | {"format": "mediapipe"}
    flame = {k: arrays[k] for k in flame_io.REQUIRED_KEYS} | {"shapedirs": shapedirs, "f": arrays["f"][:9976],
                                                              "n_shape_basis": 300}
    path = tmp_path / name
    flame_io.save_head_npz(path, flame, landmarks=landmarks)
    return path


def test_flame_versions_by_layout_and_name(tmp_path):
    check = doctor.head_model_checks(_flame_like(tmp_path, "flame2020.npz"))[0]
    assert check.status == doctor.OK
    assert "FLAME (5,023 vertices, 9,976 faces, 300 shape + 100 expression columns, 5 joints)" in check.detail
    assert "FLAME 2020 by its name" in check.detail
    check = doctor.head_model_checks(_flame_like(tmp_path, "flame2023.npz"))[0]
    assert check.status == doctor.WARNING and "FLAME 2023 by its name" in check.detail
    check = doctor.head_model_checks(_flame_like(tmp_path, "head.npz"))[0]
    assert check.status == doctor.WARNING and "release not told by its name" in check.detail


def _embedding_file(path: Path, embedding: dict) -> Path:
    np.savez(path, lmk_face_idx=embedding["face_idx"], lmk_b_coords=embedding["bary"],
             landmark_indices=embedding["indices"])
    return path


def test_embedding_that_does_not_fit(tmp_path):
    own = flame_io.read_head_file(DEFAULT_HEAD_PATH)["landmarks"]
    shuffled = dict(own, indices=np.random.default_rng(0).permutation(own["indices"]))
    check = doctor.head_model_checks(DEFAULT_HEAD_PATH, _embedding_file(tmp_path / "shuffled.npz", shuffled))[1]
    assert check.status == doctor.ERROR and "do not land on the face" in check.detail
    other_mesh = dict(own, face_idx=own["face_idx"] + 20_000)
    check = doctor.head_model_checks(DEFAULT_HEAD_PATH, _embedding_file(tmp_path / "other.npz", other_mesh))[1]
    assert check.status == doctor.ERROR and "belongs to another mesh" in check.detail
    good = doctor.head_model_checks(DEFAULT_HEAD_PATH, _embedding_file(tmp_path / "own.npz", own))[1]
    assert good.status == doctor.OK


def test_similarity_residual_is_invariant():
    """A rotated, scaled, shifted copy fits exactly; its mirror image does not."""
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3))
    c, s = np.cos(0.7), np.sin(0.7)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert doctor.similarity_residual(points, 3.0 * points @ rotation.T + 5.0) < 1e-9
    assert doctor.similarity_residual(points, points * np.array([-1.0, 1.0, 1.0])) > 0.3


def test_reference_flame_file(tmp_path, monkeypatch):
    if not REFERENCE_FLAME.is_file():
        pytest.skip(f"the reference fixture is not at {REFERENCE_FLAME} (only CI and developers have it)")
    head = doctor.head_model_checks(REFERENCE_FLAME)[0]
    assert "FLAME (5,023 vertices, 9,976 faces, 300 shape + 100 expression columns" in head.detail
    assert "FLAME 2020 by its name" in head.detail
    if REFERENCE_FLAME.stat().st_size != known_files.KNOWN_FILES["flame_with_eye"].size:
        assert "SHA-256 matches" not in head.detail  # the fixture is a stand-in, not the reference's file
    _stand_in(REFERENCE_FLAME, "flame_with_eye", monkeypatch)
    head, embedding = doctor.head_model_checks(REFERENCE_FLAME)
    assert head.detail.startswith(f"{REFERENCE_FLAME}: the stand-in flame_with_eye (SHA-256 matches): FLAME")
    assert "ibug68+eyes" in embedding.detail and embedding.status == doctor.WARNING


def test_tiny_gsplat_scene_renders():
    """The scene the gsplat check renders is in view (checked here with the torch renderer)."""
    from gagavatar.render.rasterize import rasterize

    out = rasterize(**doctor._tiny_scene("cpu"), backend="torch")
    assert float(out.alpha.amax()) > 0.5 and float(out.alpha.amin()) < 0.5


def test_mediapipe_graphs_are_the_solutions():
    """The graph files the doctor looks for are those mediapipe's solutions load."""
    from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation

    listed = {f for files in doctor.MEDIAPIPE_MODELS.values() for f in files}
    for graph in (face_detection._SHORT_RANGE_GRAPH_FILE_PATH, face_detection._FULL_RANGE_GRAPH_FILE_PATH,
                  face_mesh._BINARYPB_FILE_PATH, selfie_segmentation._BINARYPB_FILE_PATH):
        assert graph.removeprefix("mediapipe/") in listed


def test_cli_doctor_reports_the_install(tmp_path):
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert torch.__version__ in lines["torch"]
    assert "0.10.14" in lines["mediapipe"] and " OK " in lines["mediapipe"]
    assert "the bundled tiny model" in lines["checkpoint"]
    assert "trained only on synthetic heads" in result.output and "GAGAvatar.pt + FLAME 2020" in result.output
    if importlib.util.find_spec("gsplat") is None:
        assert "not installed" in lines["gsplat"]
    result = CliRunner().invoke(app, ["doctor", "--checkpoint", str(tmp_path / "GAGAvatar.pt")])
    assert result.exit_code == 1 and "not found" in result.output


def test_speech_model_files_are_named(tmp_path, monkeypatch):
    """The released ARTalk_wav2vec.pt by size and hash; a truncated or foreign file is an error."""
    from gagavatar import doctor
    from gagavatar.doctor import ERROR, OK, WARNING

    stand_in = tmp_path / "ARTalk_wav2vec.pt"
    torch.save({"not": torch.zeros(3)}, stand_in)
    known = _stand_in(stand_in, "speech_model", monkeypatch)
    assert doctor.speech_model_check(stand_in).status == OK and known.filename in doctor.speech_model_check(stand_in).detail
    foreign = tmp_path / "other.pt"
    torch.save({"not": torch.ones(3)}, foreign)
    check = doctor.speech_model_check(foreign)
    assert check.status == ERROR and "missing tensor" in check.detail
    same_size = tmp_path / "same.pt"
    same_size.write_bytes(b"\0" * stand_in.stat().st_size)
    assert doctor.speech_model_check(same_size).status in (ERROR, WARNING)
    assert doctor.speech_model_check(tmp_path / "absent.pt").status == ERROR


@pytest.mark.parametrize("head, what", [
    (b"", "an empty file"),
    (b"\n<!DOCTYPE html><html><body>Sign in</body></html>", "an HTML page"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "a PNG image"),
    (b"\xff\xd8\xff\xe0" + bytes(64), "a JPEG image"),
    (bytes(4) + b"ftypisom" + bytes(64), "a video"),
    (b"PK\x03\x04" + bytes(64), "a zip archive"),
    (b"\x80\x02}q\x00.", "a Python pickle"),
    ("name = \"caf\u00e9\"\n".encode() * 10 + "\u00e9".encode()[:1], "a text file"),  # a character cut at the end
    (bytes(100), "unrecognised binary data"),  # valid UTF-8, but no text
    (b"\xfe\xff\x00\x01" * 20, "unrecognised binary data"),
])
def test_describe_content_names_what_a_wrong_file_is(head, what):
    from gagavatar.io import describe_content

    assert describe_content(head).startswith(what)


def test_commands_leave_cores_free_unless_told():
    """The command line runs torch on ``default_threads()`` (half the cores: on a busy machine one
    thread more than the free cores stalls every operator), unless OMP_NUM_THREADS says otherwise."""
    import os
    import subprocess
    import sys

    from gagavatar.system import default_threads, usable_cores

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for given, expected in ((None, default_threads()), ("2", min(2, usable_cores()))):  # torch caps at the cores
        if given is not None:
            env["OMP_NUM_THREADS"] = given
        out = subprocess.run([sys.executable, "-m", "gagavatar", "doctor"], env=env, capture_output=True, text=True,
                             timeout=120).stdout
        assert f"torch on {expected} of {usable_cores()} cores" in out, out
