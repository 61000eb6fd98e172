"""The kinds of user error, by type. Code that must tell them apart (an HTTP status, a label
in the app) catches the type, never the words of the message; every message names the
problem and the fix, and the CLI prints it as one line (``cli``)."""
from __future__ import annotations


class InputError(ValueError):
    """An input file, folder or value cannot be used; the message names it and the fix."""


class NoFaceError(InputError):
    """The input shows no face the tracker can find (in any frame, or in the source frame)."""


class NoSoundError(InputError):
    """The input has no sound track, or an empty one (a video without audio is fine for tracking)."""


class LimitError(InputError):
    """The input is over a size limit (pixels, unpacked bytes, file count): too large to take."""


class PathEscapeError(InputError):
    """A path inside an input (an archive member, a dataset index entry, a link) leads out of it."""


class NonFiniteError(InputError):
    """NaN or Inf where numbers must be finite: a tensor of a checkpoint or head model, a rendered
    frame, a training loss (what a diverged training run leaves); the message names where."""


class OutputError(OSError):
    """An output file or folder cannot be written; the message names it and the fix.
    ``errno`` is set (``errno.ENOSPC`` for a full disk)."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_
