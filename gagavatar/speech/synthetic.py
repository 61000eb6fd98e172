"""Synthetic talking data for the bundled head: espeak-ng speaks generated sentences, and its
phoneme timings become lip motion on the head's named expressions.

Each phoneme maps to a viseme: a target pose of the mouth (``mouth_open``, ``pucker``,
``lip_press``, ... and the jaw) with a dominance (how strongly the phoneme insists on
it: a "p" must close the lips, an "h" takes whatever its neighbours do). The mouth at
time t is the dominance-weighted mean of the nearby targets, each dominance falling off
with the distance to its phoneme's centre: coarticulation in the manner of Cohen and
Massaro's model. The lips lead the sound a little (30-70 ms), as real lips do. On top:
blinks every few seconds, brows and nods that follow the loudness, a slow wandering head.

    clip = speech_clip(rng, voice=("en-us", "f2"), sentences=["Hello there."])
    clip.audio   # [N] 16 kHz        clip.motion  # [F, 23] at 25 fps: 17 expressions | rotation | jaw

Voices (language x variant) and sentences are split so a held-out set has voices and
sentences the training set never heard (``split_voices``, ``sentence``).
"""
from __future__ import annotations

import numpy as np

from gagavatar.synthetic.basis_names import EXPRESSIONS

FPS = 25
SAMPLE_RATE = 16_000
LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2")
HELD_OUT_VARIANTS = ("m6", "f4")    # never in training: the held-out voices
HELD_OUT_LANGUAGES = ("en-029",)

# Viseme targets: named expression (1 = full) or "jaw" (radians, opening) -> value; and the dominance.
VISEMES: dict[str, tuple[dict[str, float], float]] = {
    "rest": ({}, 0.5),
    "PBM": ({"lip_press": 0.9, "jaw": 0.015}, 1.0),
    "FV": ({"upper_lip_raise": 0.35, "lip_press": 0.35, "lower_lip_down": -0.2, "jaw": 0.03}, 0.9),
    "TH": ({"mouth_open": 0.15, "mouth_stretch": 0.2, "jaw": 0.06}, 0.6),
    "TDNL": ({"mouth_open": 0.15, "mouth_stretch": 0.2, "jaw": 0.06}, 0.45),
    "SZ": ({"mouth_stretch": 0.45, "smile": 0.15, "jaw": 0.035}, 0.7),
    "SH": ({"pucker": 0.55, "upper_lip_raise": 0.2, "jaw": 0.05}, 0.8),
    "KG": ({"mouth_open": 0.2, "jaw": 0.09}, 0.3),
    "R": ({"pucker": 0.35, "jaw": 0.05}, 0.5),
    "W": ({"pucker": 0.95, "jaw": 0.035}, 0.9),
    "Y": ({"mouth_stretch": 0.4, "jaw": 0.05}, 0.5),
    "AA": ({"mouth_open": 0.55, "lower_lip_down": 0.25, "jaw": 0.22}, 0.7),
    "EH": ({"mouth_open": 0.3, "mouth_stretch": 0.25, "jaw": 0.13}, 0.5),
    "SCHWA": ({"mouth_open": 0.2, "jaw": 0.09}, 0.3),
    "IY": ({"mouth_stretch": 0.6, "smile": 0.25, "jaw": 0.06}, 0.6),
    "OH": ({"pucker": 0.55, "mouth_open": 0.3, "jaw": 0.17}, 0.7),
    "UW": ({"pucker": 0.85, "jaw": 0.07}, 0.8),
}
# espeak-ng's English phoneme mnemonics, by leading characters (longest first wins)
_PHONEME_VISEMES = {
    "p": "PBM", "b": "PBM", "m": "PBM", "f": "FV", "v": "FV", "T": "TH", "D": "TH",
    "t": "TDNL", "d": "TDNL", "n": "TDNL", "l": "TDNL", "s": "SZ", "z": "SZ",
    "S": "SH", "Z": "SH", "tS": "SH", "dZ": "SH", "k": "KG", "g": "KG", "N": "KG", "h": "KG", "x": "KG", "?": "KG",
    "r": "R", "w": "W", "j": "Y",
    "a": "AA", "A": "AA", "aI": "AA", "aU": "AA", "V": "AA",
    "E": "EH", "e": "EH", "eI": "EH", "e@": "EH", "3": "EH", "3:": "EH", "@": "SCHWA",
    "i": "IY", "I": "IY", "i:": "IY", "I@": "IY",
    "0": "OH", "O": "OH", "O:": "OH", "o": "OH", "oU": "OH", "OI": "OH", "O@": "OH",
    "u": "UW", "u:": "UW", "U": "UW", "U@": "UW",
}
_DIMS = (*EXPRESSIONS, "jaw")


