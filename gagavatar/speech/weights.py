"""Speech-model files: ARTalk's release (``ARTalk_wav2vec.pt``, style motions) and our own.

    model = load_speech_model("ARTalk_wav2vec.pt")            # SpeechModel, eval, float32
    model = load_speech_model("speech_model.safetensors")     # trained here (train-speech): config inside
    style = load_style_motion("style_motion/natural_0.pt")    # [50, 106]
    save_speech_model(model, "voice.safetensors")

Our files are safetensors with the ``SpeechConfig`` (its head model too) as JSON metadata.

Both are read with ``weights_only=True`` (``gagavatar.io.load_torch_file``): a truncated
file or a pickle that asks for code is one line. A file with missing, unexpected or
mis-shaped tensors is a ``SpeechWeightsError`` naming them; a file of the release's size
with another SHA-256 is warned about (``known_files.check_release``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor

from gagavatar.io import load_torch_file
from gagavatar.known_files import KNOWN_FILES, check_release
from gagavatar.speech.config import SpeechConfig
from gagavatar.speech.generator import SpeechModel
from gagavatar.speech.wav2vec import upgrade_state_dict

WHERE_TO_GET = ("it is ARTalk's release (github.com/xg-chu/ARTalk: its build_resources.sh downloads "
                "{name} from huggingface.co/xg-chu/ARTalk)")


class SpeechWeightsError(ValueError):
    """A speech-model or style-motion file that does not fit: names the offending tensors."""


def _missing(path: Path, name: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: no such file; {WHERE_TO_GET.format(name=name)}")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_state(state: dict[str, Tensor], model: torch.nn.Module, path: str | Path = "the file") -> None:
    """Raise ``SpeechWeightsError`` (one line) unless ``state`` has exactly the model's tensors
    and shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    shaped = [f"{n} {tuple(state[n].shape)} (the model needs {expected[n]})"
              for n in expected if n in state and tuple(state[n].shape) != expected[n]]
    problems = [f"{what} tensor(s) {_listed(names)}" for what, names in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)) if names]
    avatar = any(n.startswith(("backbone.", "refiner.", "base_model.", "upsampler.")) for n in unexpected)
    if avatar:  # an avatar network's modules (ours, or the released GAGAvatar.pt's names)
        raise SpeechWeightsError(f"{path} is an avatar checkpoint (its tensors are the avatar network's), not a "
                                 f"speech model: give it as --checkpoint, and {KNOWN_FILES['speech_model'].filename} "
                                 f"or a train-speech model as --speech-model")
    if problems:
        raise SpeechWeightsError(f"{path} is not {KNOWN_FILES['speech_model'].filename} for this model: "
                                 + "; ".join(problems))


def empty_model(config: SpeechConfig | None = None) -> SpeechModel:
    """The model's structure without storage (``meta`` device): fill it with
    ``load_state_dict(state, assign=True)``; no time spent on a random init."""
    with torch.device("meta"):
        return SpeechModel(config)


def model_from_state(state: dict[str, Tensor], config: SpeechConfig | None = None, path: str | Path = "the file",
                     device="cpu", dtype: torch.dtype | None = torch.float32) -> SpeechModel:
    """A ``SpeechModel`` holding ``state`` (all 814 tensors, buffers included; old weight-norm
    names accepted), checked first, in eval mode on ``device``."""
    state = upgrade_state_dict(state)
    model = empty_model(config)
    check_state(state, model, path)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


FORMAT = "gagavatar-speech"


def save_speech_model(model: SpeechModel, path: str | Path) -> Path:
    """``model`` as a .safetensors file (atomic) that ``load_speech_model`` reads back."""
    from gagavatar.io import write_safetensors

    config = json.dumps(dataclasses.asdict(model.config))
    return write_safetensors(model.state_dict(), path, {"format": FORMAT, "config": config,
                                                        "head_model": model.config.head})


def _our_config(path: Path) -> SpeechConfig | None:
    """The config of a file ``save_speech_model`` wrote; None for any other file."""
    from gagavatar.io import read_safetensors_metadata

    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":  # not safetensors: a length (u64) then a JSON header
        return None
    metadata = read_safetensors_metadata(path)
    if metadata.get("format") != FORMAT:
        return None
    fields = json.loads(metadata["config"])
    known = {f.name for f in dataclasses.fields(SpeechConfig)}
    return SpeechConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k in known})


def load_speech_model(path: str | Path, config: SpeechConfig | None = None, device="cpu",
                      dtype: torch.dtype | None = torch.float32) -> SpeechModel:
    """ARTalk_wav2vec.pt (a plain state dict, SPEC §11) or a file ``save_speech_model`` wrote
    (its own config) -> ``SpeechModel`` in eval mode."""
    from gagavatar.io import read_tensor_file

    path = Path(path)
    if not path.is_file():
        raise _missing(path, KNOWN_FILES["speech_model"].filename)
    ours = _our_config(path)
    if ours is not None:
        return model_from_state(read_tensor_file(path), ours, path, device, dtype)
    check_release(path, "speech_model")
    state = load_torch_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SpeechWeightsError(f"{path} is not a speech model (expected a state dict of tensors, as "
                                 f"{KNOWN_FILES['speech_model'].filename})")
    return model_from_state(state, config, path, device, dtype)


def load_style_motion(path: str | Path, motion_dim: int = 106) -> Tensor:
    """A style motion file (``style_motion/*.pt``: a float tensor [T, 106], T = 50 in the
    release) -> float32 [T, motion_dim]."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "its styles, style_motion/*.pt,")
    motion = load_torch_file(path)
    if not isinstance(motion, Tensor) or motion.dim() != 2 or motion.shape[1] != motion_dim \
            or not motion.is_floating_point() or motion.shape[0] == 0:
        what = f"a tensor {tuple(motion.shape)} {motion.dtype}" if isinstance(motion, Tensor) else type(motion).__name__
        hint = ""
        artalk = SpeechConfig.motion_dim  # the released model's motion width
        if motion_dim != artalk and isinstance(motion, Tensor) and motion.dim() == 2 and motion.shape[1] == artalk:
            hint = ("; it is one of ARTalk's styles, which only ARTalk's model speaks in "
                    "(--speech-model ARTalk_wav2vec.pt, with FLAME)")
        raise SpeechWeightsError(f"{path} is not a style motion of this speech model: it holds {what}, not a float "
                                 f"tensor [T, {motion_dim}]{hint}")
    if not torch.isfinite(motion).all():
        raise SpeechWeightsError(f"{path} is not a usable style motion: it holds NaN or infinite values")
    return motion.float()
