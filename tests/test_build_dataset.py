"""gagavatar build-dataset: a tree of clips -> one dataset; failures recorded, resumable, sharded + merged.

The clips are tiny (4 frames of the bundled demo's synthetic faces, which MediaPipe
finds, tracked at 128 px), so every run here takes a second or two.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from gagavatar.cli import app
from gagavatar.data import Dataset
from gagavatar.tracking.build import (
    LOG_FILE, REPORT_FILE, STAGING_DIR, BuildConfig, BuildSummary, Clip, WorkerPool, find_clips, parse_fractions,
    parse_shard, shard_of, split_of, video_ids,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "driver" / "frames"
OPTIONS = ["--size", "128", "--identity-level", "1", "--splits", "0.5,0.25,0.25"]


def make_tree(root: Path) -> Path:
    """alice: a folder of 4 frames and a 4-frame mp4 (faces); bob: a corrupt mp4 and a sky without a face."""
    (root / "alice" / "talk1").mkdir(parents=True)
    (root / "bob").mkdir()
    for i in range(4):
        shutil.copy(DEMO / f"{i:06d}.png", root / "alice" / "talk1" / f"{i:06d}.png")
    frames = [iio.imread(DEMO / f"{i:06d}.png") for i in range(20, 24)]
    iio.mimwrite(root / "alice" / "talk2.mp4", frames, fps=25, macro_block_size=1)
    (root / "bob" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    x = np.linspace(0.0, 1.0, 96)
    sky = np.stack([np.outer(np.ones(96), x), np.outer(x, np.ones(96)), np.full((96, 96), 0.6)], -1)
    iio.mimwrite(root / "bob" / "sky.mp4", [(np.roll(sky, i, 1) * 255).astype(np.uint8) for i in range(4)],
                 fps=25, macro_block_size=1)
    return root


def build(*args) -> "CliRunner.Result":
    return CliRunner().invoke(app, ["build-dataset", *map(str, args)])


def contents(root: Path) -> dict:
    """What a dataset holds: per video its index entry (path aside), valid flags and parameters."""
    out = {}
    for v in Dataset(root).videos:
        p = v.params
        out[v.id] = dict(identity=v.identity, split=v.split, n_frames=v.n_frames, size=(v.width, v.height),
                         valid=p["valid"].tolist(), expression=p["expression"], transform=p["transform"])
    return out


def assert_same_dataset(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert sorted(ca) == sorted(cb)
    for vid in ca:
        for key in ("identity", "split", "n_frames", "size", "valid"):
            assert ca[vid][key] == cb[vid][key], (vid, key)
        for key in ("expression", "transform"):  # same input and code: the same fit
            np.testing.assert_allclose(ca[vid][key], cb[vid][key], atol=1e-4, err_msg=f"{vid} {key}")


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """The tree built in one uninterrupted run (in this process)."""
    tmp = tmp_path_factory.mktemp("build")
    tree = make_tree(tmp / "tree")
    result = build(tree, "--out", tmp / "one", "--workers", "0", *OPTIONS)
    return tree, tmp / "one", result


def test_build_records_failures_and_goes_on(one_run):
    tree, out, result = one_run
    assert result.exit_code == 0, result.output
    assert "2 clips tracked, 2 failed" in result.output and str(out / REPORT_FILE) in result.output
    ds = Dataset(out)
    assert sorted(v.id for v in ds.videos) == ["alice__talk1", "alice__talk2"]
    assert {v.identity for v in ds.videos} == {"alice"}
    assert {v.split for v in ds.videos} == {split_of("alice", (0.5, 0.25, 0.25))}
    for v in ds.videos:
        assert v.n_frames == 4 and (v.width, v.height) == (128, 128)
        assert v.params["valid"].all()  # the demo faces are found in every frame
    report = json.loads((out / REPORT_FILE).read_text())
    failed = {f["clip"]: f for f in report["failed"]}
    assert sorted(failed) == ["bob/broken.mp4", "bob/sky.mp4"]
    assert "cannot open this video" in failed["bob/broken.mp4"]["reason"]
    assert "\n" not in failed["bob/broken.mp4"]["reason"] and len(failed["bob/broken.mp4"]["reason"]) <= 300
    assert failed["bob/sky.mp4"]["reason"] == "no face in any of its 4 frame(s)" and failed["bob/sky.mp4"]["frames"] == 4
    assert report["tracked"] == 2 and report["frames"] == 8 and report["status"] == "finished"
    assert not (out / STAGING_DIR).exists() and not (out / "bob__sky").exists()
    # the console names each failed clip and its reason, not only the report
    lines = result.output.splitlines()
    assert f"  failed: bob/broken.mp4: {failed['bob/broken.mp4']['reason']}" in lines
    assert "  failed: bob/sky.mp4: no face in any of its 4 frame(s)" in lines


def test_console_names_ten_failures_then_counts_the_rest(tmp_path):
    failed = [{"clip": f"p/clip{i:02d}.mp4", "id": f"p__clip{i:02d}", "reason": f"reason {i}", "frames": None}
              for i in range(13)]
    failed[12]["earlier"] = True
    lines = BuildSummary(tmp_path, 13, failed=failed).lines()
    assert lines[0] == f"0 clips tracked, 13 failed (see {tmp_path / REPORT_FILE})"
    assert lines[1:12] == [f"  failed: p/clip{i:02d}.mp4: reason {i}" for i in range(10)] + ["  ... and 3 more"]
    assert BuildSummary(tmp_path, 1, failed=failed[12:]).lines()[1] == "  failed: p/clip12.mp4: reason 12 (earlier run)"
    assert not any("failed:" in line for line in BuildSummary(tmp_path, 0).lines())


def test_resume_after_kill(one_run, tmp_path):
    """SIGKILL the run once its first clip is done, leave junk as a killed writer would, rerun:
    the same dataset as one run, and no clip tracked twice."""
    tree, one, _ = one_run
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "gagavatar", "build-dataset", str(tree), "--out", str(out), "--workers", "1", *OPTIONS]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / LOG_FILE
    deadline = time.time() + 60
    while not (log.is_file() and log.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.5)  # its worker notices and quits
    done_before = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert 1 <= len(done_before) < 4, "the run was not interrupted"
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/params.npz")}
    if "alice__talk2" not in finished:  # what a writer killed mid-clip leaves in a dataset
        (out / "alice__talk2" / "frames").mkdir(parents=True, exist_ok=True)
        (out / "alice__talk2" / "frames" / "000000.jpg").write_bytes(b"junk")
    (out / STAGING_DIR / "alice__talk1").mkdir(parents=True, exist_ok=True)

    result = build(tree, "--out", out, "--workers", "0", *OPTIONS)
    assert result.exit_code == 0, result.output
    assert f"{len(finished)} clip(s) finished by an earlier run (skipped)" in result.output
    assert_same_dataset(one, out)
    for vid, mtime in finished.items():  # finished clips were not touched
        assert (out / vid / "params.npz").stat().st_mtime_ns == mtime
    outcomes = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert sorted(outcomes) == sorted(set(outcomes)), "a clip was tracked twice"
    assert set(outcomes) | set(finished) == {"alice__talk1", "alice__talk2", "bob__broken", "bob__sky"}
    assert not (out / STAGING_DIR).exists()
    report = json.loads((out / REPORT_FILE).read_text())
    assert sorted(f["clip"] for f in report["failed"]) == ["bob/broken.mp4", "bob/sky.mp4"]


def test_shards_and_merge_equal_one_run(one_run, tmp_path):
    tree, one, _ = one_run
    for k in (0, 1):
        result = build(tree, "--out", tmp_path / f"shard{k}", "--shard", f"{k}/2", "--workers", "0", *OPTIONS)
        assert result.exit_code == 0, result.output
        assert len(Dataset(tmp_path / f"shard{k}")) == 1  # alice's two clips fall in different shards
    result = build("--merge", tmp_path / "shard0", tmp_path / "shard1", "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    assert "2 videos copied" in result.output and "2 clips failed in the shards" in result.output
    assert_same_dataset(one, tmp_path / "merged")
    assert len(Dataset(tmp_path / "shard0")) == 1  # copied, not moved
    report = json.loads((tmp_path / "merged" / REPORT_FILE).read_text())
    assert sorted(f["clip"] for f in report["failed"]) == ["bob/broken.mp4", "bob/sky.mp4"]

    # a merge that moves: the shards give up their videos
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "shard0", tmp_path / "m0")
    shutil.copytree(tmp_path / "shard1", tmp_path / "m1")
    result = build("--merge", tmp_path / "m0", tmp_path / "m1", "--out", moved, "--move")
    assert result.exit_code == 0 and "2 videos moved" in result.output, result.output
    assert_same_dataset(one, moved)
    assert len(Dataset(tmp_path / "m0")) == 0

    # conflicts are refused before anything is written
    result = build("--merge", tmp_path / "shard0", tmp_path / "shard0", "--out", tmp_path / "dup")
    assert result.exit_code == 1 and "is in both" in result.output and not (tmp_path / "dup").exists()
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "shard1", other)
    entry = next(other.glob("*/video.json"))
    info = json.loads(entry.read_text())
    entry.write_text(json.dumps({**info, "split": next(s for s in ("train", "val", "test") if s != info["split"])}))
    result = build("--merge", tmp_path / "shard0", other, "--out", tmp_path / "conflict")
    assert result.exit_code == 1 and "identity 'alice' is in split" in result.output


def test_reference_folders_are_imported(one_run, tmp_path):
    """A GAGAvatar_track folder in the tree is imported (not re-tracked), under the clip's identity."""
    from gagavatar.data.reference import export_reference

    _, one, _ = one_run
    video = Dataset(one).video("alice__talk1")
    tree = tmp_path / "tree"
    export_reference(video, tree / "carol" / "tracked")
    result = build(tree, "--out", tmp_path / "out", "--workers", "0", *OPTIONS)
    assert result.exit_code == 0 and "1 clips tracked, 0 failed" in result.output, result.output
    imported = Dataset(tmp_path / "out").video("carol__tracked")
    assert imported.identity == "carol" and imported.split == split_of("carol", (0.5, 0.25, 0.25))
    assert imported.n_frames == video.n_frames
    np.testing.assert_allclose(imported.params["expression"], video.params["expression"], atol=1e-6)


