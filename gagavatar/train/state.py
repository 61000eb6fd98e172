"""Training state on disk: atomic checkpoints, keep-last-K, exact resume.

A checkpoint ``step_000500.pt`` holds the model and optimizer/scheduler state,
the step, and every RNG state, written to a temporary file and renamed, so a
run killed at any moment leaves either the old or the new file, never half of
one. ``latest_checkpoint`` finds the newest complete one.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from gagavatar.io import atomic_path

_PATTERN = re.compile(r"step_(\d+)\.pt$")


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save to ``path`` atomically (``gagavatar.io.atomic_path``)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array travels as a tensor so the file loads with weights_only=True
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step_*.pt") if (m := _PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def save_training_state(folder: str | Path, step: int, model, optimizer, scheduler, extra: dict | None = None,
                        keep_last: int = 3) -> Path:
    """Write ``folder/step_XXXXXX.pt`` atomically, then delete all but the newest ``keep_last``."""
    path = atomic_save({
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "extra": extra or {},
    }, Path(folder) / f"step_{step:06d}.pt")
    for old in checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNG states; returns the checkpoint dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state
