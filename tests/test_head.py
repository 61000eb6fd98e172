"""Head model layer: safe FLAME file reading, LBS forward, landmarks, the synthetic head."""
from __future__ import annotations

import copy
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.transform import Rotation

from gagavatar.head import HeadFileError, HeadModel, RefusedGlobalError, read_landmark_embedding

V_SMALL, N_FACES = 60, 100
KINTREE = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)


# --------------------------------------------------------------------------- fixtures: FLAME-layout files


def random_flame_arrays(seed=0, V=V_SMALL):
    rng = np.random.default_rng(seed)
    J_reg = np.zeros((5, V))
    for j in range(5):  # sparse rows summing to one, like FLAME's regressor
        idx = rng.choice(V, 8, replace=False)
        J_reg[j, idx] = rng.dirichlet(np.ones(8))
    return {
        "v_template": rng.normal(size=(V, 3)) * 0.1,
        "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-2,
        "posedirs": rng.normal(size=(V, 3, 36)) * 1e-2,
        "J_regressor": J_reg,
        "kintree_table": KINTREE.copy(),
        "weights": rng.dirichlet(np.ones(5) * 0.5, size=V),
        "f": rng.integers(0, V, size=(N_FACES, 3)).astype(np.uint32),
    }


class _FakeCh:
    """Pickles under the global name chumpy.ch.Ch, as FLAME's chumpy arrays do."""

    def __init__(self, x):
        self.x = x

    def __getstate__(self):  # chumpy keeps more bookkeeping next to the array
        return {"x": self.x, "_dirty_vars": set(), "label": None, "_itr": 3, "dterms": ("x",)}


class _FakeSelect:
    """A lazy chumpy expression (chumpy.reordering.Select): no stored array."""

    def __getstate__(self):
        return {"a": _FakeCh(np.zeros(3)), "idxs": np.arange(2), "dterms": ["a"]}


def write_flame_pickle(path, arrays, protocol=2):
    """FLAME-style pickle: shapedirs as a chumpy Ch, J_regressor as scipy csc (fake chumpy, removed after)."""
    chumpy, chumpy_ch, reordering = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    _FakeSelect.__module__, _FakeSelect.__qualname__ = "chumpy.reordering", "Select"
    chumpy_ch.Ch, reordering.Select = _FakeCh, _FakeSelect
    chumpy.ch, chumpy.reordering = chumpy_ch, reordering
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch, "chumpy.reordering": reordering})
    try:
        data = dict(arrays)
        data["shapedirs"] = _FakeCh(arrays["shapedirs"])
        data["J"] = _FakeSelect()  # an extra key FLAME's model does not need
        data["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
        data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    finally:
        for name in ("chumpy", "chumpy.ch", "chumpy.reordering"):
            del sys.modules[name]
    assert b"chumpy.ch" in path.read_bytes()


@pytest.fixture
def flame_pkl(tmp_path):
    arrays = random_flame_arrays()
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, arrays)
    return path, arrays


@pytest.fixture(scope="module")
def default_head():
    return HeadModel.default()


# --------------------------------------------------------------------------- an independent float64 LBS


def reference_lbs(a, shape, expr, pose, translation=None):
    """FLAME written out plainly, one vertex and one joint at a time (numpy float64, scipy rotations).

    pose [5,3] axis-angle: global, neck, jaw, left eye, right eye.
    """
    S, E = len(shape), len(expr)
    v = a["v_template"] + a["shapedirs"][:, :, :S] @ shape + a["shapedirs"][:, :, 300:300 + E] @ expr
    J = a["J_regressor"] @ v
    Rs = [Rotation.from_rotvec(p).as_matrix() for p in pose]
    feature = np.concatenate([(R - np.eye(3)).ravel() for R in Rs[1:]])
    v = v + a["posedirs"] @ feature
    parents = [-1, 0, 1, 1, 1]
    G = []
    for j in range(5):  # world transform of each joint's frame
        local = np.eye(4)
        local[:3, :3] = Rs[j]
        local[:3, 3] = J[j] - (J[parents[j]] if j else 0)
        G.append(local if j == 0 else G[parents[j]] @ local)
    out = np.zeros_like(v)
    for i in range(len(v)):
        for j in range(5):  # a vertex moves with each joint, relative to that joint's rest position
            p = G[j] @ np.append(v[i] - J[j], 1.0)
            out[i] += a["weights"][i, j] * p[:3]
    if translation is not None:
        out += translation
    return out


