"""The glue between tracked files and the network: one frame type, one world contract, checked
against what the reference's own pipeline computed (SPEC §10), and between our own stages."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from gagavatar.data.frame import FrameParams
from gagavatar.data.pairs import PairDataset, collate
from gagavatar.head import HeadModel
from gagavatar.reenact import DEMO_DATA, bundled, drive
from gagavatar.reenact import parity


def test_pipeline_matches_the_reference(pipeline_fixture, capsys):
    assert parity.main([str(pipeline_fixture)]) == 0
    printed = capsys.readouterr().out
    for group in ("plane_points", "plane_dirs", "t_points", "t_transform", "pixels", "depth", "train_points",
                  "train_transform"):
        assert group in printed


def test_the_check_fails_on_a_dropped_global_rotation(pipeline_fixture, monkeypatch):
    """The bug it was written for: reenactment once dropped FLAME's global rotation (posecode[:3])."""
    vertices = FrameParams.vertices
    monkeypatch.setattr(FrameParams, "vertices", lambda self, head: vertices(
        self.replace(global_pose=torch.zeros_like(self.global_pose)), head))
    rows = dict((name, diff) for name, diff, _ in parity.compare(pipeline_fixture))
    assert rows["t_points"] > 1e-2 and rows["train_points"] > 1e-2
    assert rows["t_transform"] < 1e-6  # the cameras do not depend on it


def test_the_check_fails_on_a_wrong_expectation(pipeline_fixture, tmp_path):
    folder = tmp_path / "fixture"
    shutil.copytree(pipeline_fixture, folder, ignore=shutil.ignore_patterns("FLAME_with_eye.pt", "expected.npz"))
    (folder / "FLAME_with_eye.pt").symlink_to(pipeline_fixture / "FLAME_with_eye.pt")
    with np.load(pipeline_fixture / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    expected["pixels"] = expected["pixels"] + 0.01  # a hundredth of a pixel
    np.savez(folder / "expected.npz", **expected)
    assert parity.main([str(folder)]) == 1


def test_pair_loader_and_driver_use_one_contract():
    """The same tracked frame as a training target and as a driving frame of its own video
    (same identity, everything transferred) gives the same vertices and camera."""
    head = HeadModel.default()
    pairs = PairDataset(bundled(DEMO_DATA), split="test", source_frame="first")
    video = next(v for v in pairs.videos if v.id == "driver")
    samples = [pairs[i] for i in range(len(pairs)) if pairs.videos[pairs.pair(i)[1][0]] is video]
    targets = collate(samples)["target"]
    frames = [s["target_frame"] for s in samples]
    driven, repeated = drive(video, video)
    driven = driven[frames]
    assert len(frames) == video.n_frames and not repeated.any()
    with torch.no_grad():
        torch.testing.assert_close(targets.vertices(head), driven.vertices(head), rtol=0, atol=0)
    torch.testing.assert_close(targets.camera.viewmat, driven.camera.viewmat, rtol=0, atol=0)
    torch.testing.assert_close(targets.camera.K, driven.camera.K, rtol=0, atol=0)
