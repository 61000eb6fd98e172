"""The settings of one personalisation (no torch here: the CLI reads them for its options)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from gagavatar.settings import setting


@dataclass
class PersonalizeConfig:
    """Settings of one personalisation (the CLI's options: ``settings.command_options``)."""

    video: str = setting("", help="a short video of the person (or a folder that `gagavatar track` wrote)",
                         required=True)
    out: str = setting("person.safetensors", help="the personalised checkpoint (person.json and person.png "
                                                  "beside it: the held-out report)")
    checkpoint: str | None = setting(None, help="the model to start from: ours, the released GAGAvatar.pt, a run "
                                                "folder (default: the bundled tiny model)")
    head_model: str | None = setting(None, help="the head model that checkpoint was trained with")
    minutes: float | None = setting(None, help="training time (default 10 unless --steps)")
    steps: int | None = setting(None, help="training steps instead of a time budget", min=1)
    holdout: float = setting(0.15, help="the clip's last fraction of frames, held out to measure on")
    lr: float = setting(3e-4, help="learning rate")
    batch_size: int = setting(4, help="pairs per step", min=1)
    freeze: tuple[str, ...] = setting((), help="keep a part as it is: decoder, expression, lifting, refiner "
                                               "(repeatable)")
    eval_frames: int = setting(8, help="held-out frames the progress bar's PSNR is measured on", min=1)
    checkpoint_every: int = setting(50, help="steps between checkpoints", min=1)
    workdir: str | None = setting(None, help="the work folder (tracked clip, checkpoints; an interrupted run "
                                             "continues from it); default: OUT's name + .work beside it")

    def validate(self) -> None:
        """Refuse a setting in one line naming this command's own option."""
        if not self.video:
            raise ValueError("give --video: a short video of the person")
        if self.minutes is not None and self.steps is not None:
            raise ValueError("give --minutes or --steps, not both")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        for name in ("minutes", "lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} must be a positive number, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"--holdout is a fraction of the clip's frames, between 0 and 1; got {self.holdout}")
