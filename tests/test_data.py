"""The dataset format, the pair loader and the synthetic videos (gagavatar.data, gagavatar.synthetic.video)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from gagavatar.data import (Dataset, DatasetError, MissingFileError, PairDataset, VideoWriter, composite,
                            default_params, update_index, write_video)
from gagavatar.data.pairs import collate
from gagavatar.geometry import Camera, look_at, viewmat_to_reference
from gagavatar.head import HeadModel

SIZE = 32


def random_video(rng: np.random.Generator, n_frames: int, size: int = SIZE, n_shape: int = 10, n_expr: int = 6):
    """Random frames, mattes and a complete params dict with real cameras."""
    frames = rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8)
    mattes = rng.integers(0, 256, (n_frames, size, size), dtype=np.uint8)
    p = default_params(n_frames, size, size, n_shape, n_expr, n_landmarks=5)
    eye = torch.from_numpy(rng.normal(0, 1, (n_frames, 3)).astype(np.float32)) + torch.tensor([0, 0, 9.0])
    p["transform"] = viewmat_to_reference(look_at(eye)).numpy()
    p["shape"] = rng.normal(size=n_shape).astype(np.float32)
    for k in ("expression", "jaw_pose", "eye_pose", "bbox", "landmarks"):
        p[k] = rng.normal(size=p[k].shape).astype(np.float32)
    p["valid"] = np.ones(n_frames, bool)
    return frames, mattes, p


@pytest.fixture
def small_dataset(tmp_path):
    """6 videos of 4 identities: a, b train (2 + 1 videos), c val, d test (a png, a jpg, an mp4)."""
    rng = np.random.default_rng(0)
    written = {}
    for vid, ident, split, fmt in [("a0", "a", "train", "png"), ("a1", "a", "train", "png"),
                                   ("b0", "b", "train", "png"), ("c0", "c", "val", "png"),
                                   ("d0", "d", "test", "png"), ("d1", "d", "test", "jpg")]:
        video = random_video(rng, 5)
        if fmt == "jpg":  # JPEG is for photos: smooth pictures, not noise
            ramp = np.linspace(0, 255, SIZE)
            video[0][:] = (ramp[None, :, None, None] * rng.uniform(0.3, 1, (5, 1, 1, 3))).astype(np.uint8)
        write_video(tmp_path, vid, *video, identity=ident, split=split, frame_format=fmt)
        written[vid] = video
    update_index(tmp_path)
    return tmp_path, written


def test_round_trip(small_dataset):
    root, written = small_dataset
    ds = Dataset(root)
    assert [v.id for v in ds.videos] == sorted(written)
    for v in ds.videos:
        frames, mattes, params = written[v.id]
        for i in range(v.n_frames):
            if v.info.frames == "png":
                assert np.array_equal(v.frame(i), frames[i])
            else:  # JPEG is lossy; quality 95 stays close
                assert np.abs(v.frame(i).astype(float) - frames[i]).mean() < 2
            assert np.array_equal(v.matte(i), mattes[i])
        for k, a in params.items():
            assert np.array_equal(v.params[k], np.asarray(a)), k
        # the stored camera is the written one
        cam = Camera.from_reference(torch.from_numpy(v.params["transform"]), SIZE)
        cam0 = Camera.from_reference(torch.from_numpy(params["transform"]), SIZE)
        assert torch.allclose(cam.viewmat, cam0.viewmat)
        assert torch.allclose(cam.K, torch.from_numpy(v.params["K"]))
    assert ds.identities("train") == ["a", "b"] and ds.identities("test") == ["d"]


def test_mp4_frames(tmp_path):
    """mp4 frames decode to the written ones (lossy) and random access matches."""
    rng = np.random.default_rng(1)
    n = 6
    # smooth images compress well: per-frame colour ramps
    ramp = np.linspace(0, 1, SIZE)[None, :, None, None]
    frames = (255 * np.clip(ramp * rng.uniform(0.2, 1, (n, 1, 1, 3)) + 0.1 * np.arange(n)[:, None, None, None] / n,
                            0, 1)).astype(np.uint8).repeat(SIZE, 1).reshape(n, SIZE, SIZE, 3)
    mattes = np.full((n, SIZE, SIZE), 255, np.uint8)
    p = default_params(n, SIZE, SIZE, 4, 4)
    write_video(tmp_path, "m", frames, mattes, p, identity="m", split="train", frame_format="mp4")
    update_index(tmp_path)
    v = Dataset(tmp_path).videos[0]
    assert (tmp_path / "m" / "frames.mp4").is_file() and not (tmp_path / "m" / "frames").exists()
    decoded = [v.frame(i) for i in range(n)]
    for i in (4, 1, 5, 0):  # out of order
        assert np.array_equal(v.frame(i), decoded[i])
        assert np.abs(decoded[i].astype(float) - frames[i]).mean() < 6


def test_errors_name_the_file(small_dataset, tmp_path_factory):
    root, _ = small_dataset
    ds = Dataset(root)
    v = ds.video("a0")
    # missing frame
    (root / "a0" / "frames" / "000002.png").unlink()
    with pytest.raises(MissingFileError, match="a0/frames/000002.png"):
        v.frame(2)
    # truncated (corrupt) matte
    path = root / "a0" / "mattes" / "000001.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match="a0/mattes/000001.png"):
        v.matte(1)
    # corrupt params
    (root / "b0" / "params.npz").write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="b0/params.npz"):
        ds.video("b0").params
    # a mis-shaped array names the file and the array
    bad = dict(np.load(root / "c0" / "params.npz"))
    bad["K"] = bad["K"][:, :2]
    np.savez(root / "c0" / "params.npz", **bad)
    with pytest.raises(DatasetError, match=r"c0/params.npz.*'K'"):
        ds.video("c0").params
    # missing index, corrupt index
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(MissingFileError, match="index.json"):
        Dataset(empty)
    (empty / "index.json").write_text("{broken")
    with pytest.raises(DatasetError, match="index.json"):
        Dataset(empty)
    # an identity in two splits is refused
    meta = json.loads((root / "a1" / "video.json").read_text())
    meta["split"] = "val"
    (root / "a1" / "video.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="identity 'a'"):
        update_index(root)


def test_writer_checks_params(tmp_path):
    w = VideoWriter(tmp_path, "x", "x", "train", SIZE, SIZE, "synthetic-default")
    w.add(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((SIZE, SIZE), np.uint8))
    p = default_params(2, SIZE, SIZE, 3, 3)  # two frames of parameters for one image
    with pytest.raises(DatasetError, match="'expression'.*F = 1"):
        w.close(p)


def test_composite():
    img = torch.rand(2, 3, 4, 4)
    matte = torch.rand(2, 1, 4, 4)
    out = composite(img, matte, (0.2, 0.5, 1.0))
    for c, b in enumerate((0.2, 0.5, 1.0)):
        assert torch.allclose(out[:, c], img[:, c] * matte[:, 0] + b * (1 - matte[:, 0]))


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a).float() / 255
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def test_pairs_self_and_cross(small_dataset):
    root, written = small_dataset
    ds = PairDataset(root, "train", "self", background=(0.0, 1.0, 0.0))
    assert len(ds) == 15  # every frame of the three training videos is a target once
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["source_video"] == s["target_video"] and s["source_frame"] != s["target_frame"]
        frames, mattes, params = written[s["target_video"]]
        f = s["target_frame"]
        seen.add((s["target_video"], f))
        expected = composite(_to_tensor(frames[f]), _to_tensor(mattes[f]), (0.0, 1.0, 0.0))
        assert torch.equal(s["target_image"], expected)
        assert torch.equal(s["target"].camera.to_reference()[0], torch.from_numpy(params["transform"][f]))
        assert torch.equal(s["target"].camera.K[0], torch.from_numpy(params["K"][f]))
        assert torch.equal(s["target"].expression[0], torch.from_numpy(params["expression"][f]))
    assert len(seen) == 15
    cross = PairDataset(root, "train", "cross", size=16)
    identity = {v: v[0] for v in written}
    for i in range(len(cross)):
        s = cross[i]
        assert identity[s["source_video"]] != identity[s["target_video"]]
        src = written[s["source_video"]][2]
        drv = written[s["target_video"]][2]
        # the source's identity, the driver's expression and camera
        assert torch.equal(s["target"].shape[0], torch.from_numpy(src["shape"]))
        assert torch.equal(s["target"].jaw_pose[0], torch.from_numpy(drv["jaw_pose"][s["target_frame"]]))
        assert s["source_image"].shape == (3, 16, 16) and s["target_image"].shape == (3, 16, 16)
        assert torch.allclose(s["target"].camera.K[0, 0, 0], torch.tensor(drv["K"][0, 0, 0] * 16 / SIZE))
        assert (s["target"].camera.width, s["source"].camera.height) == (16, 16)
    with pytest.raises(ValueError, match="two identities"):
        PairDataset(root, "val", "cross")
    # evaluation splits use the first frame as the source, like the reference
    test = PairDataset(root, "test", "self")
    assert {test[i]["source_frame"] for i in range(len(test))} == {0}


def test_pairs_deterministic(small_dataset):
    root, _ = small_dataset
    a = PairDataset(root, "train", "cross", seed=3, length=12)
    b = PairDataset(root, "train", "cross", seed=3, length=12)
    c = PairDataset(root, "train", "cross", seed=4, length=12)
    pairs_a = [a.pair(i) for i in range(12)]
    assert pairs_a == [b.pair(i) for i in range(12)]
    assert pairs_a != [c.pair(i) for i in range(12)]
    for i in (0, 7):
        sa, sb = a[i], b[i]
        for k in sa:
            if k in ("source", "target"):
                assert torch.equal(sa[k].vertices(HeadModel.default()), sb[k].vertices(HeadModel.default()))
                assert torch.equal(sa[k].camera.viewmat, sb[k].camera.viewmat)
            else:
                assert torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k]
    a.set_epoch(1)
    assert [a.pair(i) for i in range(12)] != pairs_a


def test_dataloader_workers(small_dataset):
    root, _ = small_dataset
    ds = PairDataset(root, "train", "self", seed=1, length=8)
    serial = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate))
    parallel = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate))
    assert len(serial) == len(parallel) == 2
    for x, y in zip(serial, parallel):
        assert torch.equal(x["target_image"], y["target_image"])
        assert len(x["source"]) == 4 and torch.equal(x["source"].camera.viewmat, y["source"].camera.viewmat)
        assert torch.equal(x["target"].expression, y["target"].expression)
        assert x["source_video"] == y["source_video"]


# ---------------------------------------------------------------------------
# synthetic videos

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from gagavatar.head import HeadModel
    from gagavatar.synthetic.video import SynthConfig, generate

    head = HeadModel.default()
    root = tmp_path_factory.mktemp("synth")
    # plain heads (no hair volume, glasses or beard): the matte is the head model's silhouette
    config = SynthConfig(identities=4, videos_per_identity=1, frames=3, size=64, seed=5, splits=(0.5, 0.25, 0.25),
                         hair_styles=("bald", "buzz"), accessories=False)
    return generate(root, config, head=head, progress=False), head


def mesh_silhouette(head, params: dict, transform: np.ndarray, size: int, scale: float) -> np.ndarray:
    """Bool [size,size]: the head model's triangles drawn with PIL at the stored camera."""
    t = lambda k: torch.from_numpy(np.asarray(params[k]))[None]  # noqa: E731
    with torch.no_grad():
        verts = head(t("shape"), t("expression"), t("global_pose"), t("neck_pose"), t("jaw_pose"), t("eye_pose"),
                     t("translation")) * scale
    uv = Camera.from_reference(torch.from_numpy(transform), size).project(verts)[0].numpy() - 0.5
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    for tri in uv[head.faces.numpy()]:
        draw.polygon([tuple(p) for p in tri], fill=255)
    return np.asarray(mask) > 127


