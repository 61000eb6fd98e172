"""The GAGAvatar network: backbone, decoder, lifting, expression Gaussians,
refiner; presets; checkpoints (ours and the released one).

    model = create_model("tiny")                 # or "paper", "small"
    model = load("GAGAvatar.pt")                 # any checkpoint: ours, the release, a run folder
    avatar = model.reconstruct(image, camera)
    out = model.render(avatar, vertices, camera)
"""
from gagavatar.model.checkpoint import CheckpointError, check_head, save
from gagavatar.model.config import PRESETS, ModelConfig, paper, preset_config, small, tiny
from gagavatar.model.loader import load, resolve_checkpoint
from gagavatar.model.network import Avatar, GAGAvatar, RenderOutput, TrainingOutput, create_model
from gagavatar.model.official import convert_official, load_official

presets = tuple(PRESETS)

__all__ = [
    "Avatar", "CheckpointError", "GAGAvatar", "ModelConfig", "PRESETS", "RenderOutput", "TrainingOutput",
    "check_head", "convert_official", "create_model", "load", "load_official", "paper", "preset_config", "presets",
    "resolve_checkpoint", "save", "small", "tiny",
]
