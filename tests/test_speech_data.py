"""Talking-head datasets keep their sound (audio.wav, aligned to the frames), and the speech
data built on it: motion read back from tracked frames, clips, aligned windows, clip files."""
from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gagavatar.cli import app
from gagavatar.data import Dataset, DatasetError, default_params, update_index, write_video
from gagavatar.data.format import AUDIO_FILE, VIDEO_FILE, VideoRecord
from gagavatar.errors import InputError
from gagavatar.geometry import look_at, viewmat_to_reference
from gagavatar.io import ffmpeg_exe, read_audio, write_video as write_mp4
from gagavatar.speech.data import (SpeechClip, SpeechWindows, clips_from_dataset, load_clips, read_clips,
                                   resample_motion, save_clips)
from gagavatar.speech.postprocess import frames_motion, motion_frames

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "gagavatar" / "assets" / "demo" / "clips" / "driver"
RATE = 16000


def tone(seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * RATE))) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def tiny_video(root: Path, video_id: str, n_frames: int, fps: float = 25.0, audio=None, identity=None,
               split="train", seed=0):
    """A 16 px video whose head parameters move (expression, jaw, camera rotation)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n_frames, 16, 16, 3), dtype=np.uint8)
    p = default_params(n_frames, 16, 16, 10, 100)
    p["expression"] = rng.normal(0, 0.5, (n_frames, 100)).astype(np.float32)
    p["jaw_pose"][:, 0] = rng.uniform(0, 0.3, n_frames)
    eye = torch.from_numpy(rng.normal(0, 1, (n_frames, 3)).astype(np.float32)) + torch.tensor([0, 0, 9.0])
    p["transform"] = viewmat_to_reference(look_at(eye)).numpy()
    return write_video(root, video_id, frames, np.full((n_frames, 16, 16), 255, np.uint8), p,
                       identity=identity or video_id, split=split, fps=fps, audio=audio)


# ------------------------------------------------------------------ the dataset format


def test_sound_is_written_and_read_back(tmp_path):
    sound = tone(6 / 25)
    tiny_video(tmp_path, "talk", 6, audio=sound)
    tiny_video(tmp_path, "silent", 6)
    update_index(tmp_path)
    ds = Dataset(tmp_path)
    talk, silent = ds.video("talk"), ds.video("silent")
    assert talk.info.audio and not silent.info.audio
    assert json.loads((talk.folder / VIDEO_FILE).read_text())["audio"] is True
    got = talk.audio()
    assert got.dtype == np.float32 and got.shape == (6 * 640,)
    np.testing.assert_allclose(got, sound, atol=1.0 / 32767 + 1e-6)  # PCM16
    assert silent.audio() is None and not (silent.folder / AUDIO_FILE).exists()


def test_sound_must_fit_the_frames(tmp_path):
    with pytest.raises(DatasetError, match="fit_to_frames"):
        tiny_video(tmp_path, "talk", 6, audio=tone(1.0))


def test_older_and_damaged_entries(tmp_path):
    tiny_video(tmp_path, "talk", 4, audio=tone(4 / 25))
    entry = json.loads((tmp_path / "talk" / VIDEO_FILE).read_text())
    del entry["audio"]  # a dataset written before sound was kept
    (tmp_path / "talk" / VIDEO_FILE).write_text(json.dumps(entry))
    assert VideoRecord.open(tmp_path / "talk").audio() is None
    (tmp_path / "talk" / VIDEO_FILE).write_text(json.dumps(entry | {"audio": "yes"}))
    with pytest.raises(DatasetError, match="audio='yes'"):
        VideoRecord.open(tmp_path / "talk")
    (tmp_path / "talk" / VIDEO_FILE).write_text(json.dumps(entry | {"audio": True}))
    (tmp_path / "talk" / AUDIO_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="audio.wav"):
        VideoRecord.open(tmp_path / "talk").audio()


def _mp4(path: Path, frames, sound=None, sound_delay: float = 0.0) -> Path:
    """An mp4 of ``frames`` with the project's writer; ``sound_delay``: its sound track starts late."""
    write_mp4(path, frames, 25.0, audio=sound)
    if sound_delay:
        late = path.with_name("late_" + path.name)
        subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-i", str(path), "-itsoffset", str(sound_delay), "-i",
                        str(path), "-map", "0:v", "-map", "1:a", "-c", "copy", str(late)], check=True)
        late.replace(path)
    return path