def random_pose(rng, B):
    return {k: torch.tensor(rng.normal(size=(B, n)) * 0.3) for k, n in
            (("global_pose", 3), ("neck_pose", 3), ("jaw_pose", 3), ("eye_pose", 6))}


# --------------------------------------------------------------------------- file reading


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_pickle_loads_without_chumpy(tmp_path, protocol):
    arrays = random_flame_arrays(1)
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, arrays, protocol)
    assert "chumpy" not in sys.modules
    model = HeadModel.load(path)
    assert "chumpy" not in sys.modules
    np.testing.assert_allclose(model.v_template.numpy(), arrays["v_template"], rtol=1e-6)
    np.testing.assert_allclose(model.shapedirs.numpy(), arrays["shapedirs"][:, :, :300], rtol=1e-6)
    np.testing.assert_allclose(model.exprdirs.numpy(), arrays["shapedirs"][:, :, 300:], rtol=1e-6)
    np.testing.assert_allclose(model.J_regressor.numpy(), arrays["J_regressor"], rtol=1e-6)
    assert model.parents.tolist() == [-1, 0, 1, 1, 1]
    assert model.faces.dtype == torch.long and model.version == "2020"


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _RunsCode()}, protocol=2))
    with pytest.raises(RefusedGlobalError, match="system"):
        HeadModel.load(path)
    path.write_bytes(pickle.dumps({"x": eval}, protocol=2))  # any other global too
    with pytest.raises(RefusedGlobalError, match="eval"):
        HeadModel.load(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_missing_truncated_and_wrong_files(tmp_path, flame_pkl):
    path, _ = flame_pkl
    with pytest.raises(FileNotFoundError, match="flame.is.tue.mpg.de"):
        HeadModel.load(tmp_path / "nope.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(HeadFileError, match="truncated"):
        HeadModel.load(truncated)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"v_template": np.zeros((4, 3)), "weights": np.zeros((4, 5))}))
    with pytest.raises(HeadFileError, match="missing keys.*shapedirs"):
        HeadModel.load(wrong)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HeadFileError, match="truncated or corrupt"):
        HeadModel.load(bad_npz)
    arrays = random_flame_arrays()
    arrays["posedirs"] = arrays["posedirs"][:, :, :30]
    np.savez(tmp_path / "mismatch.npz", **arrays)
    with pytest.raises(HeadFileError, match="joint counts"):
        HeadModel.load(tmp_path / "mismatch.npz")


def test_npz_and_reference_pt_layouts_load(tmp_path, flame_pkl):
    path, arrays = flame_pkl
    from_pkl = HeadModel.load(path).double()
    np.savez(tmp_path / "flame.npz", **arrays)
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f" else np.int64))
               for k, v in arrays.items()}
    lmk = {"full_lmk_faces_idx": torch.arange(68)[None] % N_FACES,
           "full_lmk_bary_coords": torch.full((1, 68, 3), 1 / 3)}
    torch.save({"flame_model": tensors, "lmk_embeddings": lmk}, tmp_path / "FLAME_with_eye.pt")
    rng = np.random.default_rng(2)
    shape, expr = torch.tensor(rng.normal(size=(2, 300))), torch.tensor(rng.normal(size=(2, 100)))
    pose = random_pose(rng, 2)
    expected = from_pkl(shape, expr, **pose)
    for name in ("flame.npz", "FLAME_with_eye.pt"):
        model = HeadModel.load(tmp_path / name).double()
        torch.testing.assert_close(model(shape, expr, **pose), expected, rtol=1e-5, atol=1e-6)
    pt = HeadModel.load(tmp_path / "FLAME_with_eye.pt")
    assert pt.landmark_format == "ibug68" and pt.n_landmarks == 68