def viseme(phoneme: str) -> str | None:
    """The viseme of an espeak mnemonic ("oU" -> "OH"); pauses ("_", "_:") rest; None for a
    marker that is no sound of its own (";", palatalisation)."""
    for length in (2, 1):
        if phoneme[:length] in _PHONEME_VISEMES:
            return _PHONEME_VISEMES[phoneme[:length]]
    return "rest" if phoneme.startswith("_") or phoneme[:1].isalnum() else None


def _target(name: str) -> np.ndarray:
    values, _ = VISEMES[name]
    return np.array([values.get(d, 0.0) for d in _DIMS], np.float32)


def mouth_curves(phonemes: list[tuple[str, float]], duration: float, fps: float = FPS, lead: float = 0.05,
                 articulation: float = 1.0) -> np.ndarray:
    """Coarticulated mouth [F, 18] (17 named expressions, jaw opening) for timed phonemes
    (mnemonic, start s) of speech lasting ``duration`` s; F = ceil(duration x fps).

    Each phoneme's target weighs in with dominance d exp(-((t - centre) / width)^2 / 2),
    width = 0.6 x half its length + 35 ms; a weak rest target fills the gaps.
    ``lead``: the mouth moves this many seconds before the sound; ``articulation``
    scales the targets (a mumbler below 1)."""
    F = int(np.ceil(duration * fps))
    t = np.arange(F) / fps + lead
    starts = [s for _, s in phonemes] + [duration]
    total = np.full((F, 1), 0.05, np.float32)
    mouth = np.zeros((F, len(_DIMS)), np.float32)
    for (name, start), end in zip(phonemes, starts[1:]):
        kind = viseme(name)
        if kind is None:
            continue
        half = max(end - start, 0.02) / 2
        weight = VISEMES[kind][1] * np.exp(-0.5 * ((t - start - half) / (0.6 * half + 0.035)) ** 2)[:, None]
        mouth += weight * _target(kind)
        total += weight
    return mouth / total * articulation


def _smooth_noise(rng: np.random.Generator, frames: int, fps: float, period: float) -> np.ndarray:
    """Smooth random curve [frames], unit-ish amplitude, varying over ``period`` seconds."""
    knots = rng.normal(0, 1, int(frames / (period * fps)) + 3)
    return np.interp(np.arange(frames) / (period * fps), np.arange(len(knots)), knots).astype(np.float32)


def face_motion(mouth: np.ndarray, level: np.ndarray, rng: np.random.Generator, fps: float = FPS) -> np.ndarray:
    """The whole motion [F, 23]: mouth [F, 18] from ``mouth_curves``, loudness [F] 0..1 ->
    17 expressions (blinks, brows with emphasis, a slow smile) | head rotation (axis-angle:
    nods with the loudness, a wandering yaw and roll) | jaw pose (opening about x)."""
    F = len(mouth)
    motion = np.zeros((F, len(EXPRESSIONS) + 6), np.float32)
    motion[:, :len(EXPRESSIONS)] = mouth[:, :len(EXPRESSIONS)]
    index = {name: i for i, name in enumerate(EXPRESSIONS)}
    blink, t = np.zeros(F, np.float32), rng.uniform(0.3, 2.5) * fps
    while t < F:
        blink = np.maximum(blink, np.exp(-0.5 * ((np.arange(F) - t) / (0.07 * fps)) ** 2))
        t += rng.uniform(1.5, 5.0) * fps
    motion[:, index["blink_left"]] = motion[:, index["blink_right"]] = blink
    emphasis = np.convolve(level, np.ones(5) / 5, "same")
    motion[:, index["brow_raise"]] = rng.uniform(0.1, 0.5) * emphasis
    motion[:, index["smile"]] += rng.uniform(0.0, 0.3) * (0.5 + 0.5 * _smooth_noise(rng, F, fps, 2.0))
    rotation = motion[:, len(EXPRESSIONS):len(EXPRESSIONS) + 3]
    rotation[:, 0] = rng.uniform(0.02, 0.06) * emphasis + 0.03 * _smooth_noise(rng, F, fps, 1.5)  # nods
    rotation[:, 1] = 0.06 * _smooth_noise(rng, F, fps, 2.5)                                         # yaw
    rotation[:, 2] = 0.025 * _smooth_noise(rng, F, fps, 3.0)                                        # roll
    motion[:, -3] = mouth[:, -1]  # jaw opening
    return motion


