"""Files shipped with the package: the bundled demonstration model and clips, the synthetic
head model, the released checkpoint's tensor list. ``bundled(name)`` finds one."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled(name: str) -> Path:
    """Path of a file shipped in ``gagavatar/assets`` (``name`` relative to it)."""
    return Path(str(resources.files("gagavatar.assets").joinpath(name)))
