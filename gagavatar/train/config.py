"""The settings of a training run (no torch here: the CLI reads them for its options).

``TrainConfig``'s fields declared with ``setting`` are ``gagavatar train``'s options
(``settings.command_options``); the rest (the optimiser's finer points, the loss weights) are
the paper's and are changed from Python.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field

from gagavatar.settings import setting


@dataclass
class LossConfig:
    image: float = 0.5
    box: float = 0.5
    perceptual: float = 0.01
    lifting: float = 10.0
    box_scale: float = 1.1
    box_size: int | None = None  # crops are resized to this side (None: the render size, 512 in the paper)


# The paper's Table 3 ablations: name -> model-config overrides (the lifting-loss
# ablation is a loss switch, handled in the loop).
ABLATIONS = {
    "one_plane": {"one_plane": True},
    "no_fid": {"use_fid": False},
    "no_refiner": {"use_refiner": False},
    "no_lifting_loss": {},
}


@dataclass
class TrainConfig:
    """Settings of one training run (defaults: the paper's optimiser and schedule)."""

    data: str = setting("", help="dataset folder (docs/data-format.md)", required=True)
    out: str = setting("runs/tiny", help="run folder: checkpoints, samples, metrics, model.safetensors",
                       required=True)
    preset: str | None = setting(None, help="model preset: tiny, small or paper (default: tiny, or --init's)")
    model: dict = field(default_factory=dict)  # model-config fields overriding the preset's (--model KEY=VALUE)
    ablations: tuple[str, ...] = setting((), flag="--ablation", help="one_plane, no_fid, no_refiner, "
                                                                     "no_lifting_loss (repeatable)")
    init: str | None = setting(None, help="start from this checkpoint's weights (ours, the released GAGAvatar.pt, "
                                          "a run folder), with a fresh optimizer; --resume continues a run instead")
    freeze: tuple[str, ...] = setting((), help="keep a part fixed besides the backbone: decoder, expression, "
                                               "lifting, refiner (repeatable)")
    frames: tuple[int, int] | None = None  # train on frames start <= i < stop of each video only (--frames START:STOP)
    max_steps: int = setting(200_000, help="total optimisation steps", min=1)
    max_minutes: float | None = setting(None, help="stop after this much training time (a resumed run's earlier "
                                                   "time counted) and write the model")
    batch_size: int = setting(8, help="samples per step and process", min=1)
    lr: float = setting(1e-4, help="Adam learning rate (refiner style MLP / final linear at 0.1x)")
    low_lr_factor: float = 0.1        # style MLP and final linear of the refiner (reference)
    betas: tuple[float, float] = (0.0, 0.99)
    lr_end_factor: float = 0.1        # LinearLR 1.0 -> 0.1 ...
    lr_decay_steps: int = setting(200_000, help="steps of the linear decay to 0.1x", min=1)  # ... over this many
    grad_clip: float = 1.0            # max global grad norm; 0 disables
    loss: LossConfig = field(default_factory=LossConfig)
    perceptual_weights: str | None = setting(None, help="GAGAvatar.pt (or converted .safetensors) for the "
                                                        "perceptual loss")
    backbone_weights: str | None = setting(None, help="DINOv2 .pth or GAGAvatar.pt for the frozen ViT (else a "
                                                      "random ViT, warned)")
    head_model: str | None = setting(None, help="FLAME-format head model (default: bundled synthetic head)")
    checkpoint_every: int = setting(500, help="steps between checkpoints", min=1)
    keep_last: int = setting(3, help="checkpoints kept", min=1)
    sample_every: int = setting(250, help="steps between sample grids", min=1)
    log_every: int = 10
    num_workers: int = setting(0, help="DataLoader worker processes", min=0)
    seed: int = setting(0, help="seed of the model init and the sample order", min=0)
    bf16: bool = True                 # autocast on CUDA only

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """The settings ``to_json`` wrote (a run's config.json); lists back to tuples."""
        fields = json.loads(text)
        fields["loss"] = LossConfig(**fields.get("loss", {}))
        known = {f.name: f for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known})

    def validate(self) -> None:
        """Refuse, before anything is built or written, a setting the loop cannot run with (one line)."""
        for name in ("max_steps", "batch_size", "checkpoint_every", "keep_last", "sample_every", "log_every",
                     "lr_decay_steps"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value}")
        for name in ("lr", "low_lr_factor"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ValueError(f"grad_clip must be 0 (off) or a positive number, got {self.grad_clip}")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be 0 or more, got {self.num_workers}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise ValueError(f"--max-minutes must be a positive number, got {self.max_minutes}")
        if self.frames is not None and not (0 <= self.frames[0] < self.frames[1]):
            raise ValueError(f"--frames START:STOP needs 0 <= START < STOP, got {self.frames}")
        if self.model:  # a bad --model KEY=VALUE fails here, before the run folder is touched
            from gagavatar.model.config import preset_config

            preset_config(self.preset or "tiny", **self.model)
        if self.init is not None and (self.model or self.ablations):
            raise ValueError("--init takes the network from its checkpoint; --model and --ablation would change it: "
                             "leave them out")
        unknown = sorted(set(self.freeze) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"--freeze {unknown}: choose from {list(FREEZABLE)}")


# Settings that decide the network's shape: a run resumed with others would load the wrong weights.
ARCHITECTURE = ("preset", "model", "ablations", "head_model", "init")
# What --freeze may keep fixed (the backbone always is): the network's parts
FREEZABLE = ("decoder", "expression", "lifting", "refiner")