# ---------------------------------------------------------------------- sentences and voices
_WORDS = {
    "subject": ("the baker", "my brother", "a quiet child", "the old fisherman", "our teacher", "the pilot",
                "a tall woman", "the musician", "every farmer", "the young doctor", "her cousin", "the judge",
                "a busy waiter", "the captain", "my neighbour", "the poet", "a sleepy cat", "the gardener"),
    "verb": ("bought", "painted", "carried", "found", "pushed", "washed", "watched", "brought", "moved",
             "threw", "showed", "fixed", "measured", "chose", "borrowed", "opened", "juggled", "weighed"),
    "object": ("a blue umbrella", "the heavy box", "seven red apples", "a broken violin", "the wooden chair",
               "two purple feathers", "a map of Vienna", "the shiny kettle", "a jar of honey", "the old piano",
               "four paper boats", "a woolly sweater", "the thick book", "a bowl of soup", "the rusty bicycle",
               "five smooth pebbles", "a pair of shoes", "the yellow balloon"),
    "place": ("near the bridge", "in the morning", "before lunch", "at the market", "under the table",
              "beside the river", "through the window", "after the storm", "on a Thursday", "by the fountain",
              "during the show", "behind the church", "at midnight", "along the beach", "in the village"),
    "opener": ("Yesterday", "Frankly", "Luckily", "Of course", "Believe it or not", "Every summer", "Oh well",
               "Quite often", "Just now", "Without a word"),
}


def sentence(rng: np.random.Generator) -> str:
    """A generated sentence ("Luckily, the pilot weighed a jar of honey near the bridge."),
    or a question; about 10^7 of them, so a held-out set rarely meets a training sentence."""
    w = {k: v[rng.integers(len(v))] for k, v in _WORDS.items()}
    form = rng.integers(4)
    if form == 0:
        return f"{w['opener']}, {w['subject']} {w['verb']} {w['object']} {w['place']}."
    if form == 1:
        return f"Why {w['subject'].replace('the ', 'has the ', 1)} {w['verb']} {w['object']}?"
    if form == 2:
        return f"{w['subject'].capitalize()} {w['verb']} {w['object']}, and then {w['place']}."
    return f"{w['subject'].capitalize()} {w['verb']} {w['object']} {w['place']}."


def voices(held_out: bool) -> list[tuple[str, str]]:
    """(language, variant) pairs: the held-out ones (``HELD_OUT_VARIANTS`` or
    ``HELD_OUT_LANGUAGES``), or all the others (training)."""
    return [(lang, var) for lang in LANGUAGES for var in VARIANTS
            if (var in HELD_OUT_VARIANTS or lang in HELD_OUT_LANGUAGES) == held_out]