def test_flame_2023_warns(tmp_path):
    write_flame_pickle(tmp_path / "flame2023.pkl", random_flame_arrays())
    with pytest.warns(UserWarning, match="FLAME 2020"):
        HeadModel.load(tmp_path / "flame2023.pkl")


# --------------------------------------------------------------------------- forward


def test_lbs_matches_independent_float64_reference(flame_pkl):
    path, arrays = flame_pkl
    # the model keeps float32 buffers: give the reference the same (rounded) numbers
    a = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in arrays.items()}
    model = HeadModel.load(path, n_shape=300, n_expression=100).double()
    rng = np.random.default_rng(3)
    B = 3
    shape, expr = rng.normal(size=(B, 120)), rng.normal(size=(B, 100))  # 120 < 300 shape columns: rest zero
    pose = random_pose(rng, B)
    transl = rng.normal(size=(B, 3)) * 0.1
    got = model(torch.tensor(shape), torch.tensor(expr), translation=torch.tensor(transl), **pose).numpy()
    for b in range(B):
        full_pose = np.concatenate([pose[k][b].numpy() for k in ("global_pose", "neck_pose", "jaw_pose", "eye_pose")])
        want = reference_lbs(a, shape[b], expr[b], full_pose.reshape(5, 3), translation=transl[b])
        np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-10)


def test_float32_and_float64_agree(flame_pkl):
    path, _ = flame_pkl
    m32 = HeadModel.load(path)
    m64 = HeadModel.load(path).double()
    rng = np.random.default_rng(4)
    shape, expr = torch.tensor(rng.normal(size=(4, 300))), torch.tensor(rng.normal(size=(4, 100)))
    pose = random_pose(rng, 4)
    v64 = m64(shape, expr, **pose)
    v32 = m32(shape.float(), expr.float(), **{k: p.float() for k, p in pose.items()})
    assert v32.dtype == torch.float32 and v64.dtype == torch.float64
    torch.testing.assert_close(v32.double(), v64, rtol=0, atol=1e-5)


def test_zero_parameters_give_the_template(flame_pkl, default_head):
    path, arrays = flame_pkl
    for model in (HeadModel.load(path), default_head):
        v = model(torch.zeros(2, model.n_shape), torch.zeros(2, model.n_expression))
        torch.testing.assert_close(v, model.v_template.expand(2, -1, -1), rtol=0, atol=1e-7)


def test_pose_correctives_vanish_at_rest(flame_pkl):
    path, arrays = flame_pkl
    model = HeadModel.load(path).double()
    rng = np.random.default_rng(5)
    shape, expr = torch.tensor(rng.normal(size=(1, 300))), torch.tensor(rng.normal(size=(1, 100)))
    rest = model(shape, expr)
    model.posedirs.mul_(1000.0)  # correctives scaled up: no effect at rest, an effect once posed
    torch.testing.assert_close(model(shape, expr), rest, rtol=0, atol=1e-12)
    jaw = torch.tensor([[0.2, 0.0, 0.0]], dtype=torch.float64)
    assert (model(shape, expr, jaw_pose=jaw) - rest).abs().max() > 1e-3


def test_global_rotation_is_rigid_about_the_root(default_head):
    model = copy.deepcopy(default_head).double()
    rng = np.random.default_rng(6)
    shape = torch.tensor(rng.normal(size=(1, model.n_shape)))
    rotvec = torch.tensor([[0.3, -0.5, 0.2]], dtype=torch.float64)
    rest = model(shape)[0]
    moved = model(shape, global_pose=rotvec)[0]
    R = torch.tensor(Rotation.from_rotvec(rotvec[0].numpy()).as_matrix())
    root = (model.J_regressor @ rest)[0]
    # exact up to the float32-stored skinning weights (rows sum to 1 within ~1e-7)
    torch.testing.assert_close(moved, (rest - root) @ R.T + root, rtol=0, atol=1e-8)


