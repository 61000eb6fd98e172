"""Our own checkpoints: one safetensors file, the model config as JSON metadata.

Keys are the network's parameter and buffer names; when the model carries the
released perceptual network (``model.perceptual_state``) its tensors are
stored too, under their reference names ``percep_loss.*``.
"""
from __future__ import annotations

import errno
from pathlib import Path

import torch

from gagavatar.io import atomic_path, read_safetensors_metadata, read_tensor_file
from gagavatar.model.config import ModelConfig
from gagavatar.model.official import PERCEPTUAL_PREFIX, CheckpointError, build_from_state

FORMAT = "gagavatar-model"
FORMAT_VERSION = "1"


def save(model, path: str | Path) -> Path:
    """Write ``model`` (a GAGAvatar) to ``path`` (.safetensors), atomically."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.perceptual_state:
        tensors.update({k: v.contiguous().cpu() for k, v in model.perceptual_state.items()})
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            if "os error 28" in str(e):  # ENOSPC, reported as text: atomic_path words a full disk
                raise OSError(errno.ENOSPC, str(e)) from None
            raise
    return Path(path)


def _metadata(path: Path) -> dict:
    return read_safetensors_metadata(path)  # a truncated or foreign file: one line, not a SafetensorError


def is_gagavatar_checkpoint(path: str | Path) -> bool:
    return _metadata(Path(path)).get("format") == FORMAT


def load(path: str | Path, device="cpu", dtype: torch.dtype | None = None):
    """A GAGAvatar from a checkpoint written by ``save`` (config from its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: gagavatar checkpoints are .safetensors files; for the released "
                              f"GAGAvatar.pt use gagavatar.model.load_official (or `gagavatar convert-official`)")
    meta = _metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gagavatar checkpoint (no '{FORMAT}' metadata); "
                              f"for the released weights use load_official")
    config = ModelConfig.from_json(meta["config"])
    tensors = read_tensor_file(path)
    perceptual = {k: v for k, v in tensors.items() if k.startswith(PERCEPTUAL_PREFIX)}
    network = {k: v for k, v in tensors.items() if not k.startswith(PERCEPTUAL_PREFIX)}
    model = build_from_state(network, config, dtype=dtype, device=device)
    model.perceptual_state = perceptual or None
    return model
