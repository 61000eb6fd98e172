"""Training speech models: the quantiser's training forms against the inference one, the mesh
loss against the head model, synthetic talking data, both stages end to end with a kill and a
resume, and the bundled demonstration voice against the loudness baseline on voices and
sentences it never heard."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from gagavatar.speech.codec import dequantize, quantize, quantize_for_training, teacher_bits

SCALES = (1, 5, 25, 50, 100)


def espeak_library() -> bool:
    import ctypes.util

    return ctypes.util.find_library("espeak-ng") is not None


needs_espeak = pytest.mark.skipif(not espeak_library(), reason="libespeak-ng not installed (make install adds it)")


# ---------------------------------------------------------------------- the quantiser
def test_teacher_bits_without_flips_are_the_codec_bits():
    features = torch.randn(3, 100, 16)
    targets, inputs = teacher_bits(features, SCALES)
    assert torch.equal(targets, quantize(features, SCALES))
    assert torch.equal(inputs, targets)


def test_flipped_inputs_change_only_coarse_bits_and_the_finer_targets_follow_them():
    features = torch.randn(4, 100, 16)
    targets, inputs = teacher_bits(features, SCALES, flip_ratio=0.3, generator=torch.Generator().manual_seed(1))
    last = sum(SCALES[:-1])
    assert torch.equal(inputs[:, last:], targets[:, last:])  # the finest scale is never an input
    assert (inputs[:, :last] != targets[:, :last]).any()
    # re-quantising what the flipped codes leave, scale by scale, gives the targets
    residual, C = features, features.shape[-1]
    start = 0
    for s, n in enumerate(SCALES):
        z = torch.nn.functional.interpolate(residual.transpose(1, 2), size=n, mode="area").transpose(1, 2)
        assert torch.equal((z > 0).long(), targets[:, start:start + n])
        code = (inputs[:, start:start + n].float() * 2 - 1) / C ** 0.5
        residual = residual - torch.nn.functional.interpolate(code.transpose(1, 2), size=100,
                                                              mode="linear").transpose(1, 2)
        start += n


def test_training_quantiser_matches_inference_and_passes_gradients():
    features = torch.randn(2, 100, 16, requires_grad=True)
    codes, bits, commit, entropy = quantize_for_training(features, SCALES)
    assert torch.equal(bits, quantize(features.detach(), SCALES))
    assert torch.allclose(codes, dequantize(bits, SCALES, torch.float32), atol=1e-6)
    (codes.sum() + commit + entropy).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert commit.item() > 0


# ---------------------------------------------------------------------- the mesh loss
def test_mesh_error_is_the_head_models_vertex_error():
    from gagavatar.head import HeadModel
    from gagavatar.speech.face_regions import lip_vertices
    from gagavatar.train.speech import MeshError

    head = HeadModel.default()
    lips = torch.as_tensor(lip_vertices(head))
    mesh = MeshError(head, 23, lips)
    zero = torch.zeros(1, 1)
    rest = head(zero)
    expression = torch.randn(5, 17) * 0.4
    motion = torch.zeros(5, 23)
    motion[:, :17] = expression
    moved = (head(zero, expression=expression) - rest) * 1000
    # blend shapes are linear: exact
    assert torch.allclose(mesh(motion), moved.square().mean((1, 2)), rtol=1e-4)
    assert torch.allclose(mesh(motion, lips=True), moved[:, lips].square().mean((1, 2)), rtol=1e-4)
    # the jaw: first order, close for a speaking opening (0.15 rad)
    motion = torch.zeros(1, 23)
    motion[0, -3] = 0.15
    jaw = torch.zeros(1, 3)
    jaw[0, 0] = 0.15
    true = ((head(zero, jaw_pose=jaw) - rest) * 1000).square().mean()
    assert abs(mesh(motion).item() - true.item()) < 0.05 * true.item()


# ---------------------------------------------------------------------- synthetic speech
@needs_espeak
def test_espeak_phonemes_are_timed_within_the_sound():
    from gagavatar.synthetic.espeak import speak_phonemes

    speech = speak_phonemes("Peter picked a pepper.", "en-us+f2", 160, 50)
    starts = [t for _, t in speech.phonemes]
    assert speech.rate > 8000 and len(speech.samples) > speech.rate // 2
    assert starts == sorted(starts) and 0 <= starts[0] and starts[-1] < len(speech.samples) / speech.rate
    names = [p for p, _ in speech.phonemes]
    assert names.count("p") >= 3  # three p's are spoken


@needs_espeak
def test_synthetic_clips_close_the_lips_on_p_and_hold_out_voices_and_sentences():
    from gagavatar.synthetic.basis_names import EXPRESSIONS
    from gagavatar.speech.synthetic import speech_clip, speech_clips, voices

    assert not set(voices(True)) & set(voices(False))
    clip = speech_clip(np.random.default_rng(0), ("en-us", "m1"), ["Pop, pop, pop."])
    assert clip.motion.shape == (int(np.ceil(len(clip.audio) / 16000 * 25)), 23)
    press = clip.motion[:, EXPRESSIONS.index("lip_press")]
    assert press.max() > 0.5 and np.median(press) < 0.3
    held = speech_clips(2, held_out=True, seed=3, seconds=2.0)
    assert all(any(f"+{v}" in c.id for v in ("m6", "f4")) or "en-029" in c.id for c in held)


# ---------------------------------------------------------------------- training end to end
def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "gagavatar", *args], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def clips_file(tmp_path_factory):
    """Six 9-second clips of smooth random motion with a tone whose loudness follows the jaw."""
    from gagavatar.speech.data import SpeechClip, save_clips

    rng = np.random.default_rng(0)
    clips = []
    for i in range(6):
        frames = 225
        jaw = np.clip(np.convolve(rng.normal(0, 1, frames), np.ones(5) / 5, "same"), 0, None) * 0.1
        motion = np.zeros((frames, 23), np.float32)
        motion[:, -3] = jaw
        motion[:, 0] = jaw * 3
        t = np.arange(frames * 640) / 16000
        audio = (np.repeat(jaw, 640) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        clips.append(SpeechClip(f"clip{i}", audio, motion))
    return save_clips(tmp_path_factory.mktemp("clips") / "clips.npz", clips)


def test_train_speech_refuses_bad_settings_in_one_line(tmp_path, clips_file):
    result = _run(["train-speech", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "run")])
    assert result.returncode == 1 and "no such clips file" in result.stderr and "Traceback" not in result.stderr
    result = _run(["train-speech", "--data", str(clips_file), "--out", str(tmp_path / "run"), "--batch-size", "0"])
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_train_speech_both_stages_survive_a_kill_and_resume(tmp_path, clips_file):
    from gagavatar.speech.weights import load_speech_model
    from gagavatar.train.state import checkpoints

    run = tmp_path / "run"
    args = ["train-speech", "--data", str(clips_file), "--out", str(run), "--codec-steps", "6",
            "--generator-steps", "14", "--batch-size", "2", "--checkpoint-every", "4", "--log-every", "1",
            "--warmup", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "gagavatar", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not any(int(p.stem[5:]) >= 8 for p in checkpoints(run)):
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # into the generator stage
    proc.wait()
    assert not (run / "speech_model.safetensors").exists()
    again = _run(args, env=env)
    assert again.returncode == 1 and "--resume" in again.stderr  # another run's folder is refused
    resumed = _run([*args, "--resume"], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout + resumed.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 21))  # every step once: the killed run's extra rows were dropped
    assert {r["stage"] for r in rows} == {"codec", "generator"}
    assert (run / "loss.png").is_file()
    unbroken = _run([str(tmp_path / "unbroken") if a == str(run) else a for a in args], env=env)
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]
    from safetensors.torch import load_file

    resumed, unbroken = (load_file(r / "speech_model.safetensors") for r in (run, tmp_path / "unbroken"))
    assert all(torch.equal(resumed[k], unbroken[k]) for k in unbroken)  # the resumed run ends where an unbroken one does
    model = load_speech_model(run / "speech_model.safetensors")
    assert model.config.name == "tiny" and model.config.head == "synthetic-flame-v1"
    motion = model.generate(torch.zeros(16000))
    assert motion.shape == (25, 23) and torch.isfinite(motion).all()


# ---------------------------------------------------------------------- the bundled voice
def test_the_bundled_voice_drives_the_bundled_head_and_refuses_flame():
    from gagavatar.head import HeadModel
    from gagavatar.reenact.speaker import Speaker

    speaker = Speaker.load(None)
    assert speaker.is_bundled and speaker.model.config.head == "synthetic-flame-v1"
    speaker.check_head(HeadModel.default())

    class Flame:  # what check_head reads of a FLAME file
        id, n_vertices = "flame2020", 5023

    with pytest.raises(FileNotFoundError, match="ARTalk_wav2vec.pt"):
        Speaker.load(None, head=Flame())
    with pytest.raises(ValueError, match="trained on the head model synthetic-flame-v1"):
        speaker.check_head(Flame())


@needs_espeak
def test_the_bundled_voice_beats_the_loudness_baseline_on_unheard_voices():
    from gagavatar.head import HeadModel
    from gagavatar.reenact.speaker import Speaker
    from gagavatar.speech.evaluate import evaluate_speech, model_predictor
    from gagavatar.speech.synthetic import speech_clips

    clips = speech_clips(6, held_out=True, seed=11, seconds=6.0)
    model = Speaker.load(None).model
    result = evaluate_speech(model_predictor(model), clips, HeadModel.default(), seed=0)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["model"]["lve_mm"] < 0.8 * rows["loudness jaw"]["lve_mm"], rows
    assert rows["model"]["lve_mm"] < rows["no motion"]["lve_mm"]