def test_jaw_moves_only_jaw_weighted_vertices(default_head):
    model = default_head
    jaw = torch.tensor([[0.3, 0.0, 0.0]])
    rest = model(torch.zeros(1, model.n_shape))[0]
    opened = model(torch.zeros(1, model.n_shape), jaw_pose=jaw)[0]
    moved = (opened - rest).norm(dim=-1)
    w = model.lbs_weights[:, 2]
    assert moved[w == 0].max() < 1e-7
    assert moved[w > 0.5].min() > 1e-3
    # the chin goes down and back when the jaw opens (FLAME's positive x rotation)
    chin = model.landmark_indices.tolist().index(152)
    d = model.landmarks(opened[None])[0, chin] - model.landmarks(rest[None])[0, chin]
    assert d[1] < -0.01 and d[2] < 0


def test_gradients_match_finite_differences(flame_pkl):
    path, _ = flame_pkl
    model = HeadModel.load(path, n_shape=4, n_expression=3).double()
    rng = np.random.default_rng(8)
    shape = torch.tensor(rng.normal(size=(1, 4)), requires_grad=True)
    expr = torch.tensor(rng.normal(size=(1, 3)), requires_grad=True)
    for jaw in (torch.zeros(1, 3), torch.tensor(rng.normal(size=(1, 3)) * 0.3)):  # at rest: the series branch
        jaw = jaw.double().requires_grad_(True)
        eyes = torch.tensor(rng.normal(size=(1, 6)) * 0.2, requires_grad=True)
        probe = torch.tensor(rng.normal(size=(1, V_SMALL, 3)))  # a random projection: one scalar output

        def f(s, e, j, y):
            return (model(s, e, jaw_pose=j, eye_pose=y) * probe).sum()

        assert torch.autograd.gradcheck(f, (shape, expr, jaw, eyes))


def test_batch_broadcast_and_input_errors(default_head):
    model = default_head
    shape = torch.randn(1, 50)  # fewer columns: the rest are zero
    expr = torch.randn(4, 20)
    v = model(shape, expr)
    assert v.shape == (4, model.n_vertices, 3)
    torch.testing.assert_close(v[1], model(shape, expr[1:2])[0])
    with pytest.raises(ValueError, match="eye_pose"):
        model(shape, expr, eye_pose=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="batch sizes"):
        model(torch.zeros(2, 10), torch.zeros(3, 10))


# --------------------------------------------------------------------------- landmarks


def test_landmark_embeddings_of_each_format(tmp_path, flame_pkl):
    path, arrays = flame_pkl
    rng = np.random.default_rng(7)
    faces = rng.integers(0, N_FACES, 105)
    bary = rng.dirichlet(np.ones(3), size=105)
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=faces, lmk_b_coords=bary,
             landmark_indices=rng.choice(478, 105, replace=False))
    deca = {"full_lmk_faces_idx": faces[None, :68], "full_lmk_bary_coords": bary[None, :68],
            "static_lmk_faces_idx": faces[:51], "static_lmk_bary_coords": bary[:51]}
    np.save(tmp_path / "landmark_embedding.npy", deca, allow_pickle=True)
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": faces[:51], "lmk_b_coords": bary[:51]}, f, protocol=2)
    expected = {"mediapipe_landmark_embedding.npz": ("mediapipe", 105), "landmark_embedding.npy": ("ibug68", 68),
                "flame_static_embedding.pkl": ("ibug68", 51)}
    for name, (fmt, n) in expected.items():
        emb = read_landmark_embedding(tmp_path / name)
        assert emb["format"] == fmt and len(emb["face_idx"]) == n
        model = HeadModel.load(path, landmark_embedding=tmp_path / name).double()
        verts = model(torch.randn(2, 300, dtype=torch.float64), torch.zeros(2, 100, dtype=torch.float64))
        lm = model.landmarks(verts).numpy()
        tri = verts.numpy()[:, arrays["f"][emb["face_idx"]].astype(np.int64)]  # [B,L,3,3]
        bary = emb["bary"].astype(np.float32).astype(np.float64)  # stored like the model: float32
        np.testing.assert_allclose(lm, np.einsum("blkc,lk->blc", tri, bary), atol=1e-12)
    assert read_landmark_embedding(tmp_path / "flame_static_embedding.pkl")["indices"].tolist() == list(range(17, 68))
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([_RunsCode()], dtype=object), allow_pickle=True)
    with pytest.raises(RefusedGlobalError):
        read_landmark_embedding(evil)