def test_synthetic_silhouette_matches_head_model(synthetic):
    """Re-rendering the head model with the stored parameters reproduces the matte."""
    ds, head = synthetic
    for v in ds.videos:
        for i in range(v.n_frames):
            frame = {k: v.params[k] if k == "shape" and v.params[k].ndim == 1 else v.params[k][i]
                     for k in ("shape", "expression", "global_pose", "neck_pose", "jaw_pose", "eye_pose", "translation")}
            matte = v.matte(i) > 127
            mesh = mesh_silhouette(head, frame, v.params["transform"][i], v.width, float(v.params["scale"]))
            covered = (mesh & matte).sum() / mesh.sum()
            iou = (mesh & matte).sum() / (mesh | matte).sum()
            assert covered > 0.97 and iou > 0.88, (v.id, i, covered, iou)
            # a camera off by a tenth of the frame does not fit: the check can fail
            wrong = np.roll(mesh, v.width // 10, axis=1)
            assert (wrong & matte).sum() / (wrong | matte).sum() < iou - 0.1


def test_synthetic_landmarks_boxes_framing(synthetic):
    ds, head = synthetic
    for v in ds.videos:
        p = v.params
        assert p.landmark_set == head.landmark_format and np.array_equal(p.landmark_ids, head.landmark_indices.numpy())
        t = lambda k: torch.from_numpy(p[k])  # noqa: E731
        with torch.no_grad():
            verts = head(t("shape")[None], t("expression"), jaw_pose=t("jaw_pose"), eye_pose=t("eye_pose"))
            lmk = Camera.from_reference(t("transform"), v.width).project(head.landmarks(verts) * float(p["scale"]))
        assert np.abs(lmk.numpy() - p["landmarks"]).max() < 1e-3
        assert np.allclose(p["global_pose"], 0) and np.allclose(p["focal"], 12.0)  # pose lives in the camera
        box = p["bbox"] * v.width
        inside = ((p["landmarks"] >= box[:, None, :2] - 1) & (p["landmarks"] <= box[:, None, 2:] + 1)).all(-1)
        assert inside.mean() > 0.98
        side = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) / v.width
        assert np.all(np.abs(side - 1 / 1.65) < 0.15), side  # the reference's 1.65x head-box crop
        assert np.array_equal(p["crop_box"][0], [0, 0, v.width, v.height]) and p["valid"].all()


