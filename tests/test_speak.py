"""`gagavatar speak`: a voice drives the avatar through the one driver.

The speech model here is small with random weights (the released one is 1.96 GB; its exactness
is tests/test_speech_parity.py's job); what is checked is the plumbing a user relies on: the
video has the speech as its sound track and the audio's length, the motion file drives
`reenact`, the controls apply, and bad input is one line."""
import math
import shutil
import subprocess
import wave

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gagavatar import commands
from gagavatar import io as gio
from gagavatar.cli import app
from gagavatar.head import HeadModel
from gagavatar.model import create_model, save
from gagavatar.reenact import DEMO_DATA, Animator, MotionControls, Speaker, bundled
from gagavatar.speech.config import SpeechConfig
from gagavatar.speech.generator import SpeechModel

from conftest import REFERENCE

SMALL = SpeechConfig(name="test", conv_channels=(16,) * 7, audio_width=32, audio_depth=1, audio_heads=2, audio_ff=64,
                     pos_conv_kernel=16, pos_conv_groups=2, style_width=16, style_depth=1, style_heads=2, style_ff=32,
                     code_dim=8, codec_width=32, codec_depth=2, codec_heads=2, width=32, depth=1, heads=2)


@pytest.fixture(scope="module")
def speaker() -> Speaker:
    torch.manual_seed(0)
    return Speaker(SpeechModel(SMALL))


@pytest.fixture(scope="module")
def flame_animator(tmp_path_factory) -> Animator:
    """A tiny avatar network for the §10 fixture's FLAME-layout head (5,023 vertices)."""
    folder = REFERENCE / "pipeline_fixture"
    if not (folder / "FLAME_with_eye.pt").is_file():
        pytest.skip(f"the reference pipeline fixture is not at {folder} (only CI and developers have it)")
    head = HeadModel.load(folder / "FLAME_with_eye.pt")
    torch.manual_seed(0)
    model = create_model("tiny", n_vertices=head.n_vertices)
    model.head_id = head.id
    return Animator.load(save(model, tmp_path_factory.mktemp("model") / "flame_tiny.safetensors"), head)


def streams(path) -> tuple[float, float]:
    """(video seconds, audio seconds) of an mp4, as ffmpeg reads them."""
    def seconds(kind):
        out = subprocess.run([gio.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{kind}:0", "-f", "null",
                              "-progress", "pipe:1", "-"], capture_output=True, text=True).stdout
        return int([l for l in out.splitlines() if l.startswith("out_time_us=")][-1].split("=")[1]) / 1e6
    return seconds("v"), seconds("a")


def speech(seconds: float, rate: int = 16000) -> np.ndarray:
    """A voiced-sounding test signal: a gliding tone with a syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (120 + 40 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_speak_writes_the_speech_as_the_sound_track_and_a_motion_reenact_takes(
        flame_animator, speaker, pipeline_fixture, tmp_path):
    rate = gio.SOUND_RATE  # a 48 kHz stereo recording: the voice on the left, a 12 kHz tone on the right
    tone = 0.2 * np.sin(2 * np.pi * 12000 * np.arange(int(1.5 * rate)) / rate)
    wav = gio.write_wav(tmp_path / "voice.wav", np.stack([speech(1.5, rate), tone], -1), rate)
    summary = commands.speak(pipeline_fixture / "source", tmp_path / "talk.mp4", flame_animator, speaker,
                             gio.read_audio(wav), recording=wav,
                             motion_out=tmp_path / "motion.npz", workdir=tmp_path / "work")
    assert summary.n_frames == math.ceil(1.5 * 25)
    video_s, audio_s = streams(summary.out)
    assert abs(video_s - 1.5) <= 1 / 25 + 1e-3 and abs(audio_s - 1.5) <= 1 / 25 + 1e-3, (video_s, audio_s)
    right = gio.read_audio(summary.out, rate, channels=2)[rate // 4:rate, 1]  # the recording's own sound, whole
    assert abs(np.fft.rfftfreq(len(right), 1 / rate)[np.argmax(np.abs(np.fft.rfft(right)))] - 12000) < 10
    again = commands.reenact(pipeline_fixture / "source", tmp_path / "motion.npz", tmp_path / "again.mp4",
                             flame_animator, workdir=tmp_path / "work2")
    assert again.n_frames == summary.n_frames


def test_a_failed_speak_leaves_no_motion_file(flame_animator, speaker, pipeline_fixture, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gio, "write_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        commands.speak(pipeline_fixture / "source", tmp_path / "talk.mp4", flame_animator, speaker, speech(0.5),
                       motion_out=tmp_path / "motion.npz", workdir=tmp_path / "work")
    assert not (tmp_path / "motion.npz").exists()


def test_the_motion_controls_apply_to_speech(flame_animator, speaker, pipeline_fixture, tmp_path):
    source = commands.load_tracked(pipeline_fixture / "source", tmp_path / "work", flame_animator.head)
    audio = speech(1.0)
    plain, _ = speaker.drive(source, audio, flame_animator.head)
    loud, _ = speaker.drive(source, audio, flame_animator.head, MotionControls(expression_scale=2.0, jaw_scale=0.0))
    still, _ = Speaker(speaker.model, fix_pose=True).drive(source, audio, flame_animator.head)
    torch.testing.assert_close(loud.expression, 2 * plain.expression)
    assert loud.jaw_pose.abs().max() == 0 and plain.jaw_pose.abs().max() > 0
    rotations = lambda frames: frames.camera.viewmat[:, :3, :3]  # noqa: E731
    front = rotations(still)[:1].expand(len(still), 3, 3)  # fix_pose: the head faces the camera throughout
    torch.testing.assert_close(rotations(still), front, atol=1e-6, rtol=0)
    assert (rotations(plain) - rotations(plain)[:1]).abs().max() > 1e-4  # the speech moves the head


def test_silence_is_valid_speech(flame_animator, speaker, pipeline_fixture, tmp_path):
    summary = commands.speak(pipeline_fixture / "source", tmp_path / "quiet.mp4", flame_animator, speaker,
                             np.zeros(16000, np.float32), workdir=tmp_path / "work")
    assert summary.n_frames == 25


def test_a_stereo_recording_is_averaged_not_summed(tmp_path):
    """ffmpeg's float downmix sums stereo at 1/sqrt(2) a channel: 3 dB louder, peaks over 1."""
    t = np.arange(8000) / 16000
    left, right = 0.9 * np.sin(2 * np.pi * 220 * t), 0.6 * np.sin(2 * np.pi * 330 * t)
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.stack([left, right], 1) * 32767).round().astype("<i2").tobytes())
    np.testing.assert_allclose(gio.read_audio(tmp_path / "stereo.wav"), (left + right) / 2, atol=2e-4)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make install adds it)")