def test_save_and_reload_round_trip(tmp_path, default_head):
    default_head.save(tmp_path / "head.npz")
    again = HeadModel.load(tmp_path / "head.npz")
    g = torch.Generator().manual_seed(0)
    shape, expr = torch.randn(2, 300, generator=g), torch.randn(2, 100, generator=g)
    jaw = torch.tensor([[0.2, 0.0, 0.0]]).expand(2, 3)
    torch.testing.assert_close(again(shape, expr, jaw_pose=jaw), default_head(shape, expr, jaw_pose=jaw))
    assert again.landmark_indices.tolist() == default_head.landmark_indices.tolist()


# --------------------------------------------------------------------------- the synthetic head


def test_synthetic_head_layout_and_semantics():
    from gagavatar.synthetic.basis_names import EXPRESSIONS
    from gagavatar.tools.build_head import make_synthetic_head, synthetic_head_model

    a = make_synthetic_head(seed=3, n_vertices=1500, n_shape=30, n_expression=25)
    V = 1500
    assert a["v_template"].shape == (V, 3) and a["shapedirs"].shape == (V, 3, 55)
    assert a["posedirs"].shape == (V, 3, 36) and a["J_regressor"].shape == (5, V) and a["weights"].shape == (V, 5)
    np.testing.assert_allclose(a["weights"].sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(a["J_regressor"].sum(1), 1.0, atol=1e-9)
    assert a["f"].min() >= 0 and a["f"].max() < V and len(np.unique(a["f"])) == V  # every vertex used
    v = a["v_template"]
    span = v.max(0) - v.min(0)
    assert 0.14 < span[0] < 0.2 and 0.25 < span[1] < 0.35  # metres, FLAME-like
    mirrored = v * np.array([-1.0, 1, 1])  # left-right symmetric template
    from scipy.spatial import cKDTree

    assert cKDTree(v).query(mirrored)[0].max() < 1e-9
    # eyes: separate spheres on the eye joints; left eye (joint 3) at +x
    J = a["J_regressor"] @ v
    assert J[3, 0] > 0.02 and J[4, 0] < -0.02 and abs(J[2, 0]) < 1e-9
    model = synthetic_head_model(seed=3, n_vertices=1500, n_shape=30, n_expression=25).double()
    assert model.landmark_format == "mediapipe" and model.n_landmarks == 478
    z = torch.zeros(1, 30, dtype=torch.float64)
    lm = lambda verts, i: model.landmarks(verts)[0, model.landmark_indices.tolist().index(i)]  # noqa: E731
    rest = model(z)
    # eyes turn: the iris centre moves, the eyeball's centre (its joint) does not
    eyes = torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.4, 0.0]], dtype=torch.float64)
    turned = model(z, eye_pose=eyes)
    assert lm(turned, 473)[0] - lm(rest, 473)[0] > 0.003  # the left iris looks towards +x
    eye_l = model.lbs_weights[:, 3] > 0
    torch.testing.assert_close(turned[0, eye_l].mean(0), rest[0, eye_l].mean(0), rtol=0, atol=2e-4)
    # named expressions do what they say
    e = torch.zeros(1, 25, dtype=torch.float64)

    def expr(name, value=1.0):
        x = e.clone()
        x[0, EXPRESSIONS.index(name)] = value
        return model(z, x)

    opened = expr("mouth_open")
    assert (lm(opened, 13) - lm(opened, 14))[1] > 0.005 > (lm(rest, 13) - lm(rest, 14))[1]
    smile = expr("smile")
    assert lm(smile, 291)[1] - lm(rest, 291)[1] > 0.002 and lm(smile, 61)[1] - lm(rest, 61)[1] > 0.002
    brows = expr("brow_raise")
    assert lm(brows, 105)[1] - lm(rest, 105)[1] > 0.002
    blink = expr("blink_left")
    gap = lambda verts: (lm(verts, 386) - lm(verts, 374))[1]  # noqa: E731  left upper - lower lid
    assert gap(blink) < 0.5 * gap(rest)
    assert abs((lm(blink, 159) - lm(rest, 159))[1]) < 1e-6  # the right eye stays open