def test_build_dataset_keeps_the_sound(tmp_path):
    """Faces MediaPipe finds (the demo's), with a 440 Hz tone, without sound, and with a sound
    track that starts 0.12 s late (silence first, so it stays in step with the frames)."""
    frames = [iio.imread(DEMO / "frames" / f"{i:06d}.png") for i in range(8)]
    clips = tmp_path / "clips"
    clips.mkdir()
    sound = tone(8 / 25)
    _mp4(clips / "talk.mp4", frames, sound)
    _mp4(clips / "mute.mp4", frames)
    _mp4(clips / "late.mp4", frames, sound, sound_delay=0.12)
    result = CliRunner().invoke(app, ["build-dataset", str(clips), "--out", str(tmp_path / "ds"), "--workers", "0",
                                      "--size", "64", "--no-overlay"])
    assert result.exit_code == 0, result.output
    ds = Dataset(tmp_path / "ds")
    talk, mute, late = ds.video("talk"), ds.video("mute"), ds.video("late")
    assert talk.n_frames == 8 and talk.info.audio and not mute.info.audio and mute.audio() is None
    got = talk.audio()
    assert len(got) == 8 * 640  # exactly the frames' time
    spectrum = np.abs(np.fft.rfft(got[640:-640]))
    assert abs(np.argmax(spectrum) * RATE / (len(got) - 1280) - 440) < 10
    assert abs(np.sqrt(np.mean(got[640:-640] ** 2)) - 0.5 / math.sqrt(2)) < 0.03  # AAC keeps the level
    delayed = late.audio()
    assert len(delayed) == 8 * 640
    assert np.abs(delayed[:int(0.10 * RATE)]).max() < 0.02 and np.abs(delayed[int(0.14 * RATE):]).max() > 0.3
    clips_read = clips_from_dataset(tmp_path / "ds")  # the speech loader: videos with sound only
    assert sorted(c.id for c in clips_read) == ["late", "talk"]


def test_track_cuts_the_sound_to_the_frames_it_keeps(tmp_path):
    from gagavatar.tracking.tracker import track

    frames = [iio.imread(DEMO / "frames" / f"{i:06d}.png") for i in range(6)]
    video = _mp4(tmp_path / "talk.mp4", frames, tone(6 / 25))
    summary = track(video, tmp_path / "out", size=64, max_frames=4, progress=False)
    record = VideoRecord.open(summary.video_dir)
    assert record.n_frames == 4 and record.audio().shape == (4 * 640,)
    heard = read_audio(summary.overlay)  # the overlay says it too, to hear the lips' fit against
    assert abs(len(heard) - 4 * 640) <= 640 and np.abs(heard).max() > 0.25


# ------------------------------------------------------------------ motion <-> frames


@pytest.mark.parametrize("dims", [100, 17])
def test_motion_frames_round_trip(dims):
    source = VideoRecord.open(DEMO).frames()[0]
    motion = torch.randn(20, dims + 6, generator=torch.Generator().manual_seed(0)) * 0.3
    back = frames_motion(motion_frames(motion, source), dims)
    torch.testing.assert_close(back, motion, atol=2e-6, rtol=0)


