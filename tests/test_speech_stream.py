"""The speech model as the audio arrives (``gagavatar.speech.stream``): whatever the pieces the
audio comes in, the motion is ``SpeechModel.generate`` on the whole audio, bit for bit, and the
smoothed motion is ``smooth_motion`` of it, bit for bit (the look-ahead across chunk ends held
back). A small model with random weights: the chunking is what is tested, not the weights."""
import numpy as np
import pytest
import torch

from gagavatar.speech.generator import SpeechModel
from gagavatar.speech.postprocess import smooth_motion
from gagavatar.speech.stream import SmoothStream, SpeechStream

from test_speak import SMALL, speech


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    torch.manual_seed(0)
    return SpeechModel(SMALL).eval()


def pieces(audio: np.ndarray, rng: np.random.Generator, largest: int) -> list[np.ndarray]:
    """The audio cut at random places (empty pieces included)."""
    cuts = np.sort(rng.integers(0, len(audio) + 1, size=max(1, len(audio) // largest * 2)))
    return np.split(audio, cuts)


def streamed(model, audio, style=None, fix_pose=False, largest=20_000, seed=0):
    """(motion, smoothed motion) the streams give out, and how many frames each push gave."""
    rng = np.random.default_rng(seed)
    stream, smoother = SpeechStream(model, style), SmoothStream(fix_pose)
    raw, smooth, counts = [], [], []
    for piece in pieces(audio, rng, largest):
        motion = stream.push(piece)
        counts.append(motion.shape[0])
        raw.append(motion)
        smooth.append(smoother.push(motion.float().cpu()))
    raw.append(stream.finish())
    smooth += [smoother.push(raw[-1].float().cpu()), smoother.finish()]
    return torch.cat(raw), torch.cat(smooth), counts


@pytest.mark.parametrize("seconds", [0.3, 1.0, 4.0, 4.0 + 1 / 16000, 4.04, 9.7])
def test_the_stream_is_generate_exactly(model, seconds):
    audio = speech(seconds)
    whole = model.generate(torch.from_numpy(audio))
    raw, smooth, counts = streamed(model, audio)
    assert raw.shape == whole.shape == (model.frame_count(len(audio)), SMALL.motion_dim)
    assert torch.equal(raw, whole)
    assert torch.equal(smooth, smooth_motion(whole.float()))
    assert set(counts) <= {0, 100, 200}  # a chunk's frames come when its last sample does


def test_a_style_and_a_still_head_stream_exactly(model):
    torch.manual_seed(1)
    style = torch.randn(50, SMALL.motion_dim) * 0.1
    audio = speech(8.5)
    whole = model.generate(torch.from_numpy(audio), style)
    raw, smooth, _ = streamed(model, audio, style, fix_pose=True, largest=3_000, seed=3)
    assert torch.equal(raw, whole)
    assert torch.equal(smooth, smooth_motion(whole.float(), fix_pose=True))


def test_frames_come_as_soon_as_they_are_final(model):
    """A chunk's motion comes out when its last sample arrives; its smoothed frames then, but
    for the last few, which wait for the next chunk's first frames (or the end)."""
    stream, smoother = SpeechStream(model), SmoothStream()
    chunk = SMALL.chunk_samples
    audio = speech(9.0)
    assert stream.push(audio[:chunk - 1]).shape[0] == 0
    first = stream.push(audio[chunk - 1:chunk + 10])
    assert first.shape[0] == 100 and smoother.push(first).shape[0] == 96
    second = stream.push(audio[chunk + 10:2 * chunk])
    assert second.shape[0] == 100 and smoother.push(second).shape[0] == 100
    rest = stream.finish()
    assert rest.shape[0] == model.frame_count(len(audio[:2 * chunk])) - 200 == 0
    assert smoother.push(rest).shape[0] == 0 and smoother.finish().shape[0] == 4


def test_misuse_is_one_line(model):
    stream = SpeechStream(model)
    with pytest.raises(ValueError, match="empty"):
        stream.finish()
    with pytest.raises(ValueError, match="finished"):
        stream.push(np.zeros(10, np.float32))


def test_the_speaker_stream_drives_the_avatar_as_speaker_drive_does(model):
    """Down to the frames the avatar is rendered from (the motion controls' state carried between
    pieces) and their vertices (the forehead's smoothing carried on), with the bundled head."""
    from gagavatar.data import Dataset
    from gagavatar.head import BUNDLED_HEAD_ID, load_head_model
    from gagavatar.reenact import DEMO_DATA, MotionControls, Speaker, bundled, source_frame
    from gagavatar.reenact.speaker_stream import SpeakerStream

    head = load_head_model(None)
    speaker = Speaker(SpeechModel(SMALL.replace(head=BUNDLED_HEAD_ID)).eval())
    speaker.model.load_state_dict(model.state_dict())
    video = Dataset(bundled(DEMO_DATA)).video("source")
    controls = MotionControls(expression_scale=1.5, stabilize=1.0)
    audio = speech(6.3)
    frames, vertices = speaker.drive(video, audio, head, controls)
    stream = SpeakerStream(speaker, video.frames(source_frame(video)), head, controls)
    out = [stream.push(p) for p in pieces(audio, np.random.default_rng(5), 30_000)] + [stream.finish()]
    out = [p for p in out if p is not None]
    assert len(out) >= 2 and stream.frames == len(frames)
    # the vertices to float32's rounding: the head's matrix products round by batch size
    torch.testing.assert_close(torch.cat([v for _, v in out]), vertices, atol=1e-6, rtol=0)
    for name in ("expression", "jaw_pose", "translation"):
        assert torch.equal(torch.cat([getattr(f, name) for f, _ in out]), getattr(frames, name))
    assert torch.equal(torch.cat([f.camera.viewmat for f, _ in out]), frames.camera.viewmat)
