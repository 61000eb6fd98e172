"""``gagavatar bench speech``: speech -> motion on this machine, in seconds of compute per
second of audio (goal: at most 1, so a reply is ready as fast as it is spoken)."""
from __future__ import annotations

import time

import typer

from gagavatar.bench.tables import PeakMemory, Table, show


def speech(seconds: float = typer.Option(8.0, help="seconds of speech (two 4 s chunks by default)"),
           preset: str = typer.Option("paper", help="speech model preset (paper: the released configuration)"),
           audio: str = typer.Option(None, help="a speech file (default: ../shared/realdata/speech/eng1.wav, "
                                                "else a synthetic voiced signal)"),
           threads: int = typer.Option(0, help="torch CPU threads (0: half the usable cores, 1 to 4)"),
           repeat: int = typer.Option(1, help="timed runs (the fastest is reported)")):
    """Speech model speed and memory: audio encoder, generator + codec, and the whole, per second
    of audio. The weights are random (their values do not change the work); the released
    file's loading time is not included."""
    from pathlib import Path

    import numpy as np
    import torch

    from gagavatar import io as gio
    from gagavatar.speech.config import preset_config
    from gagavatar.speech.generator import SpeechModel
    from gagavatar.system import set_torch_threads

    n_threads = set_torch_threads(threads)
    default = Path("../shared/realdata/speech/eng1.wav")
    path = Path(audio) if audio else default if default.is_file() else None
    rate = preset_config(preset).sample_rate
    if path is not None:
        samples, where = gio.read_audio(path, rate), path.name
    else:
        t = np.arange(int(seconds * rate)) / rate
        samples, where = (0.3 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(8 * np.pi * t))), "synthetic"
    samples = torch.as_tensor(np.resize(np.asarray(samples, np.float32), int(seconds * rate)))
    t0 = time.perf_counter()
    with PeakMemory("cpu") as build_memory:
        model = SpeechModel(preset_config(preset)).eval()
    build_s = time.perf_counter() - t0
    best = None
    with torch.no_grad(), PeakMemory("cpu") as run_memory:
        for _ in range(repeat):
            t0 = time.perf_counter()
            features, frames = model.encode_audio(samples[None])
            t1 = time.perf_counter()
            model.motions_from_features(features, frames)
            t2 = time.perf_counter()
            if best is None or t2 - t0 < best[2]:
                best = (t1 - t0, t2 - t1, t2 - t0)
    rows = [[name, s, s / seconds] for name, s in zip(("audio encoder (wav2vec 2.0)", "generator + motion codec",
                                                        "speech -> motion"), best)]
    parameters = sum(p.numel() for p in model.parameters())
    return show(Table(f"speech -> motion, preset {preset} ({parameters / 1e6:.0f}M parameters, {seconds:g} s of "
                      f"{where}, {n_threads} torch threads; weights {build_memory.mib:.0f} MiB, built in "
                      f"{build_s:.0f} s; peak while running +{run_memory.mib:.0f} MiB)",
                      ["stage", "seconds", "seconds per second of audio"], rows))