def test_synthetic_splits_by_identity(synthetic):
    from gagavatar.synthetic.video import assign_splits

    ds, _ = synthetic
    by_split = {s: set(ds.identities(s)) for s in ("train", "val", "test")}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    for s in ("train", "val", "test"):
        assert (ds.root / f"contact_{s}.png").is_file()
    labels = assign_splits(100, (0.8, 0.1, 0.1), seed=0)
    assert [labels.count(s) for s in ("train", "val", "test")] == [80, 10, 10]
    assert labels == assign_splits(100, (0.8, 0.1, 0.1), seed=0) != assign_splits(100, (0.8, 0.1, 0.1), seed=1)


def test_synthetic_same_seed_same_data(tmp_path, synthetic):
    from gagavatar.synthetic.video import SynthConfig, generate

    _, head = synthetic
    config = SynthConfig(identities=2, videos_per_identity=1, frames=2, size=32, seed=11, n_gaussians=3000)
    a = generate(tmp_path / "a", config, head=head, progress=False)
    config.workers = 2  # the same data from two processes
    b = generate(tmp_path / "b", config, head=head, progress=False)
    config.seed, config.workers = 12, 1
    c = generate(tmp_path / "c", config, head=head, progress=False)
    for va, vb, vc in zip(a.videos, b.videos, c.videos):
        assert np.array_equal(va.frame(1), vb.frame(1)) and np.array_equal(va.matte(1), vb.matte(1))
        for k in va.params.arrays:
            assert np.array_equal(va.params[k], vb.params[k]), k
        assert not np.array_equal(va.frame(1), vc.frame(1))