def test_speak_says_text(flame_animator, speaker, pipeline_fixture, tmp_path):
    summary = commands.speak(pipeline_fixture / "source", tmp_path / "text.mp4", flame_animator, speaker,
                             gio.read_speech(text="Hello there."), workdir=tmp_path / "work")
    video_s, audio_s = streams(summary.out)
    assert summary.n_frames > 10 and abs(video_s - audio_s) <= 1 / 25 + 1e-3


def _cli(monkeypatch, speaker, *args):
    monkeypatch.setattr(Speaker, "load", classmethod(lambda cls, *a, **k: speaker))
    return CliRunner().invoke(app, ["speak", *map(str, args)])


def test_the_bundled_head_is_refused_in_one_line(monkeypatch, speaker, tmp_path):
    wav = gio.write_wav(tmp_path / "voice.wav", speech(1.0))
    result = _cli(monkeypatch, speaker, "--source", bundled(DEMO_DATA) / "source", "--audio", wav,
                  "--out", tmp_path / "talk.mp4")
    assert result.exit_code == 1 and result.output.count("error:") == 1 and "drives FLAME" in result.output
    assert not (tmp_path / "talk.mp4").exists()


@pytest.mark.parametrize("content, words", [(b"", "empty"), (b"not a sound at all\n", "cannot be read as audio")])
def test_bad_audio_is_one_line(monkeypatch, speaker, tmp_path, content, words):
    (tmp_path / "bad.wav").write_bytes(content)
    result = _cli(monkeypatch, speaker, "--source", bundled(DEMO_DATA) / "source", "--audio", tmp_path / "bad.wav",
                  "--out", tmp_path / "talk.mp4")
    assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_without_the_speech_model_a_flame_avatar_is_told_where_to_get_it(flame_animator, pipeline_fixture,
                                                                         tmp_path):
    """No --speech-model: the bundled voice speaks the bundled head only; with FLAME, one line."""
    checkpoint = save(flame_animator.model, tmp_path / "flame.safetensors")
    voice = gio.write_wav(tmp_path / "voice.wav", speech(1.0))
    result = CliRunner().invoke(app, ["speak", "--source", str(pipeline_fixture / "source"), "--audio", str(voice),
                                      "--out", str(tmp_path / "t.mp4"), "--checkpoint", str(checkpoint),
                                      "--head-model", str(REFERENCE / "pipeline_fixture" / "FLAME_with_eye.pt")])
    assert result.exit_code == 1 and "ARTalk_wav2vec.pt" in result.output and "github.com/xg-chu/ARTalk" in result.output
    assert not (tmp_path / "t.mp4").exists()




def test_only_the_bundled_voice_is_called_so(tmp_path):
    """The notice about the demonstration voice is for that file, not for a voice train-speech made
    on the same preset and head."""
    import shutil

    from gagavatar.reenact import Speaker, bundled
    from gagavatar.reenact.speaker import BUNDLED_VOICE

    assert Speaker.load().is_bundled
    own = shutil.copy(bundled(BUNDLED_VOICE), tmp_path / "my_voice.safetensors")
    assert not Speaker.load(own).is_bundled
