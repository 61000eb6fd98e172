"""The avatars: ids derived from their content, kept in memory (LRU) and, with ``--cache-dir``,
on disk across restarts.

An avatar's id is a hash of what made it: the upload's bytes, the model's identity (a hash of
its weights and of the head model's tensors, so a different checkpoint never shares ids) and
``AVATAR_FORMAT`` (what the server does with an upload). The same photo uploaded again gets
the same id, and is neither tracked nor reconstructed again.

On disk an avatar is one safetensors file (``<id>.safetensors``: the avatar's tensors and its
source frame; no pickle), written atomically; the folder is bounded by size, the least
recently used removed first. A file that cannot be read is removed and the avatar made again
on its next upload.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from gagavatar.data.frame import HEAD_FIELDS, FrameParams
from gagavatar.geometry import Camera
from gagavatar.model.network import Avatar

log = logging.getLogger("gagavatar.serve")

AVATAR_FORMAT = "gagavatar-serve-avatar/1"  # change it when the same upload would make a different avatar
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22}")  # what avatar_id makes (16 bytes, base64url)


@dataclass
class AvatarEntry:
    id: str
    avatar: object         # the network's Avatar, batch 1, on the model's device
    source: FrameParams    # the source frame [1] the avatar was made from (CPU)
    nbytes: int
    created: float = field(default_factory=time.time)


def avatar_bytes(avatar) -> int:
    return sum(v.nbytes for v in vars(avatar).values() if isinstance(v, torch.Tensor))


# --------------------------------------------------------------------------- ids
def model_identity(animator) -> str:
    """A hash of the network's weights, the head model's tensors and the render size: what makes
    one upload's avatar differ from one server to another."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{AVATAR_FORMAT}|{animator.size}".encode())
    for prefix, module in (("model", animator.model), ("head", animator.head)):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            h.update(f"{prefix}.{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def avatar_id(data: bytes, model_key: str) -> str:
    """The id of the avatar an upload makes: 22 URL-safe characters."""
    h = hashlib.blake2b(digest_size=16)
    h.update(model_key.encode())
    h.update(hashlib.sha256(data).digest())
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def is_avatar_id(text: str) -> bool:
    return ID_PATTERN.fullmatch(text) is not None


# --------------------------------------------------------------------------- memory
class AvatarCache:
    """Avatars by id, bounded by count and bytes; the least recently used go first. A session
    keeps its avatar alive after eviction (only new sessions need the cache)."""

    def __init__(self, max_count: int, max_bytes: int):
        self.max_count, self.max_bytes = max_count, max_bytes
        self._entries: OrderedDict[str, AvatarEntry] = OrderedDict()
        self.created = self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, avatar_id: str) -> bool:
        return avatar_id in self._entries

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def get(self, avatar_id: str) -> AvatarEntry | None:
        entry = self._entries.get(avatar_id)
        if entry is not None:
            self._entries.move_to_end(avatar_id)
        return entry

    def put(self, entry: AvatarEntry, created: bool = True) -> None:
        """Keep ``entry`` (``created``: made now, not read back from disk)."""
        self._entries[entry.id] = entry
        self._entries.move_to_end(entry.id)
        self.created += created
        while len(self._entries) > 1 and (len(self._entries) > self.max_count or self.nbytes > self.max_bytes):
            self._entries.popitem(last=False)
            self.evicted += 1

    def remove(self, avatar_id: str) -> bool:
        return self._entries.pop(avatar_id, None) is not None