def test_pairs_on_synthetic_with_vertices(synthetic):
    ds, head = synthetic
    pairs = PairDataset(ds.root, "train", "self", size=32)
    s = pairs[0]
    vertices = s["target"].vertices(head)
    assert vertices.shape == (1, head.n_vertices, 3)
    # world-space vertices seen by the target camera (at the output size) put the landmarks where they were stored
    uv = s["target"].camera.project(head.landmarks(vertices))[0]
    assert torch.allclose(uv, s["target_landmarks"], atol=1e-3)


def test_synthetic_pose_range(synthetic):
    """Head poses cover yaw +-30 and pitch +-15 degrees (SPEC: head pose lives in the camera)."""
    from gagavatar.synthetic.video import sample_motion

    _, head = synthetic
    rot = np.concatenate([sample_motion(head, np.random.default_rng([0, k]), 50, 25.0).head_rotation
                          for k in range(60)])
    yaw, pitch = np.degrees(rot[:, 0]), np.degrees(rot[:, 1])
    assert yaw.min() < -30 and yaw.max() > 30 and pitch.min() < -15 and pitch.max() > 15
    assert np.mean(np.abs(yaw) > 30) > 0.05  # not only a few extreme frames


def test_atomic_writes_keep_the_old_file_until_the_new_one_is_complete(tmp_path):
    import os

    from gagavatar.io import atomic_path

    path = tmp_path / "params.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            np.savez(tmp, a=np.ones(3))
            raise RuntimeError("killed mid-write")
    assert np.load(path)["a"].sum() == 0 and sorted(tmp_path.iterdir()) == [path]  # old file, no leftovers
    with atomic_path(path) as tmp:
        np.savez(tmp, a=np.ones(3))
    assert np.load(path)["a"].sum() == 3 and sorted(tmp_path.iterdir()) == [path]
    from safetensors.numpy import save_file

    model = tmp_path / "model.safetensors"
    with atomic_path(model) as tmp:
        save_file({"a": np.ones(3)}, str(tmp))  # safetensors creates its files 0600
    umask = os.umask(0)
    os.umask(umask)
    assert model.stat().st_mode & 0o777 == 0o666 & ~umask  # what any new file of the user's gets