def speech_clip(rng: np.random.Generator, voice: tuple[str, str], sentences: list[str], clip_id: str = "clip"):
    """One clip: ``sentences`` spoken by ``voice`` at a random pace and pitch, with pauses, a
    random gain and faint noise -> ``SpeechClip`` (16 kHz audio, motion [F, 23] at 25 fps)."""
    from scipy.signal import resample_poly

    from gagavatar.speech.data import SpeechClip
    from gagavatar.speech.evaluate import loudness
    from gagavatar.synthetic.espeak import speak_phonemes

    wpm, pitch = int(rng.uniform(120, 210)), int(rng.uniform(25, 75))
    audio, phonemes, offset = [], [], 0.0
    for text in sentences:
        pause = rng.uniform(0.15, 0.6)
        spoken = speak_phonemes(text, f"{voice[0]}+{voice[1]}", wpm, pitch)
        samples = resample_poly(spoken.samples, SAMPLE_RATE, spoken.rate).astype(np.float32)
        audio += [np.zeros(int(pause * SAMPLE_RATE), np.float32), samples]
        offset += pause
        phonemes += [("_", offset - pause)] + [(p, offset + s) for p, s in spoken.phonemes]
        offset += len(samples) / SAMPLE_RATE
    audio.append(np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32))
    samples = np.concatenate(audio)
    samples = samples * rng.uniform(0.3, 1.0) / max(float(np.abs(samples).max()), 1e-6)
    samples += rng.normal(0, 10 ** rng.uniform(-4, -2.5), samples.shape).astype(np.float32)
    duration = len(samples) / SAMPLE_RATE
    mouth = mouth_curves(phonemes, duration, lead=rng.uniform(0.03, 0.07), articulation=rng.uniform(0.75, 1.25))
    level = loudness(samples, len(mouth), SAMPLE_RATE, FPS)
    motion = face_motion(mouth, level / max(float(level.max()), 1e-6), rng)
    return SpeechClip(id=clip_id, audio=samples.astype(np.float32), motion=motion, fps=float(FPS))


def speech_clips(count: int, held_out: bool = False, seed: int = 0, seconds: float = 10.0, progress=None) -> list:
    """``count`` clips of about ``seconds`` each, sentences added until long enough; training
    voices and sentences, or (``held_out``) the held-out voices and sentences from another
    seed stream (any that a training stream of the same seed would make are redrawn)."""
    rng = np.random.default_rng([seed, int(held_out)])
    pool = voices(held_out)
    train_sentences = set()
    if held_out:  # the training stream's sentences, to keep them out
        train_rng = np.random.default_rng([seed, 0, 1])
        train_sentences = {sentence(train_rng) for _ in range(20_000)}
    sentence_rng = np.random.default_rng([seed, int(held_out), 1])
    clips = []
    for i in range(count):
        texts, length = [], 0.0
        while length < seconds:
            text = sentence(sentence_rng)
            if text in train_sentences:
                continue
            texts.append(text)
            length += 0.075 * len(text)  # about 13 characters a second
        voice = pool[rng.integers(len(pool))]
        clips.append(speech_clip(rng, voice, texts, f"{'heldout' if held_out else 'train'}-{i:04d}-{voice[0]}+{voice[1]}"))
        if progress is not None:
            progress(i + 1, count)
    return clips


def write_speech_clips(out, count: int = 240, held_out: int = 40, seconds: float = 10.0, seed: int = 0) -> list:
    """``out``/train.npz and heldout.npz (``speech.data.save_clips``), sample.wav (the first
    held-out clip) and sample.png (its waveform and mouth curves). Returns the paths."""
    from pathlib import Path

    from tqdm import tqdm

    from gagavatar.io import check_writable, write_wav
    from gagavatar.speech.data import save_clips

    out = Path(out)
    check_writable(out / "train.npz")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, n, held in (("train", count, False), ("heldout", held_out, True)):
        with tqdm(total=n, desc=f"synth-speech {name}", dynamic_ncols=True) as bar:
            clips = speech_clips(n, held, seed, seconds, progress=lambda i, total: bar.update(1))
        written.append(save_clips(out / f"{name}.npz", clips))
    written.append(write_wav(out / "sample.wav", clips[0].audio, SAMPLE_RATE))
    written.append(plot_clip(clips[0], out / "sample.png"))
    return written


def plot_clip(clip, path) -> object:
    """The waveform and the mouth's main curves of one clip, one above the other (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_audio = np.arange(len(clip.audio)) / SAMPLE_RATE
    t = np.arange(len(clip.motion)) / clip.fps
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4), sharex=True)
    top.plot(t_audio, clip.audio, lw=0.3, color="0.3")
    top.set_title(f"{clip.id}: speech and the mouth it drives"), top.set_ylabel("waveform")
    for name in ("mouth_open", "lip_press", "pucker", "mouth_stretch"):
        bottom.plot(t, clip.motion[:, EXPRESSIONS.index(name)], lw=1, label=name)
    bottom.plot(t, clip.motion[:, -3] * 4, lw=1, label="jaw x4 (rad)")
    bottom.set_xlabel("seconds"), bottom.legend(fontsize=7, ncol=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
