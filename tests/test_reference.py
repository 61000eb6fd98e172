"""The reference tracker's folders (GAGAvatar_track: optim.pkl / smoothed.pkl + img_lmdb) in and out.

The folders here are written by the test itself, the way the reference writes
them (plain pickle.dump of numpy records, an LMDB of JPEGs keyed "{video}_{frame}"),
not with the project's own writer, so the reader is checked against the format.
"""
from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from gagavatar.data import Dataset, PairDataset
from gagavatar.data.reference import export_reference, import_reference, matte_from_black
from gagavatar.geometry import intrinsics, viewmat_to_reference

lmdb = pytest.importorskip("lmdb")

pytestmark = pytest.mark.filterwarnings("ignore:the ViT backbone has RANDOM weights")
SIZE = 128


@pytest.fixture(scope="module")
def head():
    from gagavatar.head import HeadModel

    return HeadModel.default()


def _view(yaw: float, pitch: float, distance: float = 10.0) -> np.ndarray:
    """OpenCV world-to-camera [4,4]: a camera on +z looking at the head, turned by yaw/pitch."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    turn = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    view = np.eye(4)
    view[:3, :3] = np.diag([1.0, -1.0, -1.0]) @ turn
    view[2, 3] = distance
    return view


def _frame_records(head, n: int, seed: int) -> list[dict]:
    """n reference records with the head moving: one shared shape, per-frame everything else."""
    rng = np.random.default_rng(seed)
    shape = (rng.standard_normal(300) * 0.6).astype(np.float32)
    out = []
    for i in range(n):
        view = _view(0.25 * np.sin(i / 2.0), 0.1 * np.cos(i / 3.0))
        out.append({
            "shapecode": shape.copy(),
            "expcode": (rng.standard_normal(100) * 0.5).astype(np.float32),
            "posecode": np.concatenate([np.zeros(3), [0.12 * abs(np.sin(i)), 0, 0]]).astype(np.float32),
            "eyecode": (rng.standard_normal(6) * 0.1).astype(np.float32),
            "transform_matrix": viewmat_to_reference(torch.from_numpy(view)[None])[0].float().numpy(),
            "bbox": np.array([0.2, 0.15, 0.8, 0.85], np.float32) + np.float32(0.01 * i),
        })
    return out


def _draw(head, record: dict) -> np.ndarray:
    """The record's head mesh, shaded, on black: a crop 'matted on black' [SIZE,SIZE,3]."""
    from gagavatar.geometry import reference_to_viewmat
    from gagavatar.tracking.overlay import draw_mesh

    t = lambda k: torch.from_numpy(record[k])[None]  # noqa: E731
    verts = head(t("shapecode"), t("expcode"), jaw_pose=t("posecode")[:, 3:], eye_pose=t("eyecode"))[0].double() * 5
    view = reference_to_viewmat(torch.from_numpy(record["transform_matrix"]).double()[None])[0]
    cam = (verts @ view[:3, :3].T + view[:3, 3]).numpy()
    K = intrinsics(12.0, SIZE, SIZE)[0].double().numpy()
    return draw_mesh(np.zeros((SIZE, SIZE, 3), np.uint8), cam, K, head.faces.numpy(), alpha=1.0)


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_reference_folder(folder, head, video="clip", n=12, lost=(5,), seed=0, pickle_name="optim.pkl",
                           records=None, protocol=4):
    """A GAGAvatar_track output folder; frames in ``lost`` have an image but no record
    (the tracker lost the face there). Returns (records by key, decoded images by key)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = records or _frame_records(head, n, seed)
    by_key, images = {}, {}
    env = lmdb.open(str(folder / "img_lmdb"), map_size=64 << 20)
    with env.begin(write=True) as txn:
        for i, record in enumerate(records):
            key = f"{video}_{i}"
            payload = _jpeg(_draw(head, record))
            txn.put(key.encode(), payload)
            images[key] = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
            if i not in lost:
                by_key[key] = record
    env.close()
    with open(folder / pickle_name, "wb") as f:
        pickle.dump(by_key, f, protocol=protocol)
    return by_key, images


@pytest.fixture(scope="module")
def reference(tmp_path_factory, head):
    folder = tmp_path_factory.mktemp("ref") / "clip"
    records, images = write_reference_folder(folder, head)
    return folder, records, images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gagavatar.model import create_model, save

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(create_model("tiny"), path)
    return path


def test_import_maps_every_field(reference, tmp_path):
    folder, records, images = reference
    infos = import_reference(folder, tmp_path / "ds")
    assert [i.id for i in infos] == ["clip"] and infos[0].n_frames == 12 and infos[0].head_model == "flame2020"
    video = Dataset(tmp_path / "ds").videos[0]
    p = video.params
    keys = [f"clip_{i}" for i in range(12)]  # numeric order: clip_10 after clip_9, not after clip_1
    assert p["valid"].tolist() == [k in records for k in keys]
    for i, key in enumerate(keys):
        r = records[key] if key in records else records[f"clip_{i - 1}"]  # a lost frame holds the one before
        np.testing.assert_array_equal(video.frames(i).shape[0].numpy(), r["shapecode"])
        np.testing.assert_array_equal(p["expression"][i], r["expcode"])
        np.testing.assert_array_equal(p["global_pose"][i], r["posecode"][:3])
        np.testing.assert_array_equal(p["jaw_pose"][i], r["posecode"][3:])
        np.testing.assert_array_equal(p["eye_pose"][i], r["eyecode"])
        np.testing.assert_array_equal(p["transform"][i], r["transform_matrix"])
        np.testing.assert_allclose(p["bbox"][i], r["bbox"])
        np.testing.assert_array_equal(video.frame(i), images[key])  # the crop, untouched
    assert p["shape"].ndim == 1  # one shared shape, as the reference
    np.testing.assert_allclose(p["K"][0], intrinsics(12.0, SIZE, SIZE)[0].numpy())
    # the matte is the drawn head's silhouette: every clearly lit pixel is inside it
    matte = video.matte(0) > 127
    lit = images["clip_0"].max(2) > 40
    assert matte[lit].all() and matte.mean() < lit.mean() + 0.05


def test_matte_fills_dark_holes_inside_the_head():
    image = np.zeros((32, 32, 3), np.uint8)
    image[8:24, 8:24] = 200
    image[14:18, 14:18] = 0  # a dark pupil inside the face
    matte = matte_from_black(image)
    assert matte[8:24, 8:24].min() == 255 and matte.sum() == 16 * 16 * 255


def test_smoothed_is_preferred_and_optim_can_be_chosen(tmp_path, head):
    records, _ = write_reference_folder(tmp_path / "r", head, n=4, lost=())
    smoothed = {k: dict(v, transform_matrix=v["transform_matrix"] + np.float32(0.5)) for k, v in records.items()}
    with open(tmp_path / "r" / "smoothed.pkl", "wb") as f:
        pickle.dump(smoothed, f)
    import_reference(tmp_path / "r", tmp_path / "auto")
    import_reference(tmp_path / "r", tmp_path / "optim", use="optim")
    auto, optim = (Dataset(tmp_path / n).videos[0].params["transform"] for n in ("auto", "optim"))
    np.testing.assert_array_equal(auto[2], smoothed["clip_2"]["transform_matrix"])
    np.testing.assert_array_equal(optim[2], records["clip_2"]["transform_matrix"])


def test_protocol_2_pickles_of_numpy_1_load(tmp_path, head):
    """Older pickles name numpy.core (numpy 1.x) and carry bytes through _codecs.encode."""
    records, _ = write_reference_folder(tmp_path / "r", head, n=2, lost=(), protocol=2)
    raw = (tmp_path / "r" / "optim.pkl").read_bytes()
    (tmp_path / "r" / "optim.pkl").write_bytes(raw.replace(b"numpy._core.", b"numpy.core."))
    import_reference(tmp_path / "r", tmp_path / "ds")
    np.testing.assert_array_equal(Dataset(tmp_path / "ds").videos[0].params["expression"][1],
                                  records["clip_1"]["expcode"])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, head):
    from typer.testing import CliRunner

    from gagavatar.cli import app
    from gagavatar.reenact import load_tracked

    marker = tmp_path / "pwned"
    write_reference_folder(tmp_path / "r", head, n=2, lost=())
    for payload in ({"clip_0": _RunsCode(marker)},
                    {"clip_0": {"expcode": np.array([_RunsCode(marker)], dtype=object)}}):
        with open(tmp_path / "r" / "optim.pkl", "wb") as f:
            pickle.dump(payload, f)
        with pytest.raises(ValueError, match="refused posix.system|refused os.system"):
            import_reference(tmp_path / "r", tmp_path / "ds")
        with pytest.raises(ValueError, match="refused"):
            load_tracked(tmp_path / "r", tmp_path / "work")
        result = CliRunner().invoke(app, ["import-reference", str(tmp_path / "r"), "--out", str(tmp_path / "cli")])
        assert result.exit_code == 1 and "refused" in result.output
    assert not marker.exists()


def test_incomplete_folders_are_named(tmp_path, head):
    records, _ = write_reference_folder(tmp_path / "r", head, n=3, lost=())
    records["clip_7"] = records["clip_0"]  # a record whose image is not in the LMDB
    with open(tmp_path / "r" / "optim.pkl", "wb") as f:
        pickle.dump(records, f)
    with pytest.raises(ValueError, match=r"no image for tracked frame\(s\) \['clip_7'\]"):
        import_reference(tmp_path / "r", tmp_path / "ds")
    with open(tmp_path / "r" / "optim.pkl", "wb") as f:
        pickle.dump({"clip_0": {"expcode": np.zeros(100, np.float32)}}, f)
    with pytest.raises(ValueError, match="lacks"):
        import_reference(tmp_path / "r", tmp_path / "ds")


def test_single_image_layout_keeps_the_crop_in_the_record(tmp_path, head):
    """The single-image tracker writes no LMDB: its record carries ``image`` [3,H,W] in [0,1]."""
    record = _frame_records(head, 1, seed=3)[0]
    crop = _draw(head, record)
    record["image"] = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
    (tmp_path / "photo").mkdir()
    with open(tmp_path / "photo" / "optim.pkl", "wb") as f:
        pickle.dump({"photo_0": record}, f)
    import_reference(tmp_path / "photo", tmp_path / "ds")
    video = Dataset(tmp_path / "ds").videos[0]
    assert video.n_frames == 1
    assert np.abs(video.frame(0).astype(int) - crop).max() <= 1


def test_dataset_json_gives_the_splits(tmp_path, head):
    write_reference_folder(tmp_path / "r", head, video="a", n=2, lost=())
    json.dump({"train": ["a_0", "a_1"], "val": [], "test": []}, open(tmp_path / "r" / "dataset.json", "w"))
    import_reference(tmp_path / "r", tmp_path / "ds")
    assert Dataset(tmp_path / "ds").videos[0].split == "train"


def test_round_trip_through_import_reference(reference, tmp_path):
    """reference -> (CLI import-reference) -> dataset -> export_reference -> reference -> import: the same."""
    from typer.testing import CliRunner

    from gagavatar.cli import app

    folder, records, _ = reference
    result = CliRunner().invoke(app, ["import-reference", str(folder), "--out", str(tmp_path / "d1")])
    assert result.exit_code == 0, result.output
    first = Dataset(tmp_path / "d1").videos[0]
    export_reference(first, tmp_path / "r2")
    # what the reference's loaders read: keys numbered over the tracked frames, JPEG in the LMDB
    again = pickle.load(open(tmp_path / "r2" / "optim.pkl", "rb"))
    assert sorted(again, key=lambda k: int(k.split("_")[-1])) == [f"clip_{k}" for k in range(11)]
    assert json.load(open(tmp_path / "r2" / "dataset.json"))["test"] == list(again)
    assert set(again["clip_0"]) == {"shapecode", "expcode", "posecode", "eyecode", "transform_matrix", "bbox"}

    result = CliRunner().invoke(app, ["import-reference", str(tmp_path / "r2"), "--out", str(tmp_path / "d2")])
    assert result.exit_code == 0, result.output
    second = Dataset(tmp_path / "d2").videos[0]
    valid = np.flatnonzero(first.params["valid"])
    assert second.n_frames == len(valid) and second.params["valid"].all()
    for name in ("shape", "expression", "global_pose", "jaw_pose", "eye_pose", "transform", "bbox"):
        a, b = first.params[name], second.params[name]
        np.testing.assert_array_equal(b, a if name == "shape" else a[valid], err_msg=name)
    for k, i in enumerate(valid):  # one more JPEG generation at quality 95
        assert np.abs(second.frame(k).astype(float) - first.frame(int(i))).mean() < 1.5


def test_pair_dataset_reads_an_imported_folder(reference, tmp_path, head):
    folder, records, _ = reference
    import_reference(folder, tmp_path / "ds")
    pairs = PairDataset(tmp_path / "ds", split="test")
    assert len(pairs) == len(records)  # one sample per valid target frame
    sample = pairs[3]
    key = f"clip_{sample['target_frame']}"
    np.testing.assert_array_equal(sample["target"].expression[0].numpy(), records[key]["expcode"])
    np.testing.assert_array_equal(sample["target"].camera.to_reference()[0].numpy(), records[key]["transform_matrix"])
    assert sample["source_frame"] == 0 and sample["target"].vertices(head).shape == (1, head.n_vertices, 3)


def test_a_reference_folder_drives_a_reenactment(reference, checkpoint, tmp_path, head):
    import imageio.v2 as iio

    from gagavatar import commands
    from gagavatar.reenact import Animator, drive, load_tracked

    folder, records, _ = reference
    driver = load_tracked(folder, tmp_path / "work")
    source = load_tracked(folder, tmp_path / "work2")
    driven, repeated = drive(source, driver)
    for i in range(12):  # the driver's own parameters, the lost frame repeating the one before
        np.testing.assert_array_equal(driven.expression[i].numpy(), records[f"clip_{i if i != 5 else 4}"]["expcode"])
    assert repeated.tolist() == [i == 5 for i in range(12)]

    summary = commands.reenact(folder, folder, tmp_path / "out.mp4", Animator.load(checkpoint))
    assert summary.n_frames == 12 and summary.n_repeated == 1
    assert sum(1 for _ in iio.get_reader(tmp_path / "out.mp4")) == 12