def test_rendered_contact_sheet_looks_like_a_head(tmp_path, default_head):
    from PIL import Image

    from gagavatar.head import DEFAULT_HEAD_PATH
    from gagavatar.tools.head_preview import (CONTACT_EXPRESSIONS, contact_expression_params, contact_sheet,
                                              load_parts, part_colors, render_head, visible_faces)

    size, yaws = 96, (-60, -30, 0, 30, 60)
    parts = load_parts(DEFAULT_HEAD_PATH)
    colors = part_colors(parts, default_head.n_vertices)
    sheet = contact_sheet(default_head, tmp_path / "synthetic_head.png", yaws, size=size, parts=parts)
    assert sheet.shape == (5 * size, 5 * size, 3)
    assert Image.open(tmp_path / "synthetic_head.png").size == (5 * size, 5 * size)
    tiles = sheet.reshape(5, size, 5, size, 3).transpose(0, 2, 1, 3, 4).astype(np.float64) / 255
    for tile in tiles.reshape(-1, size, size, 3):
        covered = tile.max(-1) > 0.02
        assert 0.12 < covered.mean() < 0.6  # a head, not an empty or a full frame
    # frontal, neutral: a head-like silhouette, left-right symmetric
    front = tiles[0, 2]
    mask = front.max(-1) > 0.02
    iou = (mask & mask[:, ::-1]).sum() / (mask | mask[:, ::-1]).sum()
    assert iou > 0.95
    rows, cols = np.nonzero(mask)
    assert 1.2 < (np.ptp(rows) + 1) / (np.ptp(cols) + 1) < 2.8  # taller than wide: a head on a neck (~2.0)
    # the jaw opens the mouth: the mouth region changes, the forehead does not
    rest, opened = (torch.cat(contact_expression_params(default_head, w)[1:2]) for w in ("neutral", "jaw open"))
    with torch.no_grad():
        verts = default_head(torch.zeros(2, default_head.n_shape), jaw_pose=torch.cat([rest, opened]))
        img, _ = render_head(default_head, verts, 0.0, size, colors, faces=visible_faces(default_head.faces, parts))
        from gagavatar.geometry import Camera

        a = 0.0
        target = torch.tensor([[0.0, -0.02, 0.0]])
        cam = Camera.look_at(target + torch.tensor([[math.sin(a), 0.05, math.cos(a)]]), target, size=size, focal=5.2)
        lmk = default_head.landmarks(verts[:1])
        uv = cam.project(lmk)[0]
    idx = default_head.landmark_indices.tolist()
    diff = (img[1] - img[0]).abs().mean(0)

    def patch(i, r=4):
        u, v = uv[idx.index(i)].round().long().tolist()
        return diff[v - r:v + r + 1, u - r:u + r + 1].mean().item()

    assert patch(14) > 0.07  # lower inner lip: the open mouth (measured ~0.14)
    assert patch(151) < 0.01  # forehead
    assert CONTACT_EXPRESSIONS[1] == "jaw open"
