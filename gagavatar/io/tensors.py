"""Checkpoints and weights read safely: safetensors or ``torch.load(weights_only=True)``; a
truncated file, a foreign file or a pickle that asks for code is one line (``TensorFileError``)."""
from __future__ import annotations

import errno
import re
import warnings
from pathlib import Path

from gagavatar.errors import InputError, NonFiniteError


class TensorFileError(InputError):
    """A checkpoint or weights file that exists but cannot be used (truncated, not a
    checkpoint, or a pickle that would run code); the message names it and what to do.
    ``reason`` is the middle part alone ("is truncated or corrupt (812 bytes)")."""

    def __init__(self, path: Path, reason: str = "", fix: str = ""):
        super().__init__(f"{path} {reason}{fix}")
        self.path, self.reason = path, reason


def _check_file(path: Path) -> int:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TensorFileError(path, "is a folder", "; give the checkpoint file itself")
    return path.stat().st_size


def _truncated(path: Path, size: int) -> TensorFileError:
    return TensorFileError(path, f"is truncated or corrupt ({size} bytes)", ": download it again")


def _not_a_checkpoint(path: Path, what: str = "neither safetensors nor a PyTorch file") -> TensorFileError:
    return TensorFileError(path, f"is not a checkpoint ({what})")


def _holds_code(path: Path, name: str | None) -> TensorFileError:
    what = f"the pickled object {name}" if name else "a pickled object other than tensors"
    return TensorFileError(path, f"holds code ({what}) and was not run", "; only files of tensors are loaded")


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian) and '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _pickle_globals(data: bytes) -> list[str]:
    """The Python objects a pickle would import (read from its opcodes; nothing is run)."""
    import pickletools
    from io import BytesIO

    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(BytesIO(data)):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: what was read so far
        pass
    return found


def _safetensors_call(path: Path, size: int, read):
    from safetensors import SafetensorError

    try:
        return read()
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, OSError) and e.errno not in (None, errno.EINVAL, errno.EIO):
            raise  # permission denied and the like: not the file's content
        raise _truncated(path, size) from None


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file (its header only), with ``read_tensor_file``'s errors."""
    from safetensors import safe_open

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if not _is_safetensors(head):
        if size < 9:
            raise _truncated(path, size)
        raise _not_a_checkpoint(path, "not a safetensors file")

    def read():
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}

    return _safetensors_call(path, size, read)


def load_torch_file(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, whose errors are one line: a
    missing file, "PATH is truncated or corrupt (N bytes)", "PATH is not a checkpoint",
    or "PATH holds code ... and was not run" for a pickle that asks for anything but
    tensors and plain containers (it is refused, never run)."""
    import pickle

    import torch
    from safetensors import SafetensorError  # torch.load hands .safetensors files to it

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip, is_pickle = head.startswith(b"PK"), head[:1] == b"\x80"
    try:
        with warnings.catch_warnings():  # a raw pickle's protocol warning: the error below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused:
            raise _holds_code(path, refused[1]) from None
        if is_pickle:
            others = [g for g in _pickle_globals(path.read_bytes()) if not g.startswith(("torch.", "collections."))]
            if others:
                raise _holds_code(path, others[0]) from None
        if is_zip or is_pickle:
            raise _truncated(path, size) from None
        raise _not_a_checkpoint(path) from None
    except (EOFError, RuntimeError, OSError, ValueError, IndexError, KeyError, SafetensorError) as e:
        if isinstance(e, OSError) and e.errno not in (None, errno.EINVAL, errno.EIO):
            raise  # permission denied and the like: not the file's content
        if is_zip or is_pickle or size < 4:
            raise _truncated(path, size) from None
        raise _not_a_checkpoint(path) from None


def check_finite(arrays: dict, where: str | Path) -> dict:
    """``arrays`` ({name: tensor or numpy array}) when every number in them is finite; else
    ``NonFiniteError`` naming the first tensor with NaN or Inf (what a diverged training run
    leaves: such weights render black or NaN images). Tensors named ``*mask*`` may hold -inf."""
    import numpy as np
    import torch

    for name, value in arrays.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().cpu().numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
        if not (isinstance(value, np.ndarray) and value.dtype.kind in "fc"):
            continue
        total = value.size
        if "mask" in name:  # attention masks block with -inf by design (ARTalk's attn_mask, attn_bias_for_masking)
            bad = int(np.isnan(value).sum() + np.isposinf(value).sum())
        else:
            bad = int((~np.isfinite(value)).sum())
        if bad:
            raise NonFiniteError(f"{where}: tensor {name} holds {bad} NaN or Inf value(s) of {total}: the file is "
                                 f"damaged or from a diverged training run; use an earlier checkpoint")
    return arrays


def read_tensor_file(path: str | Path, nested: str | None = "model") -> dict:
    """All tensors {name: Tensor} of a safetensors file or a PyTorch file (``torch.save``;
    loaded with ``weights_only=True``: a pickle that asks for code is refused, never run).
    A PyTorch file holding {``nested``: {name: tensor}, ...} (the released GAGAvatar.pt)
    gives the inner dict. The format is recognised from the content, not the suffix.
    Errors are one line (``load_torch_file``'s, ``TensorFileError``; a tensor with NaN or Inf:
    ``NonFiniteError``)."""
    import torch

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_safetensors(head):
        from safetensors.torch import load_file

        return check_finite(_safetensors_call(path, size, lambda: load_file(str(path))), path)
    if path.suffix == ".safetensors":  # torch.load would hand it to safetensors
        raise _truncated(path, size) if size < 9 else _not_a_checkpoint(path, "not a safetensors file")
    obj = load_torch_file(path)
    if isinstance(obj, dict) and nested is not None and isinstance(obj.get(nested), dict):
        obj = obj[nested]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = f"a {type(obj).__name__}" if not isinstance(obj, dict) else \
            f"a dict of {sorted({type(v).__name__ for v in obj.values()})}" if obj else "an empty dict"
        raise _not_a_checkpoint(path, f"it holds {kind}, not named tensors")
    return check_finite(obj, path)


def write_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str]) -> Path:
    """Tensors {name: Tensor} and string ``metadata`` to a .safetensors file, atomically (a full
    disk: one line, the previous file intact)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from gagavatar.io.files import atomic_path, free_bytes

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            if free_bytes(Path(tmp).parent) == 0:  # safetensors reports a full disk as text: atomic_path words it
                raise OSError(errno.ENOSPC, str(e)) from None
            raise
    return Path(path)
