"""Our own checkpoints: one safetensors file, the model config as JSON metadata.

Keys are the network's parameter and buffer names; when the model carries the
released perceptual network (``model.perceptual_state``) its tensors are
stored too, under their reference names ``percep_loss.*``. ``build_from_state``
is how every checkpoint (ours or the release) becomes a network.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from gagavatar.head.model import canonical_head_id
from gagavatar.io import check_finite, read_safetensors_metadata, read_tensor_file, write_safetensors
from gagavatar.model.config import ModelConfig, paper
from gagavatar.model.network import GAGAvatar
from gagavatar.perceptual import PERCEPTUAL_PREFIX  # the released perceptual network keeps its reference names

FORMAT = "gagavatar-model"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint does not match the network: names the offending tensors."""


def build_from_state(state: dict[str, Tensor], config: ModelConfig | None = None, dtype: torch.dtype | None = None,
                     device="cpu") -> GAGAvatar:
    """A model whose every parameter and buffer is taken from ``state`` (strict;
    built on the meta device, so no memory is spent on random weights first)."""
    config = paper() if config is None else config
    with torch.device("meta"):
        model = GAGAvatar(config)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"checkpoint does not fit the network: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"tensor {k} has shape {tuple(state[k].shape)}, the network needs {tuple(v.shape)}")
    state = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.backbone.freeze()  # assign=True replaced the parameters; keep the backbone frozen
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors not set by the checkpoint: {leftover[:5]}")
    return model


def check_head(model, head, what: str = "the checkpoint") -> None:
    """Refuse, in one line naming both, a head model other than the one ``model`` was trained
    with (``model.head_id``; checkpoints from before ids are checked by vertex count only)."""
    fix = ("pass the one it was trained with (--head-model; the released weights need FLAME 2020, the bundled "
           "tiny model the bundled synthetic head)")
    if model.head_id is not None and model.head_id != head.id:
        raise CheckpointError(f"{what} was trained with the head model {model.head_id}, not {head.id} "
                              f"({head.name}): {fix}")
    if model.config.n_vertices != head.n_vertices:
        raise CheckpointError(f"{what} was made for a head model with {model.config.n_vertices} vertices, but "
                              f"{head.id} has {head.n_vertices}: {fix}")


def save(model, path: str | Path, info: dict | None = None) -> Path:
    """Write ``model`` (a GAGAvatar) to ``path`` (.safetensors), atomically; ``info`` (JSON) is kept
    in the metadata (e.g. what a personalised model was made from: ``checkpoint_info``)."""
    tensors = dict(model.state_dict())
    if model.perceptual_state:
        tensors.update(model.perceptual_state)
    check_finite(tensors, f"the model for {path}")  # never weights that load as black frames
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    if model.head_id:
        metadata["head_model"] = model.head_id
    if info:
        metadata["info"] = json.dumps(info, sort_keys=True)
    return write_safetensors(tensors, path, metadata)


def checkpoint_info(path: str | Path) -> dict:
    """The ``info`` a checkpoint was saved with ({} when none)."""
    return json.loads(read_safetensors_metadata(path).get("info", "{}"))


def is_gagavatar_checkpoint(path: str | Path) -> bool:
    """A .safetensors file with our metadata (a truncated or foreign file: a one-line error)."""
    return Path(path).suffix == ".safetensors" and read_safetensors_metadata(path).get("format") == FORMAT


def load_gagavatar(path: str | Path, device="cpu", dtype: torch.dtype | None = None) -> GAGAvatar:
    """A GAGAvatar from a checkpoint written by ``save`` (config from its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not is_gagavatar_checkpoint(path):
        raise CheckpointError(f"{path} is not a gagavatar checkpoint (a .safetensors file with '{FORMAT}' "
                              f"metadata); for the released GAGAvatar.pt use gagavatar.model.load")
    metadata = read_safetensors_metadata(path)
    config = ModelConfig.from_json(metadata["config"])
    tensors = read_tensor_file(path)
    perceptual = {k: v for k, v in tensors.items() if k.startswith(PERCEPTUAL_PREFIX)}
    network = {k: v for k, v in tensors.items() if not k.startswith(PERCEPTUAL_PREFIX)}
    model = build_from_state(network, config, dtype=dtype, device=device)
    model.perceptual_state = perceptual or None
    model.head_id = canonical_head_id(metadata.get("head_model"))  # None: a checkpoint from before ids
    return model
