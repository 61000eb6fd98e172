"""Personalising on a short clip: held-out frames are never trained on, the result is a checkpoint
like any other, held-out error goes down, and an interrupted run continues."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np

from gagavatar.data.pairs import PairDataset
from gagavatar.reenact import DEMO_DATA, Animator, bundled
from gagavatar.train.personalize import PersonalizeConfig, personalize

CLIP = bundled(DEMO_DATA) / "driver"  # a tracked 48-frame clip of a person the bundled model never saw


def test_held_out_frames_are_never_sampled():
    pairs = PairDataset(bundled(DEMO_DATA), split="test", frames=(0, 41), length=2000, seed=3)
    seen = np.array([pairs.pair(i)[k][1] for i in range(len(pairs)) for k in (0, 1)])
    assert seen.max() == 40 and seen.min() == 0  # sources and targets cover the training frames, nothing after


def test_personalize_a_few_steps(tmp_path):
    lines = []
    report = personalize(PersonalizeConfig(video=str(CLIP), out=str(tmp_path / "person.safetensors"), steps=12,
                                           batch_size=2, checkpoint_every=6), say=lines.append)
    assert report["train_frames"] == [0, 41] and report["heldout_frames"] == [41, 47] and report["steps"] == 12
    assert report["heldout_psnr_after"] > report["heldout_psnr_before"] + 0.3  # the held-out error went down
    written = json.loads((tmp_path / "person.json").read_text())
    assert written["heldout_psnr_after"] == report["heldout_psnr_after"]
    assert (tmp_path / "person.png").is_file() and any("held-out PSNR" in line for line in lines)
    # a checkpoint like any other: it loads, renders, and says what it was made from
    from gagavatar.model.checkpoint import checkpoint_info

    animator = Animator.load(tmp_path / "person.safetensors", device="cpu")
    from gagavatar.data import Dataset

    video = Dataset(bundled(DEMO_DATA)).video("driver")
    image = next(animator.render(animator.reconstruct(video), video.frames(45)))
    assert image.shape == (128, 128, 3) and image.std() > 5
    assert checkpoint_info(tmp_path / "person.safetensors")["personalized"]["train_frames"] == [0, 41]


def test_an_interrupted_run_continues(tmp_path):
    out = tmp_path / "person.safetensors"
    code = (f"from gagavatar.train.personalize import PersonalizeConfig, personalize; "
            f"personalize(PersonalizeConfig(video={str(CLIP)!r}, out={str(out)!r}, steps=40, batch_size=2, "
            f"checkpoint_every=4))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob("person.work/run-*/step_000008.pt")) and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    run, = tmp_path.glob("person.work/run-*")  # the run of this video, base and settings
    assert list(run.glob("step_*.pt")) and not out.exists(), "the run was not interrupted mid-training"
    resumed_from = max(int(p.stem[5:]) for p in run.glob("step_*.pt"))
    lines = []
    report = personalize(PersonalizeConfig(video=str(CLIP), out=str(out), steps=40, batch_size=2, checkpoint_every=4),
                         say=lines.append)
    assert any("continuing" in line for line in lines) and report["steps"] == 40
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no step twice: it went on from step {resumed_from}
    assert resumed_from >= 8
