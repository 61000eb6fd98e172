"""Writing files so that nothing is lost: ``atomic_path`` (a temporary file beside the target,
renamed over it when complete: a crash, Ctrl-C or a full disk leaves the previous file as it
was), ``check_writable`` before long work, and ``OutputError``, one line naming the folder or
device and the fix, for what cannot be written."""
from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gagavatar.errors import OutputError

_UMASK = os.umask(0)  # read once, at import: setting it later would race other threads' file creation
os.umask(_UMASK)


def _mount(path: Path) -> tuple[Path, str]:
    """(mount point, device) of the file system holding ``path`` (an existing folder)."""
    mount = Path(os.path.realpath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    device = str(mount)
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == str(mount):
                device = fields[0]  # the last entry for a mount point is the one in use
    except OSError:
        pass
    return mount, device


def _existing_folder(path: Path) -> Path:
    folder = Path(os.path.abspath(path))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def no_space_error(path: str | Path) -> OutputError:
    """The one-line error for a full disk while writing ``path``: names the device and its mount."""
    folder = _existing_folder(Path(path).parent)
    mount, device = _mount(folder)
    where = f"{device} (mounted at {mount})" if device != str(mount) else str(mount)
    return OutputError(f"no space left on device {where} while writing {path}: free some space there "
                       f"or write to another folder", errno.ENOSPC)


def output_error(path: str | Path, err: OSError) -> OSError:
    """``err``, raised while writing ``path``, as one line naming the folder and the fix;
    an error that is not about the output (a missing input, say) is returned unchanged."""
    if isinstance(err, OutputError):
        return err
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return no_space_error(path)
    folder = path.parent
    if err.filename is not None:  # e.g. a missing input read while writing: not ours to reword
        written = {Path(os.path.abspath(p)) for p in (path, temp_path(path), *path.parents)}
        if Path(os.path.abspath(err.filename)) not in written:
            return err
    blocked = Path(err.filename).parent if err.filename is not None else folder  # the folder refusing it
    if err.errno == errno.EROFS:
        return OutputError(f"cannot write to {blocked}: it is on a read-only file system; "
                           f"choose another output folder", err.errno)
    if err.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write to {blocked}: permission denied; choose another output folder "
                           f"or make it writable (chmod u+w {blocked})", err.errno)
    if err.errno == errno.EISDIR or path.is_dir():
        return OutputError(f"{path} is a folder; give a file name in it", errno.EISDIR)
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and not folder.is_dir():
        return OutputError(f"cannot write {path}: {_existing_file_in(folder)} is a file, not a folder; "
                           f"choose another output path", err.errno)
    return err


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Inside: an OSError while writing ``path`` (or files beside it) becomes ``output_error``'s one line."""
    try:
        yield
    except OSError as e:
        error = output_error(path, e)
        if error is e:
            raise
        raise error from None


def _existing_file_in(folder: Path) -> Path:
    """The first component of ``folder`` that exists but is not a folder."""
    for p in reversed([folder, *folder.parents]):
        if p.exists() and not p.is_dir():
            return p
    return folder


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(\.[^.]*)?$")


def temp_path(path: str | Path) -> Path:
    """The temporary file beside ``path`` that ``atomic_path`` writes: ``.NAME.tmpPID.SUFFIX``
    (it keeps the suffix, which np.savez and ffmpeg go by)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files ``atomic_path`` left in ``folder`` when its process was
    killed (``.NAME.tmpPID*`` whose process is gone from this machine; only those of the
    file ``name`` when given). Returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m and p.is_file() and name in (None, m["name"]) and not _alive(int(m["pid"])):
            _remove(p)
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    """Delete ``path`` if it is there (on a read-only file system unlink fails even for a missing file)."""
    try:
        path.unlink()
    except OSError:
        pass


def check_writable(path: str | Path) -> Path:
    """Before long work: can the file ``path`` be written? Makes its folder, creates and
    deletes a small file there (as ``atomic_path`` will), and removes stale temporary files
    of ``path``. Raises ``OutputError`` (one line: the folder and the fix). Returns ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name in it", errno.EISDIR)
    probe = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # a full disk refuses this; an empty file might still fit
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        _remove(probe)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success it replaces ``path`` in one
    rename (so a reader, or a run killed mid-write, sees the old file or the new one, never half
    of one), with the permissions a new file would get. On error (Ctrl-C included) the temporary
    file is removed and ``path`` is left as it was; a full disk, a read-only or unwritable folder
    raise ``OutputError`` (one line)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with output_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors) create 0600 files
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def free_bytes(folder: Path) -> int:
    """Bytes a user may still write on the file system holding ``folder`` (-1: unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize
