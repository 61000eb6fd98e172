"""The settings of a speech-model training run (no torch here: the CLI reads them for its options)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from gagavatar.settings import setting


@dataclass
class SpeechTrainConfig:
    """Settings of one speech-model training run (the CLI's options: ``settings.command_options``)."""

    data: str = setting("", help="clips to learn from: a dataset folder with audio, or a clips .npz "
                        "(gagavatar synth-speech writes one)")
    out: str = setting("runs/speech", help="the run folder")
    preset: str = setting("tiny", help="the model: tiny (trains on a CPU) or paper (ARTalk's release)")
    init: str | None = setting(None, help="start from these weights: ARTalk_wav2vec.pt or a trained speech model")
    head_model: str | None = setting(None, help="the head model the motion is in (default: the bundled head)")
    codec_steps: int = setting(400, help="steps of stage 1, the motion codec (0: keep --init's codec)", min=0)
    generator_steps: int = setting(1200, help="steps of stage 2, the generator", min=0)
    batch_size: int = setting(16, help="windows per step", min=1)
    lr: float = setting(1e-3, help="peak learning rate (paper: 1e-4)", min=1e-9)
    warmup: int = setting(100, help="steps of linear warm-up at the start of each stage", min=0)
    flip_ratio: float = setting(0.3, help="at most this share of input bits flipped (stage 2)", min=0.0, max=1.0)
    prev_free: float = setting(0.1, help="share of windows trained with no previous chunk", min=0.0, max=1.0)
    style_free: float = setting(0.1, help="share of windows trained with no style", min=0.0, max=1.0)
    checkpoint_every: int = setting(250, help="steps between checkpoints (and evaluations)", min=1)
    keep_last: int = setting(3, help="checkpoints kept", min=1)
    log_every: int = setting(10, help="steps between metric rows", min=1)
    max_minutes: float | None = setting(None, help="stop after this much training time (both stages; a resumed "
                                                   "run's earlier time counted)", min=0.01)
    seed: int = setting(0, help="random seed")

    @property
    def steps(self) -> int:
        return self.codec_steps + self.generator_steps

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def model_config(self):
        """The preset's ``SpeechConfig``."""
        from gagavatar.speech.config import preset_config

        return preset_config(self.preset)


# Settings that decide the network: a run resumed with others would load the wrong weights.
ARCHITECTURE = ("preset", "init", "head_model")


