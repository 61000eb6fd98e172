"""Unpacking an untrusted .zip: nothing outside the destination, sizes and counts capped."""
from __future__ import annotations

from pathlib import Path

from gagavatar.errors import InputError, LimitError, PathEscapeError


def extract_zip(archive: str | Path | bytes, dest: str | Path, max_bytes: int = 1 << 30,
                max_files: int = 100_000) -> Path:
    """Unpack the .zip ``archive`` (a file, or its bytes) into ``dest``: every member must stay inside ``dest`` (no absolute
    path, no ``..``, no link), and at most ``max_files`` members and ``max_bytes`` unpacked bytes
    are written, counted as they are written (a zip bomb stops at the limit, whatever its headers
    claim). Returns the archive's one top folder if it has one, else ``dest``. Any violation is an
    ``InputError`` (``LimitError`` over a limit, ``PathEscapeError`` for a way out) and what was unpacked is removed."""
    import shutil
    import stat
    import zipfile

    import io  # the standard library's: this package is gagavatar.io

    name = "the archive" if isinstance(archive, bytes) else Path(archive).name
    source = io.BytesIO(archive) if isinstance(archive, bytes) else Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(source) as z:
            members = z.infolist()
            if len(members) > max_files:
                raise LimitError(f"{name}: the archive holds {len(members):,} files, more than the "
                                 f"{max_files:,} allowed")
            for member in members:
                target = (root / member.filename).resolve()
                if Path(member.filename).is_absolute() or not target.is_relative_to(root) or \
                        stat.S_ISLNK(member.external_attr >> 16):
                    raise PathEscapeError(f"{name}: the archive holds a path outside itself ({member.filename!r})")
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise LimitError(f"{name}: the archive unpacks to more than the "
                                             f"{max_bytes / 2**20:,.0f} MB allowed")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(f"{name}: not a readable zip archive ({e})") from e
    except InputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = [p for p in dest.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
