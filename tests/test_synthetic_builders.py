"""The synthetic builders reproduce what they made before they were split into steps.

``tests/data/synthetic_fingerprints.json`` was recorded from the code before the
split (commit bdd538d: ``gagavatar.synthetic.head.make_synthetic_head`` and
``gagavatar.synthetic.appearance.build_gaussian_head`` as single functions). Do not
regenerate it unless a change of the synthetic data is intended.

Why fingerprints with a tolerance and not exact hashes of the float arrays: the
bits depend on the CPU's vector units. On the machine that recorded them, the
float arrays come out bit-identical run after run and with 1 or 2 threads, but
numpy without AVX-512 (``NPY_DISABLE_CPU_FEATURES=X86_V4,...``) changes
``shapedirs`` by ~1e-18 and torch's ``ATEN_CPU_CAPABILITY=default`` changes
quaternions and landmarks by an ulp. So integer, boolean and string arrays are
compared exactly (sha256) and float arrays by their sum, their sum of absolute
values and one fixed random projection, to 1e-10 (float64) or 1e-6 (float32) of
the sum of absolute values: far above rounding, far below any change of a
constant or of the order of the random draws.
"""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

FINGERPRINTS = Path(__file__).resolve().parent / "data" / "synthetic_fingerprints.json"
RTOL = {"f8": 1e-10, "f4": 1e-6}
FRAME_RTOL = 1e-4  # uint8 frames: a few pixels may round the other way on another CPU

# every branch of build_gaussian_head: each hair style with glasses (tinted), beard, shirt
# and freckles forced on, and one plain head
GAUSSIAN_LOOKS = [(style, True) for style in ("short", "long", "curly", "bun", "cap", "bald", "buzz")] + [("short", False)]
SMALL_HEADS = {"seed3_v1500": (3, 1500, 30, 25), "seed5_v1201_neck_cap": (5, 1201, 16, 18)}


def fingerprint(a) -> dict:
    """Shape, dtype and either a sha256 (exact kinds) or sums (floats) of an array."""
    a = np.ascontiguousarray(np.asarray(a))
    out = {"shape": list(a.shape), "dtype": a.dtype.str.lstrip("<>|=")}
    if a.dtype.kind != "f":
        out["sha256"] = hashlib.sha256(a.tobytes()).hexdigest()
        return out
    x = a.astype(np.float64).ravel()
    w = np.random.default_rng(0).random(x.size) - 0.5  # uniform draws: the same bits everywhere
    out.update(sum=float(x.sum()), abs_sum=float(np.abs(x).sum()), projection=float((x * w).sum()))
    return out


