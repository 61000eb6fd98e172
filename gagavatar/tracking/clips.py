"""The clips of a build-dataset run: every video, image folder and GAGAvatar_track folder of a
folder tree or a list file, each with a file-name-safe video id and the person it shows."""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from gagavatar import io as gio
from gagavatar.data.format import VIDEO_FILE, read_json


@dataclass(frozen=True)
class Clip:
    """One input clip.

    path: the video file, image folder or GAGAvatar_track folder (absolute).
    name: its path relative to the input (POSIX): names the clip in maps, reports and shards.
    id: its video id in the dataset. identity: the person (None: the video id, i.e. its own person).
    """

    path: str
    name: str
    id: str
    identity: str | None = None
    reference: bool = False


def find_clips(input: str | Path, identity_map: str | Path | None = None, identity_level: int | None = None,
               exclude: tuple[str | Path, ...] = ()) -> list[Clip]:
    """The clips of ``input`` in a fixed order, with ids and identities.

    input: a folder tree (every video, image folder and reference folder in it), one
    video or image folder, or a list file: one path per line (relative to the list's
    folder, or absolute), optionally followed by a tab or comma and the identity.
    identity_map: a file of ``clip<TAB or comma>identity`` lines (or a JSON object);
    a clip is named by its path relative to the input, with or without the extension.
    identity_level: the N-th folder of a clip's relative path (1 = the top one) names
    the person. Without either, a list's identity column, else each clip is its own person.
    ``exclude``: folders not to look into (the output dataset).
    """
    source = Path(input)
    if not source.exists():
        raise gio.InputError(f"{source}: no such file or folder")
    if identity_map is not None and identity_level is not None:
        raise ValueError("give --identity-map or --identity-level, not both")
    if source.is_file() and not (gio.is_video(source) or gio.is_image(source)):
        clips = _read_list(source)
    else:
        clips = _walk(source, {Path(p).resolve() for p in exclude})
    if not clips:
        raise gio.InputError(f"{source}: no videos ({', '.join(gio.VIDEO_EXTENSIONS)}), image folders or "
                             f"GAGAvatar_track folders found")
    count = Counter(c.name for c in clips)
    dup = sorted(n for n, k in count.items() if k > 1)
    if dup:
        raise gio.InputError(f"{source}: clip {dup[0]!r} is listed {count[dup[0]]} times; list each clip once")
    clips = [replace(c, id=i) for c, i in zip(clips, video_ids([c.name for c in clips]))]
    if identity_map is not None:
        mapping = read_identity_map(identity_map)
        clips = [replace(c, identity=_lookup(mapping, c)) for c in clips]
        missing = [c.name for c in clips if c.identity is None]
        if missing:
            raise ValueError(f"{identity_map}: no identity for {len(missing)} clip(s), e.g. {missing[:3]}; add "
                             f"lines 'CLIP<TAB>IDENTITY' with CLIP the path relative to {source}")
    elif identity_level is not None:
        clips = [replace(c, identity=_identity_at_level(c.name, identity_level)) for c in clips]
    return clips


def _walk(root: Path, exclude: set[Path]) -> list[Clip]:
    """Every clip below ``root`` (without ids yet), sorted by name."""
    from gagavatar.data.reference import is_reference_folder

    root = root.resolve()
    if root.is_file() or is_reference_folder(root):
        return [Clip(str(root), root.name, "", reference=root.is_dir())]
    found = []
    for folder, dirs, files in os.walk(root):
        folder = Path(folder)
        name = lambda p: p.relative_to(root).as_posix() if p != root else root.name  # noqa: E731
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (folder / d).resolve() not in exclude
                         and not (folder / d / VIDEO_FILE).is_file())  # a tracked video: our own output
        for d in [d for d in dirs if is_reference_folder(folder / d)]:
            found.append(Clip(str(folder / d), name(folder / d), "", reference=True))
            dirs.remove(d)
        files = sorted(f for f in files if not f.startswith("."))
        if any(gio.is_image(f) for f in files):
            found.append(Clip(str(folder), name(folder), ""))
        found += [Clip(str(folder / f), name(folder / f), "") for f in files if gio.is_video(f)]
    return sorted(found, key=lambda c: c.name)


def _read_list(path: Path) -> list[Clip]:
    """The clips of a list file (without ids yet), in its order, with the identity column."""
    from gagavatar.data.reference import is_reference_folder

    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ","
        clip, _, identity = (part.strip() for part in line.partition(sep))
        entries.append(((path.parent / clip).resolve(), identity or None))
    if not entries:
        return []
    # names: relative to the list's folder, or to the entries' common folder when some lie outside it
    base = path.parent.resolve()
    if not all(p.is_relative_to(base) for p, _ in entries):
        base = Path(os.path.commonpath([p.parent for p, _ in entries]))
    return [Clip(str(p), p.relative_to(base).as_posix(), "", ident, is_reference_folder(p)) for p, ident in entries]


def video_ids(names: list[str]) -> list[str]:
    """Unique, file-name-safe video ids of clip names: ``id00012/clip 003.mp4`` -> ``id00012__clip_003``.

    Names that would give the same id (``a.mp4`` and ``a.mov``) get a hash of the name appended.
    """
    base = [_slug(n) for n in names]
    count = Counter(base)
    return [b if count[b] == 1 else f"{b}-{hashlib.sha1(n.encode()).hexdigest()[:8]}" for b, n in zip(base, names)]


def _slug(name: str) -> str:
    path = PurePosixPath(name)
    if gio.is_video(path) or gio.is_image(path):
        path = path.with_suffix("")
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in path.parts]
    slug = "__".join(p for p in parts if p)
    return ("_" + slug[1:] if slug.startswith(".") else slug) or "clip"  # never a hidden folder


def read_identity_map(path: str | Path) -> dict[str, str]:
    """clip -> identity from ``clip<TAB or comma>identity`` lines (``#`` comments) or a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise gio.InputError(f"{path}: identity map not found")
    if path.suffix.lower() == ".json":
        d = read_json(path)
        return {str(k): str(v) for k, v in d.items()}
    mapping = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ","
        clip, _, identity = (part.strip() for part in line.partition(sep))
        if not identity:
            raise ValueError(f"{path}:{n}: expected 'CLIP<TAB>IDENTITY' (or 'CLIP,IDENTITY'), got {line!r}")
        mapping[clip] = identity
    return mapping


def _lookup(mapping: dict[str, str], clip: Clip) -> str | None:
    """A clip's identity in a map: by its name, its name without the extension, its id or its full path."""
    name = clip.name
    stem = str(PurePosixPath(name).with_suffix("")) if gio.is_video(name) or gio.is_image(name) else name
    for key in (name, stem, clip.id, clip.path):
        if key in mapping:
            return mapping[key]
    return None


def _identity_at_level(name: str, level: int) -> str:
    folders = PurePosixPath(name).parts[:-1]
    if level < 1:
        raise ValueError(f"--identity-level {level}: count folders from 1 (the top folder below the input)")
    if level > len(folders):
        raise ValueError(f"clip {name!r} has {len(folders)} folder(s) above it; --identity-level {level} needs "
                         f"at least {level} (use a smaller level or --identity-map)")
    return folders[level - 1]
