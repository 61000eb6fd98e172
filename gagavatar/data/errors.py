"""The dataset's errors, by type: a malformed file, a missing one, a path leading out of the
dataset folder."""
from __future__ import annotations

from gagavatar.errors import PathEscapeError


class DatasetError(ValueError):
    """A dataset file is malformed or inconsistent; the message names the file."""


class MissingFileError(DatasetError, FileNotFoundError):
    """A file the dataset needs does not exist; the message names it."""


class DatasetPathError(DatasetError, PathEscapeError):
    """A video path of a dataset (an index entry, or a link it goes through) leads outside the
    dataset folder; the message names the index and the video."""