def fingerprints(arrays: dict, prefix: str = "") -> dict:
    """Fingerprints of a (nested) dict of arrays, keys joined with dots."""
    out = {}
    for k, v in arrays.items():
        if isinstance(v, dict):
            out.update(fingerprints(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = fingerprint(v)
    return out


def assert_same(got: dict, want: dict, rtol: float | None = None) -> None:
    """Every entry of ``want`` in ``got``, exact kinds exactly, floats within tolerance."""
    assert sorted(got) == sorted(want), set(got) ^ set(want)
    for k, w in want.items():
        g = got[k]
        assert (g["shape"], g["dtype"]) == (w["shape"], w["dtype"]), (k, g, w)
        if "sha256" in w:
            assert g["sha256"] == w["sha256"], f"{k} changed"
            continue
        tol = (rtol or RTOL[w["dtype"]]) * max(w["abs_sum"], 1e-30)
        for s in ("sum", "abs_sum", "projection"):
            assert abs(g[s] - w[s]) <= tol, f"{k}: {s} {g[s]!r} != {w[s]!r} (tolerance {tol:.3g})"


def gaussian_head_arrays(head, style: str, accessories: bool, case: int) -> dict:
    """The arrays of one ``build_gaussian_head`` result and the generator's state after it."""
    from gagavatar.synthetic.appearance import Appearance, build_gaussian_head
    from gagavatar.synthetic.video import sample_shape

    rng = np.random.default_rng([42, case])
    shape = sample_shape(head, rng)
    look = Appearance.sample(rng, (style,))
    if accessories:
        look.glasses, look.lens_tint, look.beard = np.array([0.1, 0.2, 0.3], np.float32), 0.7, 0.8
        look.shirt, look.freckles = np.array([0.5, 0.5, 0.2], np.float32), 0.6
    else:
        look.glasses, look.lens_tint, look.beard, look.shirt, look.freckles = None, 0.0, 0.0, None, 0.0
    gh = build_gaussian_head(head, shape, look, rng, 3000)
    fields = ("anchor_idx", "anchor_w", "normal_offset", "offset", "quats", "scales", "opacities", "albedo", "lit",
              "in_head_box", "fixed_normal", "cullable", "face", "rest_area")
    arrays = {f: getattr(gh, f).numpy() for f in fields}
    q = arrays["quats"]  # q and -q are one rotation: recorded with w >= 0, as gagavatar.geometry returns them
    arrays["quats"] = np.where(q[:, :1] < 0, -q, q)
    arrays["parts"] = np.array([f"{name}:{s.start}:{s.stop}" for name, s in gh.parts.items()])
    arrays["rng_after"] = np.array(rng.integers(2**62))  # the build drew exactly as many numbers as before
    return arrays


def video_arrays(root) -> dict:
    """Frames, mattes and params of a small synthetic dataset, by video."""
    from gagavatar.data.format import Dataset

    out = {}
    for v in Dataset(root).videos:
        out[v.id] = {"frames": np.stack([v.frame(i) for i in range(v.n_frames)]).astype(np.float32),
                     "mattes": np.stack([v.matte(i) for i in range(v.n_frames)]).astype(np.float32),
                     "params": dict(v.params.arrays)}
    return out


def record(tmp) -> dict:
    """All fingerprints this file checks (run by hand to record them; see the module docstring)."""
    from gagavatar.head import HeadModel
    from gagavatar.synthetic.video import SynthConfig, generate

    try:
        from gagavatar.tools.build_head import make_synthetic_head
    except ImportError:  # the code before the split
        from gagavatar.synthetic.head import make_synthetic_head
    head = HeadModel.default()
    data = {"heads": {name: fingerprints(make_synthetic_head(*args)) for name, args in SMALL_HEADS.items()},
            "gaussian_heads": {f"{style}{'+' if acc else ''}": fingerprints(gaussian_head_arrays(head, style, acc, i))
                               for i, (style, acc) in enumerate(GAUSSIAN_LOOKS)}}
    generate(tmp, SynthConfig(identities=2, videos_per_identity=1, frames=3, size=40, seed=9, n_gaussians=3000),
             head=head, progress=False)
    data["videos"] = fingerprints(video_arrays(tmp))
    return data


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FINGERPRINTS.read_text())


@pytest.fixture(scope="module")
def default_head():
    from gagavatar.head import HeadModel

    return HeadModel.default()


@pytest.mark.parametrize("name", sorted(SMALL_HEADS))
def test_synthetic_head_builder_reproduces_recorded_heads(recorded, name):
    from gagavatar.tools.build_head import make_synthetic_head

    assert_same(fingerprints(make_synthetic_head(*SMALL_HEADS[name])), recorded["heads"][name])


def test_a_changed_head_fails_the_fingerprint(recorded):
    """The comparison can fail: one shape coefficient field moved by 1 micrometre."""
    from gagavatar.tools.build_head import make_synthetic_head

    arrays = make_synthetic_head(*SMALL_HEADS["seed3_v1500"])
    arrays["shapedirs"][100, 1, 20] += 1e-6
    with pytest.raises(AssertionError, match="shapedirs"):
        assert_same(fingerprints(arrays), recorded["heads"]["seed3_v1500"])


def test_gaussian_head_builder_reproduces_recorded_heads(recorded, default_head):
    for i, (style, acc) in enumerate(GAUSSIAN_LOOKS):
        name = f"{style}{'+' if acc else ''}"
        assert_same(fingerprints(gaussian_head_arrays(default_head, style, acc, i)), recorded["gaussian_heads"][name])


def test_synthetic_videos_reproduce_recorded_clips(recorded, tmp_path, default_head):
    from gagavatar.synthetic.video import SynthConfig, generate

    generate(tmp_path, SynthConfig(identities=2, videos_per_identity=1, frames=3, size=40, seed=9, n_gaussians=3000),
             head=default_head, progress=False)
    got, want = fingerprints(video_arrays(tmp_path)), recorded["videos"]
    for kind in ("frames", "mattes"):
        keys = [k for k in want if k.endswith(f".{kind}")]
        assert_same({k: got[k] for k in keys}, {k: want[k] for k in keys}, rtol=FRAME_RTOL)
    keys = [k for k in want if ".params." in k]
    assert_same({k: got[k] for k in keys}, {k: want[k] for k in keys})
    assert sorted(got) == sorted(want)


def test_runtime_never_imports_the_build_tools():
    """``gagavatar.tools`` is build-time only: no module outside it imports it."""
    package = Path(__file__).resolve().parents[1] / "gagavatar"
    offenders = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "tools":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(package)}: {n}" for n in names if n.startswith("gagavatar.tools")]
    assert not offenders, offenders


def test_demo_clips_are_a_source_frame_and_a_driver_video(tmp_path, default_head):
    """``python -m gagavatar.tools.demo_clips OUT``: the first frame of one synthetic person
    and the whole video of another, exactly as ``generate`` drew them."""
    from gagavatar.data.format import Dataset
    from gagavatar.synthetic.video import SynthConfig, generate
    from gagavatar.tools.demo_clips import main

    main([str(tmp_path / "clips"), "--seed", "3", "--frames", "3", "--size", "32"])
    clips = Dataset(tmp_path / "clips")
    made = generate(tmp_path / "made", SynthConfig(identities=2, videos_per_identity=1, frames=3, size=32, seed=3,
                                                   splits=(0.0, 0.0, 1.0)), head=default_head, progress=False)
    a, b = made.videos
    source, driver = clips.video("source"), clips.video("driver")
    assert (source.n_frames, driver.n_frames) == (1, 3) and source.identity != driver.identity
    assert {source.split, driver.split} == {"test"} and source.info.source == "synthetic seed 3"
    assert np.array_equal(source.frame(0), a.frame(0)) and np.array_equal(source.matte(0), a.matte(0))
    for i in range(3):
        assert np.array_equal(driver.frame(i), b.frame(i)) and np.array_equal(driver.matte(i), b.matte(i))
    for k in ("expression", "jaw_pose", "transform", "landmarks"):
        assert np.array_equal(source.params[k], a.params[k][:1]) and np.array_equal(driver.params[k], b.params[k]), k
    assert np.array_equal(source.params["shape"], a.params["shape"])  # the identity's shape is not per frame
