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

from gagavatar.io import read_tensor_file
from gagavatar.model.checkpoint import (PERCEPTUAL_PREFIX, CheckpointError, build_from_state,
                                        is_gagavatar_checkpoint, load_gagavatar, save)
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

def our_name(reference_name: str) -> str:
    """Reference tensor name -> this project's parameter name."""
    for ref, ours in PREFIX_MAP:
        if reference_name.startswith(ref):
            return ours + reference_name[len(ref):]
    raise CheckpointError(f"unexpected tensor {reference_name!r}: not part of the GAGAvatar network")


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
        speech = any(n.startswith(("basic_vae.", "audio_encoder.")) for n in unexpected)  # ARTalk's modules
        raise CheckpointError(f"unexpected tensor(s) in the checkpoint: {unexpected[:5]}"
                              + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
                              + ("; they are a speech model's (ARTalk_wav2vec.pt or one train-speech made): give "
                                 "it as --speech-model, and an avatar checkpoint as --checkpoint" if speech else ""))
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


RELEASED_HEAD_ID = "flame2020"  # the released weights were trained on FLAME 2020 (SPEC §7.10)


def load_official(path: str | Path, dtype: torch.dtype | None = torch.float32, device="cpu") -> GAGAvatar:
    """The ``paper`` model with the released weights, from GAGAvatar.pt or from its
    conversion (``gagavatar convert-official``).

    The perceptual network's 36 tensors, when present, are kept in
    ``model.perceptual_state`` (reference names ``percep_loss.*``); a file with
    only the 561 network tensors loads too (``perceptual_state`` is then None).
    """
    path = Path(path)
    if is_gagavatar_checkpoint(path):
        model = load_gagavatar(path, device=device, dtype=dtype)
        if model.config.name != "paper":
            raise CheckpointError(f"{path} holds a '{model.config.name}' model, not the released paper weights")
        return model
    network, perceptual = split_official(read_tensor_file(path))
    if perceptual is None:
        log.warning("%s has no perceptual network (percep_loss.*): fine for inference; training's perceptual "
                    "loss needs the full GAGAvatar.pt", path)
    model = build_from_state(network, paper(), dtype=dtype, device=device)
    model.perceptual_state = perceptual
    model.head_id = RELEASED_HEAD_ID
    return model


def convert_official(path: str | Path, out: str | Path) -> Path:
    """GAGAvatar.pt -> a gagavatar safetensors checkpoint (``gagavatar.load`` reads it)."""
    return save(load_official(path, dtype=None), out)
