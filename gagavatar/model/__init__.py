"""The GAGAvatar network: backbone, decoder, lifting, expression Gaussians,
refiner; presets; the released checkpoint; our own checkpoints.

    model = create_model("tiny")                 # or "paper", "small"
    model = load_official("GAGAvatar.pt")        # the released weights
    avatar = model.reconstruct(image, camera)
    out = model.render(avatar, vertices, camera)
"""
from gagavatar.model.checkpoint import load, save
from gagavatar.model.config import PRESETS, ModelConfig, paper, preset_config, small, tiny
from gagavatar.model.network import Avatar, GAGAvatar, RenderOutput, TrainingOutput, create_model
from gagavatar.model.official import CheckpointError, convert_official, load_official

presets = tuple(PRESETS)

__all__ = [
    "Avatar", "CheckpointError", "GAGAvatar", "ModelConfig", "PRESETS", "RenderOutput", "TrainingOutput",
    "convert_official", "create_model", "load", "load_official", "paper", "preset_config", "presets", "save",
    "small", "tiny",
]
