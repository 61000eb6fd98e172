"""Training state on disk: atomic checkpoints, keep-last-K, exact resume, the run folder.

A checkpoint ``step_000500.pt`` holds the model and optimizer/scheduler state,
the step, and every RNG state, written to a temporary file and renamed, so a
run killed at any moment leaves either the old or the new file, never half of
one. ``resume_checkpoint`` finds the newest one that reads back (a damaged one
is skipped, said in one line, and kept as ``step_XXXXXX.pt.corrupt``).

A run folder belongs to one run: ``RUN_MARKER`` says a trainer made it (``mark_run``,
``is_run``), ``run_files`` lists what a trainer wrote there, ``clear_run`` deletes exactly
that (``train --overwrite``, only in a marked folder), ``truncate_metrics`` drops the metric
rows after the step a run resumes from. A checkpoint whose weights hold NaN or Inf does not
read back (a diverged run): resume goes on from the one before.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from gagavatar.errors import NonFiniteError
from gagavatar.io import TensorFileError, atomic_path, check_finite, load_torch_file, remove_stale_temps

_PATTERN = re.compile(r"step_(\d+)\.pt$")
STATE_KEYS = ("step", "model", "optimizer", "scheduler", "rng")
CORRUPT_SUFFIX = ".corrupt"

# The file that says "a gagavatar training run made this folder": --overwrite deletes nothing elsewhere.
RUN_MARKER = "gagavatar_run.json"
# What a trainer writes in its run folder (globs; docs in gagavatar/train/trainer.py).
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", "loss.png", "step_*.pt",
             f"step_*.pt{CORRUPT_SUFFIX}", "samples/step_*.png", "tb/events.out.tfevents.*")


class _WriteErrors:
    """A file's ``write`` that remembers the first OSError: torch.save reports a failed write
    (a full disk, ENOSPC) only as "unexpected pos", a RuntimeError."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.file.flush()


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save to ``path`` atomically (``gagavatar.io.atomic_path``: a full disk is one
    line, "no space left on device ...", and the temporary file is removed)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is not None:
                raise out.error from None  # atomic_path words it
            raise
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
    """Checkpoints in ``folder``, oldest first."""
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


def read_training_state(path: str | Path) -> dict:
    """A checkpoint's contents (``weights_only=True``); ``TensorFileError`` (one line) when it
    is truncated, corrupt or not a training checkpoint."""
    state = load_torch_file(path)
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TensorFileError(Path(path), f"is not a training checkpoint (it lacks {', '.join(missing)})")
    try:
        check_finite(state["model"], path)
    except NonFiniteError:
        raise TensorFileError(Path(path), "holds NaN or Inf weights (the run had diverged)") from None
    return state


def restore_training_state(state: dict, model, optimizer, scheduler) -> None:
    """Model, optimizer, scheduler and RNG states from ``read_training_state``'s dict."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])


def resume_checkpoint(folder: str | Path, report=print) -> tuple[Path | None, dict | None, list[Path]]:
    """(path, contents) of the newest checkpoint in ``folder`` that reads back, and the newer
    ones that do not (each reported in one line through ``report``); (None, None, [...]) when
    none reads."""
    damaged = []
    for path in reversed(checkpoints(folder)):
        try:
            return path, read_training_state(path), damaged
        except TensorFileError as e:
            damaged.append(path)
            report(f"--resume: skipping {path}: it {e.reason}")
    return None, None, damaged


def set_aside(damaged: list[Path]) -> None:
    """Rename damaged checkpoints to ``step_XXXXXX.pt.corrupt``: kept for a look, but no longer
    counted as checkpoints (keep-last would otherwise keep them and delete new ones)."""
    for path in damaged:
        if path.exists():
            path.replace(path.with_name(path.name + CORRUPT_SUFFIX))


def mark_run(folder: str | Path) -> None:
    """Write ``RUN_MARKER`` in a run folder: this project's training run lives here."""
    with atomic_path(Path(folder) / RUN_MARKER) as tmp:
        tmp.write_text(json.dumps({"format": "gagavatar-training-run", "version": 1}) + "\n")


def is_run(folder: str | Path) -> bool:
    """``folder`` was made by a gagavatar training run (it holds ``RUN_MARKER``)."""
    return (Path(folder) / RUN_MARKER).is_file()


def run_files(folder: str | Path) -> list[Path]:
    """The files a trainer wrote in ``folder`` (``RUN_FILES``), sorted."""
    folder = Path(folder)
    return sorted({p for pattern in RUN_FILES for p in folder.glob(pattern) if p.is_file()}) if folder.is_dir() else []


def clear_run(folder: str | Path) -> list[Path]:
    """Delete what a trainer wrote in ``folder`` (``run_files`` and stale temporary files),
    and ``samples/`` and ``tb/`` when that leaves them empty; anything else stays. Returns
    the deleted files."""
    folder = Path(folder)
    removed = run_files(folder) + remove_stale_temps(folder)
    for path in removed:
        path.unlink(missing_ok=True)
    for sub in ("samples", "tb"):
        if (folder / sub).is_dir() and not any((folder / sub).iterdir()):
            shutil.rmtree(folder / sub)
    return removed


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the rows of ``metrics.jsonl`` up to ``step`` (the step a run resumes from; later
    rows were logged by the run that is being redone, a line cut short by a kill is dropped
    too), rewritten atomically. Returns the number of rows dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
            keep = isinstance(row, dict) and int(row.get("step", 0)) <= step
        except (json.JSONDecodeError, TypeError, ValueError):
            keep = not line.strip()
        if keep and line.strip():
            kept.append(line)
        dropped += not keep
    if dropped:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))
    return dropped
