"""Sound in: any audio or video file decoded by the bundled ffmpeg to mono float samples at
16 kHz (what speech models take), text spoken offline by espeak-ng; and a WAV writer.
Silence is valid audio; a file with no sound in it, or none at all, is one line."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from gagavatar.errors import InputError, NoSoundError
from gagavatar.io.ffmpeg import ffmpeg_error, ffmpeg_exe

SPEECH_RATE = 16000  # samples per second (wav2vec 2.0's input)
SOUND_RATE = 48000  # the sound tracks written from a recording: its own quality (speech models hear 16 kHz)
AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac", ".webm")


def read_audio(path: str | Path, rate: int = SPEECH_RATE, channels: int = 1) -> np.ndarray:
    """The sound of an audio or video file as mono float32 samples [N] in [-1, 1] at ``rate``
    (channels mixed with weights that sum to 1, so stereo is averaged; resampled by ffmpeg), or
    with ``channels`` > 1 [N, channels] (mono is copied to each, more channels mixed down).
    Sample 0 is the file's time 0, the time of a video's first decoded frame: a sound track that
    starts late begins with silence, so the sound stays in step with the frames.
    ``NoSoundError`` when there is no sound."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; give a recording (wav, mp3, m4a, flac)")
    # aresample first_pts=0: silence before a sound track that starts after time 0 (and gaps filled);
    # rematrix_maxval=1: ffmpeg's float downmix to mono otherwise sums stereo at 1/sqrt(2) each (3 dB
    # louder than either channel, peaks over 1) and 5.1 louder still
    result = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-vn", "-map", "0:a:0",
                             "-ac", str(channels), "-ar", str(rate),
                             "-af", "aresample=async=1:first_pts=0:rematrix_maxval=1", "-f", "f32le", "-"],
                            capture_output=True)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        if "matches no streams" in stderr:  # ffmpeg's own words: the file has no audio stream
            raise NoSoundError(f"{path}: has no sound track; give a recording (wav, mp3, m4a, flac) or a "
                               f"video with sound")
        raise InputError(f"{path}: cannot be read as audio ({ffmpeg_error(stderr)}); convert it, e.g. "
                         f"ffmpeg -i IN -ac 1 -ar 16000 OUT.wav")
    samples = np.frombuffer(result.stdout, np.float32).copy()
    if channels > 1:
        samples = samples.reshape(-1, channels)
    if samples.size == 0:
        raise NoSoundError(f"{path}: the sound track is empty; give a recording with some sound in it")
    return samples


def speak_text(text: str, rate: int = SPEECH_RATE, voice: str = "en-us", words_per_minute: int = 160) -> np.ndarray:
    """``text`` spoken by espeak-ng (offline), as mono float32 samples [N] at ``rate``."""
    if not text.strip():
        raise InputError("the text is empty: give some words to speak (--text \"Hello there\")")
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise InputError("speaking text needs espeak-ng, which is not installed: apt-get install espeak-ng "
                         "(make install does it), or give a recording with --audio")
    with tempfile.TemporaryDirectory(prefix="gagavatar-tts-") as tmp:
        wav = Path(tmp) / "speech.wav"
        result = subprocess.run([binary, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), "--", text],
                                capture_output=True, text=True)
        if result.returncode != 0 or not wav.is_file():
            raise InputError(f"espeak-ng could not speak the text ({result.stderr.strip() or 'no message'}); "
                             f"check the voice name ({voice!r}: espeak-ng --voices lists them)")
        return read_audio(wav, rate)


def read_speech(audio=None, text: str | None = None, rate: int = SPEECH_RATE) -> np.ndarray:
    """The speech a command is given, as mono float32 samples [N] at ``rate``: a sound or video
    file (``audio``) or words spoken by espeak-ng (``text``), exactly one of them."""
    if (audio is None) == (text is None):
        raise InputError("give the speech as --audio FILE or --text \"...\" (one of them)")
    return speak_text(text, rate) if text is not None else read_audio(audio, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SPEECH_RATE) -> Path:
    """Float samples in [-1, 1], mono [N] or [N, channels], as a 16-bit PCM WAV file."""
    pcm = (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        f.setsampwidth(2)
        f.setframerate(int(rate))
        f.writeframes(pcm.tobytes())
    return Path(path)