def test_tracked_frames_to_motion_and_back():
    """A tracked video's motion drives the same camera rotation, expression and jaw."""
    frames = VideoRecord.open(DEMO).frames()
    motion = frames_motion(frames)
    assert motion.shape == (len(frames), 106)
    again = motion_frames(motion, frames[0])
    torch.testing.assert_close(again.camera.to_reference()[:, :, :3], frames.camera.to_reference()[:, :, :3],
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(again.expression, frames.expression)
    torch.testing.assert_close(again.jaw_pose, frames.jaw_pose)


def test_global_pose_is_folded_into_the_head_rotation():
    """A frame with a global pose and a frontal camera = the same head turned by the camera."""
    source = VideoRecord.open(DEMO).frames()[0]
    turn = torch.tensor([[0.1, -0.3, 0.05]])
    turned = source.replace(global_pose=turn)
    rotation = frames_motion(turned)[:, 100:103]
    expected = frames_motion(motion_frames(torch.cat([torch.zeros(1, 100), rotation, torch.zeros(1, 3)], 1), source))
    torch.testing.assert_close(expected[:, 100:103], rotation, atol=1e-6, rtol=0)
    assert not torch.allclose(rotation, frames_motion(source)[:, 100:103], atol=1e-3)


# ------------------------------------------------------------------ clips and windows


def test_clips_from_dataset(tmp_path, caplog):
    tiny_video(tmp_path, "talk", 10, audio=tone(10 / 25))
    tiny_video(tmp_path, "fast", 20, fps=50.0, audio=tone(20 / 50), seed=1)
    tiny_video(tmp_path, "silent", 10, seed=2)
    tiny_video(tmp_path, "held", 10, audio=tone(10 / 25), split="test", seed=3)
    update_index(tmp_path)
    with caplog.at_level(logging.WARNING):
        clips = {c.id: c for c in clips_from_dataset(tmp_path, "train", expression_dims=50)}
    assert sorted(clips) == ["fast", "talk"] and "1 of 3 videos have no sound" in caplog.text
    talk = clips["talk"]
    assert talk.motion.shape == (10, 56) and talk.motion.dtype == np.float32 and talk.fps == 25.0
    video = Dataset(tmp_path).video("talk")
    np.testing.assert_allclose(talk.motion[:, :50], video.params["expression"][:, :50])
    np.testing.assert_allclose(talk.motion[:, 53:], video.params["jaw_pose"])
    fast = clips["fast"]
    assert fast.motion.shape == (10, 56) and len(fast.audio) == 20 * 320  # 0.4 s: 10 frames at 25 fps
    np.testing.assert_allclose(fast.motion[:, 53], Dataset(tmp_path).video("fast").params["jaw_pose"][::2, 0],
                               atol=1e-6)  # 25 fps frame t = 50 fps frame 2t
    silent_only = tmp_path / "silent_only"
    shutil.copytree(tmp_path / "silent", silent_only / "silent")
    update_index(silent_only)
    with pytest.raises(InputError, match="none of its 1 videos has sound"):
        clips_from_dataset(silent_only)


def test_resample_motion_is_linear_in_time():
    t = np.arange(50) / 50.0
    motion = np.stack([t, 2 * t + 1], 1).astype(np.float32)
    out = resample_motion(motion, 50.0)
    assert out.shape == (25, 2)
    np.testing.assert_allclose(out[:, 0], np.arange(25) / 25.0, atol=1e-6)
    up = resample_motion(motion[::2], 25.0, 50.0)  # and up: between frames, interpolated
    np.testing.assert_allclose(up[:-1, 0], t[:-1], atol=1e-6)


def counting_clip(clip_id: str, n_frames: int, start: int = 0) -> SpeechClip:
    """Sound whose every sample says which frame it belongs to, and motion that says the same."""
    frame_of_sample = start + np.arange(n_frames * 640) // 640
    motion = np.repeat((start + np.arange(n_frames, dtype=np.float32))[:, None], 3, 1)
    return SpeechClip(clip_id, frame_of_sample.astype(np.float32), motion)


def test_windows_are_aligned_and_reproducible():
    clips = [counting_clip("a", 30), counting_clip("b", 12, start=1000), counting_clip("short", 4)]
    windows = SpeechWindows(clips, window_frames=8, seed=3, windows_per_epoch=40)
    assert len(windows) == 40 and [c.id for c in windows.clips] == ["a", "b"]  # "short" holds no window
    seen = set()
    for i in range(len(windows)):
        audio, motion = windows[i]
        assert audio.shape == (8 * 640,) and motion.shape == (8, 3) and audio.dtype == torch.float32
        torch.testing.assert_close(audio[::640], motion[:, 0])  # sample 0 of each frame = that frame
        torch.testing.assert_close(motion[:, 0], motion[0, 0] + torch.arange(8.0))
        seen.add(int(motion[0, 0]))
    assert min(seen) >= 0 and max(seen) <= 1000 + 12 - 8 and any(s >= 1000 for s in seen)
    again = SpeechWindows(clips, window_frames=8, seed=3, windows_per_epoch=40)
    torch.testing.assert_close(again[5][1], windows[5][1])
    again.set_epoch(1)
    assert any(not torch.equal(again[i][1], windows[i][1]) for i in range(10))
    loader = torch.utils.data.DataLoader(windows, batch_size=4)
    audio, motion = next(iter(loader))
    assert audio.shape == (4, 8 * 640) and motion.shape == (4, 8, 3)


def test_windows_refusals():
    with pytest.raises(InputError, match="no clip holds a window"):
        SpeechWindows([counting_clip("a", 5)], window_frames=8)
    odd = SpeechClip("odd", np.zeros(640 * 10, np.float32), np.zeros((10, 4), np.float32))
    with pytest.raises(InputError, match="different sizes"):
        SpeechWindows([counting_clip("a", 10), odd], window_frames=8)


def test_clips_file_round_trip(tmp_path):
    clips = [counting_clip("a", 10), counting_clip("b", 7, start=3)]
    path = save_clips(tmp_path / "clips.npz", clips)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.npz"]  # written atomically, nothing else left
    for loaded in (load_clips(path), read_clips(path)):
        assert [c.id for c in loaded] == ["a", "b"]
        for a, b in zip(clips, loaded):
            np.testing.assert_array_equal(a.audio, b.audio)
            np.testing.assert_array_equal(a.motion, b.motion)
            assert b.fps == 25.0
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a speech clips file"):
        load_clips(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="no such clips file"):
        read_clips(tmp_path / "missing")