# --------------------------------------------------------------------------- disk
class DiskCache:
    """Avatars as files in ``folder``, at most ``max_bytes`` in all (least recently used removed
    first; a read counts as a use). Called on worker threads, never on the event loop."""

    SUFFIX = ".safetensors"

    def __init__(self, folder: str | Path, max_bytes: int, model_key: str):
        from gagavatar.io import check_writable, remove_stale_temps

        self.folder = Path(folder)
        check_writable(self.folder / f"probe{self.SUFFIX}")  # a one-line error if it cannot be written
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.model_key = max_bytes, model_key
        remove_stale_temps(self.folder)
        self.loaded = self.written = self.removed = 0

    def path(self, avatar_id: str) -> Path:
        if not is_avatar_id(avatar_id):  # never a path a client chose
            raise ValueError(f"not an avatar id: {avatar_id!r}")
        return self.folder / f"{avatar_id}{self.SUFFIX}"

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{self.SUFFIX}"))

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files() if p.exists())

    def has(self, avatar_id: str) -> bool:
        return is_avatar_id(avatar_id) and self.path(avatar_id).is_file()

    def save(self, entry: AvatarEntry) -> None:
        from safetensors.torch import save_file

        from gagavatar.io import atomic_path

        tensors, aliases = {}, {}
        for f in fields(entry.avatar):
            t = getattr(entry.avatar, f.name)
            if not isinstance(t, torch.Tensor):
                continue
            same = next((name for name, kept in tensors.items() if kept is t), None)  # e.g. unit splat scales
            if same is not None:
                aliases[f"avatar.{f.name}"] = same
            else:
                tensors[f"avatar.{f.name}"] = t
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        tensors |= {f"source.{name}": getattr(entry.source, name).detach().to("cpu").contiguous()
                    for name in HEAD_FIELDS}
        tensors |= {"source.camera.viewmat": entry.source.camera.viewmat.contiguous(),
                    "source.camera.K": entry.source.camera.K.contiguous()}
        metadata = {"format": AVATAR_FORMAT, "model": self.model_key, "id": entry.id, "aliases": json.dumps(aliases),
                    "n_vertices": str(entry.avatar.n_vertices),
                    "camera_size": json.dumps([entry.source.camera.width, entry.source.camera.height]),
                    "created": str(entry.created)}
        with atomic_path(self.path(entry.id)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self.written += 1
        self.prune()

    def load(self, avatar_id: str, device) -> AvatarEntry | None:
        """The avatar saved as ``avatar_id`` on ``device``, or None (none, or an unreadable file: removed)."""
        if not self.has(avatar_id):
            return None
        path = self.path(avatar_id)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if metadata.get("format") != AVATAR_FORMAT or metadata.get("model") != self.model_key \
                    or metadata.get("id") != avatar_id:
                raise ValueError("made by another model or format")
            for alias, name in json.loads(metadata.get("aliases", "{}")).items():
                tensors[alias] = tensors[name]
            moved = {}  # id of a tensor read -> on the device (aliases stay one tensor)
            avatar = Avatar(**{name[len("avatar."):]: moved.setdefault(id(t), t.to(device))
                               for name, t in tensors.items() if name.startswith("avatar.")},
                            n_vertices=int(metadata["n_vertices"]))
            width, height = json.loads(metadata["camera_size"])
            camera = Camera(tensors["source.camera.viewmat"], tensors["source.camera.K"], int(width), int(height))
            source = FrameParams(**{name: tensors[f"source.{name}"] for name in HEAD_FIELDS}, camera=camera)
            entry = AvatarEntry(avatar_id, avatar, source, avatar_bytes(avatar), float(metadata.get("created", 0)))
        except Exception as e:  # a damaged, foreign or old file: made again on the next upload
            log.warning("avatar cache: %s cannot be used (%s: %s); removed", path.name, type(e).__name__, e)
            path.unlink(missing_ok=True)
            self.removed += 1
            return None
        os.utime(path)  # used now: the last to be removed
        self.loaded += 1
        return entry

    def remove(self, avatar_id: str) -> bool:
        if not self.has(avatar_id):
            return False
        self.path(avatar_id).unlink(missing_ok=True)
        return True

    def prune(self) -> None:
        """Remove the least recently used files until the folder holds at most ``max_bytes`` (the
        newest goes too only when it alone is larger)."""
        entries = []
        for p in self.files():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            self.removed += 1

    def report(self) -> dict:
        files = self.files()
        return {"files": len(files), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "loaded": self.loaded, "written": self.written, "removed": self.removed}
