"""Network configurations: one dataclass, three presets (``paper``, ``small``, ``tiny``).

``paper`` is the reference network (SPEC §2-§3, §7): the sizes of the released
GAGAvatar.pt and every quirk of the reference code that those weights depend on.
``small`` and ``tiny`` are scaled down and use the clean variant of each quirk.
Every quirk and every ablation of the paper's Table 3 is an explicit field.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from gagavatar.model.refiner import RefinerConfig

# fields older checkpoints carry that no longer mean anything (lifting_loss was never read)
REMOVED_FIELDS = ("lifting_loss",)

QUIRK_CHOICES = {
    "fid_token": ("first_patch", "cls"),
    "lifted_rgb_sigmoid": ("columns", "channels"),
    "expression_rotation_norm": ("vertices", "per_gaussian"),
    "refiner_noise": ("stored", "random"),
}


@dataclass
class ModelConfig:
    """Every size and switch of the GAGAvatar network (defaults = the reference).

    Backbone (frozen DINOv2-style ViT):
      image_size      side of the square backbone input (a multiple of patch_size);
                      the source image is resized to it (bilinear, antialiased).
      patch_size, vit_dim, vit_depth, vit_heads, vit_mlp_ratio: the ViT.
      vit_pos_grid    patch-grid side the position embedding is stored at (37 for
                      DINOv2); another grid is interpolated as DINOv2 does.
    Decoder (DPT): decoder_dims (the 4 projection widths), decoder_hidden,
      feature_dim (channels of the feature map the lifting heads read).
      decoder_unused_unit  build the reference's refinenet.0.resConfUnit1, which
                      its forward never calls (True to load the released weights;
                      it never gets a gradient).
    Gaussians:
      plane_size      side of the point plane: plane_size^2 Gaussians per lifting head.
      channels        feature channels per Gaussian (the first 3 are RGB).
      lifting_hidden  width of the lifting heads' convs.
      expression_embed_dim, expression_hidden, expression_head_hidden: the
                      expression-Gaussian MLP (per-vertex embedding, trunk, heads).
      n_harmonics     frequencies of the direction code (3 * (2n + 1) values).
      max_scale       Gaussian scales are sigmoid(.) * max_scale.
      n_vertices      expression Gaussians = head-model vertices (5,023 for FLAME);
                      follows the head model used.
    Rendering: render_size (side of the splatted image), refiner (the StyleUNet).

    Reference quirks (``paper`` keeps them: the released weights depend on them):
      fid_token       "first_patch": F_id is the last block's top-left patch token
                      (the reference); "cls": the CLS token (the paper's intent).
      lifted_rgb_sigmoid  "columns": the lifted RGB sigmoid hits pixel columns 0-2
                      of all channels (the reference); "channels": channels 0-2.
      expression_rotation_norm  "vertices": expression quaternions normalised
                      across vertices (the reference's ``normalize(x)`` default
                      dim=1 on [B, V, 4]); "per_gaussian": each one to unit length.
      refiner_noise   "stored": the refiner's fixed noise buffers (deterministic);
                      "random": fresh noise every frame (the reference).
    Ablations (paper Table 3):
      one_plane       only the front lifting head.
      use_fid         feed F_id to the expression Gaussians.
      use_refiner     run the neural renderer; without it the coarse image is the output.
      (The fourth, training without L_lifting, is a loss switch: ``gagavatar train --ablation
      no_lifting_loss``.)
    """

    name: str = "paper"
    image_size: int = 518
    patch_size: int = 14
    vit_dim: int = 768
    vit_depth: int = 12
    vit_heads: int = 12
    vit_mlp_ratio: float = 4.0
    vit_pos_grid: int = 37
    decoder_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    decoder_hidden: int = 256
    feature_dim: int = 256
    decoder_unused_unit: bool = True
    plane_size: int = 296
    channels: int = 32
    lifting_hidden: int = 128
    expression_embed_dim: int = 256
    expression_hidden: int = 256
    expression_head_hidden: int = 128
    n_harmonics: int = 4
    max_scale: float = 0.05
    n_vertices: int = 5023
    render_size: int = 512
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    fid_token: str = "first_patch"
    lifted_rgb_sigmoid: str = "columns"
    expression_rotation_norm: str = "vertices"
    refiner_noise: str = "stored"
    one_plane: bool = False
    use_fid: bool = True
    use_refiner: bool = True

    def validate(self) -> "ModelConfig":
        for f in dataclasses.fields(self):  # sizes and counts: a negative or zero one fails deep in torch
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            low = 0 if f.name == "n_harmonics" else 1  # no frequencies is a valid direction code
            if not (math.isfinite(value) and (value >= low if isinstance(value, int) else value > 0)):
                raise ValueError(f"ModelConfig.{f.name}={value}: must be " +
                                 (f"a whole number of at least {low}" if isinstance(value, int) else "positive"))
        if not all(isinstance(d, int) and d >= 1 for d in self.decoder_dims):
            raise ValueError(f"ModelConfig.decoder_dims={self.decoder_dims}: four positive whole numbers")
        for name, choices in QUIRK_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}: choose one of {choices}")
        if self.image_size % self.patch_size:
            raise ValueError(f"ModelConfig.image_size={self.image_size} must be a multiple of "
                             f"patch_size={self.patch_size}")
        if self.vit_dim % self.vit_heads:
            raise ValueError(f"ModelConfig.vit_dim={self.vit_dim} must be divisible by vit_heads={self.vit_heads}")
        if len(self.decoder_dims) != 4:
            raise ValueError(f"ModelConfig.decoder_dims needs 4 widths, got {self.decoder_dims}")
        if self.channels < 3:
            raise ValueError(f"ModelConfig.channels={self.channels}: at least 3 (RGB) are needed")
        if self.use_refiner:
            r = self.refiner
            if r.in_dim != self.channels or r.out_size != self.render_size or r.out_dim != 3:
                raise ValueError(f"refiner (in_dim={r.in_dim}, out_size={r.out_size}, out_dim={r.out_dim}) does not "
                                 f"match channels={self.channels}, render_size={self.render_size}, RGB output")
        return self

    @property
    def n_gaussians(self) -> int:
        """Gaussians per avatar: expression + one or two lifted planes."""
        return self.n_vertices + (1 if self.one_plane else 2) * self.plane_size ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        data = {k: v for k, v in data.items() if k not in REMOVED_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown} (a checkpoint from a newer gagavatar?)")
        if isinstance(data.get("refiner"), dict):
            data["refiner"] = RefinerConfig(**data["refiner"])
        if "decoder_dims" in data:
            data["decoder_dims"] = tuple(data["decoder_dims"])
        return cls(**data).validate()

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def paper() -> ModelConfig:
    """The reference network: 518 input, ViT-B/14, 296 plane, 512 render, 32 channels,
    82,336,694 trainable parameters, the reference's quirks on."""
    return ModelConfig()


def small() -> ModelConfig:
    """ViT-S/14 at 224, 128 plane, 256 render, quarter-width refiner; clean variant."""
    return ModelConfig(
        name="small", image_size=224, vit_dim=384, vit_depth=12, vit_heads=6, vit_pos_grid=16,
        decoder_dims=(96, 192, 384, 384), decoder_hidden=128, feature_dim=128, decoder_unused_unit=False,
        plane_size=128,
        lifting_hidden=64, expression_embed_dim=128, expression_hidden=128, expression_head_hidden=64,
        render_size=256,
        refiner=RefinerConfig(in_size=256, out_size=256, in_dim=32, num_style_feat=256, narrow=0.25,
                              unet_to_rgb=False),
        fid_token="cls", lifted_rgb_sigmoid="channels", expression_rotation_norm="per_gaussian",
    )


def tiny() -> ModelConfig:
    """Trainable on 2 CPU cores in minutes: a 4-block ViT (dim 192) at 112, 48 plane,
    128 render, 16 channels, 1/16-width refiner; clean variant."""
    return ModelConfig(
        name="tiny", image_size=112, vit_dim=192, vit_depth=4, vit_heads=3, vit_pos_grid=8,
        decoder_dims=(32, 64, 128, 128), decoder_hidden=64, feature_dim=64, decoder_unused_unit=False,
        plane_size=48, channels=16,
        lifting_hidden=32, expression_embed_dim=32, expression_hidden=64, expression_head_hidden=32,
        render_size=128,
        refiner=RefinerConfig.tiny(),
        fid_token="cls", lifted_rgb_sigmoid="channels", expression_rotation_norm="per_gaussian",
    )


PRESETS = {"paper": paper, "small": small, "tiny": tiny}


def preset_config(name: str | ModelConfig, **overrides) -> ModelConfig:
    """A preset by name (or a config) with fields overridden. The refiner follows
    ``channels`` / ``render_size`` unless ``refiner`` itself is overridden."""
    if isinstance(name, ModelConfig):
        config = name
    else:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
        config = PRESETS[name]()
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model config fields {unknown}; known: {sorted(known)}")
    for key, value in overrides.items():
        _check_type(key, value, getattr(config, key))
    if isinstance(overrides.get("refiner"), dict):
        overrides["refiner"] = dataclasses.replace(config.refiner, **overrides["refiner"])
    config = dataclasses.replace(config, **overrides)
    if "refiner" not in overrides:
        r = config.refiner
        if r.in_dim != config.channels or r.out_size != config.render_size:
            config.refiner = dataclasses.replace(r, in_dim=config.channels, out_size=config.render_size,
                                                 in_size=config.render_size)
    return config.validate()


def _check_type(name: str, value, current) -> None:
    """An override of the field ``name`` is of its kind (``--model plane_size=abc`` is refused here,
    not as a traceback inside the network)."""
    if isinstance(current, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(current, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(current, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(current, str):
        ok, kind = isinstance(value, str), "text"
    elif isinstance(current, tuple):
        ok, kind = isinstance(value, (list, tuple)), "a list, e.g. [32, 64, 128, 128]"
    else:
        ok, kind = isinstance(value, (dict, type(current))), "a JSON object of its fields"
    if not ok:
        raise ValueError(f"model setting {name}={value!r}: {name} takes {kind} (the preset has {current!r})")
