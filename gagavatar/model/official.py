"""The released GAGAvatar.pt: name mapping, strict loading, conversion.

The file (SPEC §6) is a torch zip of ``{'model': 597 tensors, 'meta_cfg': dict}``:
561 network tensors and 36 ``percep_loss.*`` tensors (VGG-Face + AlexNet conv
layers, used by the perceptual loss). Reference names map onto this project's
modules by prefix; inside each module the names are the reference's.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from gagavatar.model.config import paper
from gagavatar.model.network import GAGAvatar
from gagavatar.model.reference_weights import official_listing

log = logging.getLogger(__name__)

# reference prefix -> our prefix, first match wins (order matters: dino_model before base_model)
PREFIX_MAP = (
    ("base_model.dino_model.", "backbone."),
    ("base_model.", "decoder."),
    ("head_base", "expression.head_base"),
    ("gs_generator_g.", "expression."),
    ("gs_generator_l0.", "lifting_front."),
    ("gs_generator_l1.", "lifting_back."),
    ("upsampler.", "refiner."),
)
PERCEPTUAL_PREFIX = "percep_loss."


class CheckpointError(ValueError):
    """A checkpoint does not match the network: names the offending tensors."""


def our_name(reference_name: str) -> str:
    """Reference tensor name -> this project's parameter name."""
    for ref, ours in PREFIX_MAP:
        if reference_name.startswith(ref):
            return ours + reference_name[len(ref):]
    raise CheckpointError(f"unexpected tensor {reference_name!r}: not part of the GAGAvatar network")


def read_checkpoint_file(path: str | Path) -> dict[str, Tensor]:
    """All tensors of GAGAvatar.pt (``weights_only=True``: a pickle that tries to run
    code is refused) or of a safetensors file (``gagavatar.io.read_tensor_file``: its
    errors are one line)."""
    from gagavatar.io import read_tensor_file

    return read_tensor_file(path)


def split_official(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Reference-named tensors -> (our network state dict, perceptual tensors or None).

    Checks every name and shape against the 597-line listing: a missing,
    unexpected or mis-shaped tensor raises ``CheckpointError`` naming it. The
    36 perceptual tensors are optional as a group (all or none).
    """
    listing = official_listing()
    expected = dict(listing)
    network_names = [n for n, _ in listing if not n.startswith(PERCEPTUAL_PREFIX)]
    perceptual_names = [n for n, _ in listing if n.startswith(PERCEPTUAL_PREFIX)]

    unexpected = sorted(n for n in tensors if n not in expected)
    if unexpected:
        raise CheckpointError(f"unexpected tensor(s) in the checkpoint: {unexpected[:5]}"
                              + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))
    missing = [n for n in network_names if n not in tensors]
    present_perceptual = [n for n in perceptual_names if n in tensors]
    if present_perceptual and len(present_perceptual) != len(perceptual_names):
        missing += [n for n in perceptual_names if n not in tensors]
    if missing:
        raise CheckpointError(f"missing tensor(s) in the checkpoint: {missing[:5]}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(f"tensor {name} has shape {tuple(tensor.shape)}, the network needs {expected[name]}")
    network = {our_name(n): tensors[n] for n in network_names}
    perceptual = {n: tensors[n] for n in perceptual_names} if present_perceptual else None
    return network, perceptual


def build_from_state(state: dict[str, Tensor], config=None, dtype: torch.dtype | None = None,
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


def load_official(path: str | Path, dtype: torch.dtype | None = torch.float32, device="cpu") -> GAGAvatar:
    """The ``paper`` model with the released weights, from GAGAvatar.pt or from its
    conversion (``gagavatar convert-official``).

    The perceptual network's 36 tensors, when present, are kept in
    ``model.perceptual_state`` (reference names ``percep_loss.*``); a file with
    only the 561 network tensors loads too (``perceptual_state`` is then None).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from gagavatar.model.checkpoint import is_gagavatar_checkpoint, load

        if is_gagavatar_checkpoint(path):
            model = load(path, device=device, dtype=dtype)
            if model.config.name != "paper":
                raise CheckpointError(f"{path} holds a '{model.config.name}' model, not the released paper weights")
            return model
    network, perceptual = split_official(read_checkpoint_file(path))
    if perceptual is None:
        log.warning("%s has no perceptual network (percep_loss.*): fine for inference; training's perceptual "
                    "loss needs the full GAGAvatar.pt", path)
    model = build_from_state(network, paper(), dtype=dtype, device=device)
    model.perceptual_state = perceptual
    return model


def convert_official(path: str | Path, out: str | Path) -> Path:
    """GAGAvatar.pt -> a gagavatar safetensors checkpoint (``gagavatar.load`` reads it)."""
    from gagavatar.model.checkpoint import save

    model = load_official(path, dtype=None)
    return save(model, out)
