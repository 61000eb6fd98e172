"""gagavatar eval-speech: the face regions, each metric against a known answer, the baselines,
the report and the command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gagavatar.cli import app
from gagavatar.errors import InputError
from gagavatar.head import HeadModel
from gagavatar.speech.data import SpeechClip, save_clips
from gagavatar.speech.evaluate import (LoudnessJaw, bootstrap_interval, evaluate_speech, loudness, pearson, table,
                                       write_report)
from gagavatar.speech.face_regions import inner_lip_rows, lip_vertices, mouth_opening, upper_face_vertices
from gagavatar.synthetic.landmark_groups import LANDMARK_GROUPS

RATE, FPS = 16000, 25


@pytest.fixture(scope="module")
def head():
    return HeadModel.default()


def speech_clip(rng, clip_id: str, n_frames: int = 40, expressions: int = 100, jaw_gain: float = 0.0) -> SpeechClip:
    """Noise whose loudness rises and falls; motion: random expressions (or a jaw that follows the
    loudness exactly, ``jaw_gain``), no head rotation."""
    envelope = np.abs(np.sin(np.linspace(0, rng.uniform(3, 8), n_frames)))
    audio = (rng.standard_normal(n_frames * 640) * np.repeat(envelope, 640) * 0.3).astype(np.float32)
    motion = np.zeros((n_frames, expressions + 6), np.float32)
    if jaw_gain:
        motion[:, -3] = jaw_gain * loudness(audio, n_frames)
    else:
        motion[:, :8] = rng.normal(0, 0.5, (n_frames, 8))
    return SpeechClip(clip_id, audio, motion)


def lookup(clips):
    """The predictor that knows the truth: each clip's own motion."""
    return lambda audio: next(c.motion for c in clips if c.audio is audio)


def row(result, name):
    return next(r for r in result["rows"] if r["name"] == name)


# ------------------------------------------------------------------ regions


def test_regions_of_the_bundled_head(head):
    lips, upper = lip_vertices(head), upper_face_vertices(head)
    assert 30 < len(lips) < 400 and 100 < len(upper) < 800 and not set(lips) & set(upper)
    v = head.v_template.numpy()
    assert v[upper, 1].min() > v[lips, 1].max()  # the upper face is above the mouth
    assert v[lips, 2].min() > 0 and v[upper, 2].min() > 0  # both on the front of the head
    # opening the jaw moves the lips (the lower one), and leaves the upper face where it was
    opened = head(torch.zeros(1, 300), jaw_pose=torch.tensor([[0.3, 0.0, 0.0]]))[0].numpy()
    moved = np.linalg.norm(opened - v, axis=1)
    assert moved[lips].max() > 0.01 and moved[upper].max() < 1e-6
    # and it opens the mouth
    rows = inner_lip_rows(head)
    still, open_ = (mouth_opening(head.landmarks(x[None]), rows)[0]
                    for x in (head.v_template, torch.from_numpy(opened)))
    assert open_ > still + 0.01


def _as_ibug68(head) -> HeadModel:
    """The same head with a 68-point embedding made from its MediaPipe points (as a FLAME file
    with DECA's landmark_embedding.npy would come), to show the rule does not depend on the format."""
    mp, ib = LANDMARK_GROUPS["mediapipe"], LANDMARK_GROUPS["ibug68"]
    pick = {  # ibug group -> positions in the MediaPipe group, following the same contour
        "lips_outer": [0, 2, 4, 5, 6, 8, 10, 12, 14, 15, 16, 18], "lips_inner_upper": [0, 3, 5, 7, 10],
        "lips_inner_lower": [0, 3, 5, 7, 10], "eye_right": [0, 3, 5, 8, 11, 13], "eye_left": [0, 3, 5, 8, 11, 13],
        "brow_right": [0, 1, 2, 3, 4], "brow_left": [0, 1, 2, 3, 4]}
    rows = {int(i): r for r, i in enumerate(head.landmark_indices.tolist())}
    chosen = {}
    for group, positions in pick.items():
        for ibug_id, k in zip(ib[group], positions):
            chosen[ibug_id] = rows[mp[group][k]]
    ids = sorted(chosen)
    embedding = {"face_idx": head.lmk_face_idx[[chosen[i] for i in ids]].numpy(),
                 "bary": head.lmk_b_coords[[chosen[i] for i in ids]].numpy(), "indices": np.array(ids),
                 "format": "ibug68"}
    return HeadModel(head.arrays(), landmarks=embedding, name="ibug68 head")


def test_regions_from_a_68_point_embedding(head):
    other = _as_ibug68(head)
    for region in (lip_vertices, upper_face_vertices):
        a, b = set(region(head)), set(region(other))
        assert len(a & b) / len(a | b) > 0.6, region.__name__
    assert len(inner_lip_rows(other)[0]) == 3  # the corners are left out


def test_a_head_without_landmarks_is_one_line(head):
    bare = HeadModel(head.arrays(), name="generic_model.pkl")
    with pytest.raises(InputError, match="--landmark-embedding"):
        lip_vertices(bare)


# ------------------------------------------------------------------ metrics with known answers


