"""What this install and machine are: optional parts (extras), the device to run on, and a
one-line description for reports."""
from __future__ import annotations

import importlib
import platform


class MissingExtra(ImportError):
    """An optional part of gagavatar is not installed; the message names the pip command."""


def require(module: str, extra: str, what: str):
    """Import ``module`` for ``what``, or say which extra brings it:
    ``require("gradio", "app", "the web app")``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{what} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'gagavatar[{extra}]'") from e


def default_device(device: str | None = None) -> str:
    """``device`` as given, else "cuda" when a CUDA GPU is there, else "cpu"."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def machine_description() -> str:
    """One line naming the machine, torch build and device."""
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {dev}")
