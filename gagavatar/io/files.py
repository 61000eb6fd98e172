"""Writing files so that nothing is lost: ``atomic_path`` (a temporary file beside the target,
renamed over it when complete: a crash, Ctrl-C or a full disk leaves the previous file as it
was), ``atomic_folder`` (the same for a folder output, swapped in whole), ``check_output``
before any work (never over an input, a device, a FIFO or a folder; the right extension; a
writable folder), and ``OutputError``, one line naming the folder or device and the fix, for
what cannot be written; ``describe_content``: what a file that is not what was asked for looks
like, for such messages."""
from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gagavatar.errors import InputError, OutputError

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


def describe_content(data: bytes) -> str:
    """What a file looks like by its first 4 KB, for a message: "an empty file", "an HTML page
    (...)", "a PNG image", "a text file", "unrecognised binary data"..."""
    head = data[:4096]
    if not head:
        return "an empty file"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512]:
        return "an HTML page (a download link that returned a web page?)"
    for magic, what in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                        (b"PK\x03\x04", "a zip archive"), (b"\x80", "a Python pickle")):
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "a video (MP4/MOV)"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut at the end of the head is still text
        decoded = head[:e.start].decode("utf-8") if e.start > len(head) - 4 else None
    if decoded is not None and all(c.isprintable() or c.isspace() for c in decoded):
        return "a text file"
    return "unrecognised binary data"


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
    if err.strerror:  # e.g. a name too long: said of the output, not of the temporary file beside it
        return OutputError(f"cannot write {path}: {err.strerror.lower()}; choose another output path", err.errno)
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
    """Delete the temporary files and folders ``atomic_path`` / ``atomic_folder`` left in
    ``folder`` when their process was killed (``.NAME.tmpPID*`` whose process is gone from
    this machine; only those of ``name`` when given). Returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m and name in (None, m["name"]) and not _alive(int(m["pid"])):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file():
                _remove(p)
            else:
                continue
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    """Delete ``path`` if it is there (on a read-only file system unlink fails even for a missing file)."""
    try:
        path.unlink()
    except OSError:
        pass


def check_writable(path: str | Path) -> Path:
    """Before long work: can the file ``path`` be written? Creates and deletes a small file in
    its folder (as ``atomic_path`` will), or in the nearest folder above it that exists (a
    refused command leaves no empty folders behind: the writers make them), and removes stale
    temporary files of ``path``. Raises ``OutputError`` (one line: the folder and the fix).
    Returns ``path``."""
    path = Path(path)
    refuse_special(path)
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():  # a file where a folder of the path should be
        raise output_error(path, NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path)))
    beside = existing / path.name  # where the probe goes: ``path`` itself when its folder exists
    probe = temp_path(beside)
    try:
        remove_stale_temps(path.parent, path.name)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # a full disk refuses this; an empty file might still fit
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise output_error(beside, e) from None
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
            refuse_special(path)  # the rename would replace a device or a FIFO by a plain file
            os.replace(tmp, path)
    finally:
        _remove(tmp)


_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))


def refuse_special(path: str | Path) -> None:
    """An output is written only to a regular file: ``OutputError`` (one line, saying why) for
    a folder, a device (/dev/null), a FIFO or a socket at ``path`` (links followed)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # not there (yet): a new file
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path} is a folder; give a file name in it", errno.EISDIR)
    for test, kind in _KINDS:
        if test(mode):
            raise OutputError(f"{path} is {kind}, not a regular file: the output would replace it; "
                              f"give the path of a file to write", errno.EINVAL)


def _same(a: Path, b: Path) -> bool:
    """The same file or folder: by real path, or by inode (a hard link)."""
    try:
        return os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b)
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    return Path(os.path.realpath(inner)).is_relative_to(os.path.realpath(outer))


def check_output(path: str | Path, inputs=(), suffixes: tuple[str, ...] = ()) -> Path:
    """Before any work: may this command write its output file ``path``? Refused in one line
    (``OutputError``): ``path`` is one of ``inputs`` (the same file by real path or inode; a
    link or a hard link included), a folder, a device or a FIFO, has a suffix not in
    ``suffixes`` (e.g. ``(".mp4",)``), or its folder cannot be written (``check_writable``).
    ``inputs``: every file the command reads (None entries are skipped). Returns ``path``."""
    path = Path(path)
    for given in inputs:
        if given is not None and _same(path, Path(given)):
            raise OutputError(f"{path} is also an input of this command ({given}): writing it would destroy "
                              f"the input; choose another output file", errno.EEXIST)
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: the output is written as {' or '.join(suffixes)}; give a file name ending in "
                          f"{suffixes[0]}", errno.EINVAL)
    return check_writable(path)


def check_output_folder(folder: str | Path, inputs=()) -> Path:
    """``check_output`` for a folder output (a dataset, a run, a report): refused when it is an
    input, holds an input (a folder output is replaced whole) or lies inside one, or is a file,
    device or FIFO; its parent must be writable. Returns ``folder``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is not a folder; give a folder for the output", errno.ENOTDIR)
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        if _same(folder, Path(given)) or _inside(Path(given), folder):
            raise OutputError(f"the output folder {folder} holds an input of this command ({given}): writing "
                              f"it would destroy the input; choose another output folder", errno.EEXIST)
        if _inside(folder, Path(given)):
            raise OutputError(f"the output folder {folder} lies inside an input of this command ({given}); choose "
                              f"an output folder outside it", errno.EEXIST)
    check_writable(folder.with_name(f".{folder.name}.probe"))  # its parent: the folder itself is made later
    return folder


_RENAME_EXCHANGE = 2  # renameat2's flag: swap two names in one step (Linux)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) == 0  # -100: AT_FDCWD
    except (AttributeError, OSError):
        return False


def staging_folder(path: str | Path) -> Path:
    """A new, empty temporary folder beside ``path`` (``.NAME.tmpPID``, hidden: no command reads
    it) to build the folder ``path`` in; ``swap_in`` then puts it in place. One left behind by a
    killed process is removed by the next call for ``path`` (``remove_stale_temps``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    return tmp


def swap_in(staged: str | Path, path: str | Path) -> Path:
    """The complete folder ``staged`` takes ``path``'s place whole (one atomic swap on Linux);
    the folder it replaces is deleted. Returns ``path``."""
    staged, path = Path(staged), Path(path)
    with output_errors(path):
        if not path.exists():
            os.rename(staged, path)
            return path
        if not _exchange(staged, path):  # elsewhere: two renames, the old one put back if the second fails
            aside = staged.with_name(staged.name + ".old")
            os.rename(path, aside)
            try:
                os.rename(staged, path)
            except OSError:
                os.rename(aside, path)
                raise
            staged = aside
    shutil.rmtree(staged, ignore_errors=True)  # now the replaced folder
    return path


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """``atomic_path`` for a folder: yields an empty temporary folder beside ``path`` to build
    the output in (``staging_folder``); on success it takes ``path``'s place whole (``swap_in``),
    so a half-written folder never has a name a command reads. On error or Ctrl-C the
    temporary folder is deleted and ``path`` stays as it was."""
    tmp = staging_folder(path)
    try:
        yield tmp
        swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (their relative names and bytes, in
    order): what an input was, for telling a new input from one seen before."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if p != path:
            digest.update(p.relative_to(path).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def free_bytes(folder: Path) -> int:
    """Bytes a user may still write on the file system holding ``folder`` (-1: unknown)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize
