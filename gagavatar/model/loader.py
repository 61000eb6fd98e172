"""The one loader: any checkpoint in, a network out.

    load("run/")                      # a training run folder (its model.safetensors)
    load("tiny.safetensors")          # ours (config in the metadata)
    load("paper.safetensors")         # the release, converted by `gagavatar convert-official`
    load("GAGAvatar.pt")              # the released checkpoint itself
"""
from __future__ import annotations

from pathlib import Path

import torch

from gagavatar.known_files import check_release
from gagavatar.model.checkpoint import CheckpointError, is_gagavatar_checkpoint, load_gagavatar
from gagavatar.model.network import GAGAvatar
from gagavatar.model.official import load_official

MODEL_FILE = "model.safetensors"  # what a finished training run leaves in its folder
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a training run folder's ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        model = path / MODEL_FILE
        if not model.is_file():
            states = sorted(path.glob("step_*.pt"))
            hint = (f" (it holds training states such as {states[-1].name}: the run has not finished; "
                    f"finish it with `gagavatar train --resume`)") if states else ""
            raise FileNotFoundError(f"{path}: no {MODEL_FILE} in this run folder{hint}")
        return model
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load(path: str | Path, device="cpu", dtype: torch.dtype | None = None) -> GAGAvatar:
    """The network of any checkpoint (see the module docstring), on ``device``."""
    path = resolve_checkpoint(path)
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: not a checkpoint (expected .safetensors, or the released GAGAvatar.pt)")
    if is_gagavatar_checkpoint(path):
        return load_gagavatar(path, device=device, dtype=dtype)
    check_release(path)  # a file of the release's size but not its bytes is warned about
    return load_official(path, device=device, dtype=torch.float32 if dtype is None else dtype)