def test_dead_worker_fails_only_its_clip(tmp_path):
    """A worker process killed mid-clip (as by a segfault or the OOM killer) fails that clip only."""
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    shutil.copy(DEMO / "000000.png", tree / "a" / "000000.png")
    clips = [Clip(str(tree / "a"), "a", "a"), Clip(str(tree / "a"), "b", "b")]
    out = tmp_path / "out"
    pool = WorkerPool(out, BuildConfig(size=128), workers=1, threads=1)
    victim = pool.workers[0].process
    threading.Timer(0.3, lambda: os.kill(victim.pid, signal.SIGKILL)).start()  # while it starts on clip "a"
    try:
        results = {r.clip.id: r for r in pool.map(clips)}
    finally:
        pool.close()
    assert results["a"].status == "failed" and "process died" in results["a"].reason
    assert "exit code -9" in results["a"].reason
    assert results["b"].status == "tracked" and results["b"].frames == 1
    assert (out / "b" / "video.json").is_file() and not (out / "a").exists()


def test_clip_discovery_ids_and_identities(tmp_path):
    tree = tmp_path / "tree"
    for name in ("p1/x y.mp4", "p1/x y.mov", "p2/sub/clip.mp4", ".hidden/c.mp4", "p2/notes.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(b"")
    (tree / "p3" / "frames").mkdir(parents=True)
    (tree / "p3" / "frames" / "1.png").write_bytes(b"")
    clips = find_clips(tree, identity_level=1)
    assert [c.name for c in clips] == ["p1/x y.mov", "p1/x y.mp4", "p2/sub/clip.mp4", "p3/frames"]
    assert [c.identity for c in clips] == ["p1", "p1", "p2", "p3"]
    ids = [c.id for c in clips]
    assert ids[2:] == ["p2__sub__clip", "p3__frames"] and len(set(ids)) == 4
    assert all(i.startswith("p1__x_y-") for i in ids[:2])  # same slug: told apart by a hash of the name
    assert video_ids([".b.mp4", "a b/c.d"]) == ["_b", "a_b__c.d"]  # never a hidden folder; a folder keeps its dot
    with pytest.raises(ValueError, match="--identity-level 3"):
        find_clips(tree, identity_level=3)
    # a list file: paths relative to it, an identity column; an identity map overrides it
    (tree / "list.txt").write_text("# clips\np2/sub/clip.mp4\tbob\np1/x y.mp4,alice\np3/frames\n")
    listed = find_clips(tree / "list.txt")
    assert [(c.name, c.identity) for c in listed] == [("p2/sub/clip.mp4", "bob"), ("p1/x y.mp4", "alice"),
                                                      ("p3/frames", None)]
    (tmp_path / "map.tsv").write_text("p2/sub/clip\tB\np1/x y.mp4\tA\n")
    with pytest.raises(ValueError, match="no identity for 1 clip"):
        find_clips(tree / "list.txt", identity_map=tmp_path / "map.tsv")
    (tmp_path / "map.tsv").write_text("p2/sub/clip\tB\np1/x y.mp4\tA\np3/frames\tC\n")
    assert [c.identity for c in find_clips(tree / "list.txt", identity_map=tmp_path / "map.tsv")] == ["B", "A", "C"]


def test_splits_and_shards_are_functions_of_the_name():
    names = [f"id{i:05d}" for i in range(20000)]
    fractions = parse_fractions("0.9,0.05,0.05")
    splits = [split_of(n, fractions, seed=0) for n in names]
    for split, f in zip(("train", "val", "test"), fractions):
        assert abs(splits.count(split) / len(names) - f) < 0.01
    assert splits == [split_of(n, fractions, seed=0) for n in names]  # deterministic
    assert splits != [split_of(n, fractions, seed=1) for n in names]  # the seed matters
    assert {split_of(n, parse_fractions("1,0,0")) for n in names[:500]} == {"train"}
    clips = [Clip("", f"{n}/c.mp4", n) for n in names[:3000]]
    shards = [shard_of(c, 4) for c in clips]
    assert all(abs(shards.count(k) - 750) < 100 for k in range(4))
    assert shards == [shard_of(c, 4) for c in reversed(clips)][::-1]  # independent of the order
    assert parse_shard("3/8") == (3, 8)
    for bad in ("8/8", "1", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="--splits"):
        parse_fractions("0.9,0.1")


def test_refusals(one_run, tmp_path):
    """Resuming with other settings or identities, and an input inside the output, are refused."""
    _, one, _ = one_run
    copy = tmp_path / "copy"
    shutil.copytree(one, copy)
    tree = tmp_path / "empty"
    make_tree(tree)
    result = build(tree, "--out", copy, "--workers", "0", "--size", "256", "--identity-level", "1")
    assert result.exit_code == 1 and "built with size=128" in result.output
    result = build(tree, "--out", copy, "--workers", "0", "--size", "128", "--splits", "0.5,0.25,0.25")
    assert result.exit_code == 1 and "an earlier run tracked it as identity 'alice'" in result.output
    inside = tmp_path / "ds"
    make_tree(inside / "videos")
    result = build(inside / "videos", "--out", inside, "--workers", "0", *OPTIONS)
    assert result.exit_code == 1 and "lies inside --out" in result.output
    assert len(list((inside / "videos").rglob("*.*"))) == 7  # the input is untouched


def test_a_long_failure_reason_keeps_its_end_where_the_fix_is():
    from gagavatar.io import InputError
    from gagavatar.tracking.clip_tracker import _one_line

    reason = _one_line(InputError("/" + "deep/" * 80 + "clip.mp4: cannot open this video: re-encode it, e.g. ffmpeg "
                                  "-i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"))
    assert len(reason) <= 300 and reason.startswith("/deep/") and reason.endswith("yuv420p OUT.mp4"), reason
