"""The dataset's JSON files (index.json, video.json, reports): read as one object with errors
that name the file, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

from gagavatar.data.errors import DatasetError, MissingFileError
from gagavatar.data.layout import INDEX_FILE
from gagavatar.io import atomic_path


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found" + (
            " - is this a dataset folder? (run update_index(root) after writing videos)"
            if path.name == INDEX_FILE else ""))
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return d


def write_json(path: Path, d: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(d, indent=1) + "\n")