def test_loudness_and_correlation():
    sine = (0.5 * np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE)).astype(np.float32)
    rms = loudness(sine, 25)
    assert rms.shape == (25,)
    np.testing.assert_allclose(rms, 0.5 / math.sqrt(2), rtol=1e-3)
    assert loudness(sine[:800], 2)[1] == pytest.approx(np.sqrt(np.mean(sine[640:800] ** 2) * 160 / 640), rel=1e-4)
    x = np.arange(10.0)
    assert pearson(x, 3 * x + 1) == pytest.approx(1.0) and pearson(x, -x) == pytest.approx(-1.0)
    assert math.isnan(pearson(np.full(10, 4.2) + 1e-9 * x, x))  # a still mouth has no correlation


def test_bootstrap_interval():
    sums, counts = np.array([10.0, 20.0, 30.0, 40.0]), np.array([10.0, 10.0, 10.0, 10.0])
    lo, hi = bootstrap_interval(sums, counts)
    assert lo < 2.5 < hi and 1.0 <= lo and hi <= 4.0
    assert bootstrap_interval(np.array([5.0]), np.array([2.0])) == [2.5, 2.5]


def test_truth_scores_zero_and_an_offset_scores_its_analytic_error(head):
    rng = np.random.default_rng(0)
    clips = [speech_clip(rng, f"c{i}") for i in range(2)]
    truth = evaluate_speech(lookup(clips), clips, head)
    model = row(truth, "model")
    assert model["lve_mm"] < 1e-3 and model["fdd_mm"] < 1e-4 and model["opening_true_r"] == pytest.approx(1.0)
    assert model["lve_ci_mm"][1] < 1e-3
    # expression 2 (pucker) off by 0.4 everywhere: without jaw or pose the head is linear in its expression,
    # so every frame's error is that column's largest lip displacement; a head rotation (the
    # camera's) changes no vertex
    offset = np.zeros(106, np.float32)
    offset[2], offset[100:103] = 0.4, (0.2, -0.1, 0.05)
    shifted = evaluate_speech(lambda audio: lookup(clips)(audio) + offset, clips, head)
    expression = torch.zeros(1, 100)
    expression[0, 2] = 0.4
    displacement = (head(torch.zeros(1, 300), expression) - head(torch.zeros(1, 300)))[0]
    expected = displacement[torch.as_tensor(lip_vertices(head))].norm(dim=-1).max().item() * 1000
    assert expected > 0.1
    assert row(shifted, "model")["lve_mm"] == pytest.approx(expected, rel=1e-3)
    lo, hi = row(shifted, "model")["lve_ci_mm"]
    assert lo == pytest.approx(expected, rel=1e-3) and hi == pytest.approx(expected, rel=1e-3)
    assert shifted["lve_vs_loudness_mm"]["difference"] == pytest.approx(
        expected - row(shifted, "loudness jaw")["lve_mm"], rel=1e-4)


def test_baselines(head):
    rng = np.random.default_rng(1)
    clips = [speech_clip(rng, f"c{i}", jaw_gain=0.6) for i in range(3)]
    fitted = LoudnessJaw.fit(clips)
    assert fitted.gain == pytest.approx(0.6, rel=1e-4) and abs(fitted.offset) < 1e-5
    result = evaluate_speech(None, clips, head)
    assert [r["name"] for r in result["rows"]] == ["no motion", "mean motion", "loudness jaw"]
    loud, still, mean = row(result, "loudness jaw"), row(result, "no motion"), row(result, "mean motion")
    assert loud["lve_mm"] < 1e-2 and loud["opening_loudness_r"] > 0.95  # the jaw follows the loudness: found again
    assert still["lve_mm"] > mean["lve_mm"] > loud["lve_mm"] + 1.0
    assert still["opening_loudness_r"] is None and mean["opening_true_r"] is None  # a still mouth
    assert result["truth"]["opening_loudness_r"] > 0.95
    # fitted elsewhere: a baseline fitted on a jaw twice as wide is off here
    wide = [speech_clip(rng, f"w{i}", jaw_gain=1.2) for i in range(2)]
    elsewhere = evaluate_speech(None, clips, head, fit_clips=wide)
    assert row(elsewhere, "loudness jaw")["lve_mm"] > 1.0


# ------------------------------------------------------------------ report and command


def test_report_files(head, tmp_path):
    rng = np.random.default_rng(2)
    clips = [speech_clip(rng, f"c{i}") for i in range(2)]
    result = evaluate_speech(lookup(clips), clips, head, name="perfect")
    text = table(result)
    for name in ("perfect", "no motion", "mean motion", "loudness jaw", "tracked (truth)", "LVE mm"):
        assert name in text
    paths = write_report(result, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["clips"] == 2 and metrics["plot_clip"] == "c0" and len(metrics["rows"]) == 4
    assert "n/a" in paths["report"].read_text()
    from PIL import Image

    assert Image.open(paths["plot"]).size[0] > 600


def test_command_scores_the_baselines(tmp_path):
    rng = np.random.default_rng(3)
    save_clips(tmp_path / "clips.npz", [speech_clip(rng, f"c{i}", jaw_gain=0.5) for i in range(2)])
    result = CliRunner().invoke(app, ["eval-speech", "--data", str(tmp_path / "clips.npz"), "--out",
                                      str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "| loudness jaw |" in result.output and (tmp_path / "report" / "mouth_opening.png").is_file()
    missing = CliRunner().invoke(app, ["eval-speech", "--data", str(tmp_path / "clips.npz"), "--out",
                                       str(tmp_path / "r2"), "--speech-model", str(tmp_path / "none.pt")])
    assert missing.exit_code == 1 and missing.output.count("\n") == 1 and "none.pt" in missing.output
