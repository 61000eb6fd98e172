"""``build_dataset``: a folder tree (or a list) of videos and image folders in, one dataset out.

    clips = find_clips("videos/", identity_level=1)        # id00012/clip_003.mp4 -> person "id00012"
    build_dataset(clips, "dataset/", BuildConfig(workers=2, splits=(0.9, 0.05, 0.05)))
    merge_datasets(["shard0/", "shard1/"], "dataset/")      # gagavatar.tracking.merge: a sharded run's datasets

Clips: every video file, every folder holding images (its frames), and every
GAGAvatar_track output folder (imported with ``import_reference``, not re-tracked).
A clip's video id is its path relative to the input, folders joined by ``__``.

Each clip is tracked (``gagavatar.tracking.tracker.track``) by a worker process
into the hidden folder ``DATASET/.staging/<id>`` and renamed into place in one
step once complete, so the dataset (and index.json) only ever holds complete
videos, a killed run resumes by running it again (finished clips are skipped,
unfinished ones start over), and a crashed clip leaves nothing behind. A clip
that cannot be decoded, has no face in any frame, or crashes the tracker (or
kills its process) is recorded in ``build_log.jsonl`` (one line per clip) and
``build_report.json``, and the run goes on.

The split of a video is a seeded hash of its identity (``split_of``), so it
never depends on which other clips, runs or shards there are: shards built
apart agree, and ``gagavatar.tracking.merge.merge_datasets`` verifies that they do.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath

from gagavatar import io as gio
from gagavatar.data.format import SPLITS, VIDEO_FILE, DatasetError, read_json, write_json, update_index

REPORT_FILE = "build_report.json"   # the run's settings, counts and failed clips
LOG_FILE = "build_log.jsonl"        # one line per clip outcome, appended as they come (survives a kill)
STAGING_DIR = ".staging"            # work in progress; hidden folders are not part of a dataset
INDEX_EVERY_S = 30.0                # index.json and the report are rewritten at most this often during a run
# Environment variables that size the thread pools of OpenMP, BLAS and numexpr; read when
# those libraries load, so they are set before a worker process starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
# Settings that change what a video holds: a resumed run or a merge must use the same.
SHAPING_SETTINGS = ("size", "frame_format", "smooth", "head_model", "splits", "seed")


# ---------------------------------------------------------------------------
# Clips: what to track, under which id, for which person
# ---------------------------------------------------------------------------

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


def split_of(identity: str, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05), seed: int = 0) -> str:
    """The split (train, val or test) of one person: a seeded hash of the name against the fractions.

    A function of the identity alone, so it does not depend on the other clips, the
    run or the shard; about ``fractions`` of many identities fall in each split.
    """
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64  # uniform in [0, 1)
    edge = 0.0
    for split, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return split
    return [s for s, f in zip(SPLITS, fractions) if f > 0][-1]  # rounding at the top end


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.9,0.05,0.05"`` -> train, val, test fractions (normalised to sum to 1)."""
    try:
        fractions = tuple(float(x) for x in text.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"--splits {text!r}: give three non-negative train,val,test fractions, e.g. 0.9,0.05,0.05")
    total = sum(fractions)
    return fractions if abs(total - 1.0) < 1e-9 else tuple(f / total for f in fractions)


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8): the fourth of eight shards (K counts from 0, as SLURM_ARRAY_TASK_ID)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard {text!r}: give K/N with 0 <= K < N, e.g. --shard 0/8 ... --shard 7/8")
    return int(m.group(1)), int(m.group(2))


def shard_of(clip: Clip, n_shards: int) -> int:
    """Which of ``n_shards`` shards tracks a clip: a hash of its name, so it does not depend on the
    other clips, on which are finished, or on the order of a list."""
    return int.from_bytes(hashlib.sha256(clip.name.encode()).digest()[:8], "big") % n_shards


# ---------------------------------------------------------------------------
# Tracking one clip (in a worker process)
# ---------------------------------------------------------------------------

@dataclass
class BuildConfig:
    """How clips are tracked (``track``'s options) and how the run is spread.

    workers: tracking processes (0: in this process, without crash isolation).
    threads: torch/BLAS/OpenCV threads per worker (default: the usable cores / workers).
    """

    size: int = 512
    frame_format: str = "jpg"
    smooth: float = 0.0
    overlay: bool = False
    head_model: str | None = None          # FLAME-format file (default: the bundled synthetic head)
    landmark_embedding: str | None = None
    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    retry_failed: bool = False              # track clips that failed in an earlier run again
    progress: bool = True

    def settings(self) -> dict:
        return {"size": self.size, "frame_format": self.frame_format, "smooth": self.smooth,
                "head_model": self.head_model or "bundled", "splits": list(self.splits), "seed": self.seed}


@dataclass
class ClipResult:
    """What became of one clip. status: "tracked", "imported" or "failed"."""

    clip: Clip
    status: str
    frames: int | None = None       # frames of the clip (None: unknown, it could not be read)
    no_face: int = 0                # frames without a face (valid=False)
    reason: str = ""                # why it failed, one line
    seconds: float = 0.0
    videos: int = 0                 # dataset videos written (a reference folder may hold several)


class ClipFailed(Exception):
    """A clip was read but is no use (no face in any frame); ``frames`` says how many it had."""

    def __init__(self, message: str, frames: int | None = None):
        super().__init__(message)
        self.frames = frames


class ClipTracker:
    """Tracks clips into ``out`` one at a time (one per worker process; the head model is loaded once)."""

    def __init__(self, out: str | Path, config: BuildConfig):
        self.out = Path(out)
        self.config = config
        self._head = None

    @property
    def head(self):
        if self._head is None:
            from gagavatar.head import HeadModel

            if self.config.head_model is not None:
                self._head = HeadModel.load(self.config.head_model, landmark_embedding=self.config.landmark_embedding)
            else:
                self._head = HeadModel.default()
        return self._head

    def __call__(self, clip: Clip) -> ClipResult:
        staging = self.out / STAGING_DIR / clip.id
        shutil.rmtree(staging, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            if clip.reference:
                folder, frames, no_face, videos = self._import(clip, staging)
            else:
                folder, frames, no_face, videos = self._track(clip, staging)
            os.rename(folder, self.out / clip.id)  # complete: it appears in one step
            return ClipResult(clip, "imported" if clip.reference else "tracked", frames, no_face,
                              seconds=time.perf_counter() - t0, videos=videos)
        except Exception as e:  # noqa: BLE001 - any failure of one clip is recorded, the run goes on
            frames = e.frames if isinstance(e, ClipFailed) else _count_frames(clip)
            return ClipResult(clip, "failed", frames, reason=_one_line(e), seconds=time.perf_counter() - t0)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _track(self, clip: Clip, staging: Path) -> tuple[Path, int, int, int]:
        from gagavatar.tracking.tracker import track

        c = self.config
        identity = clip.identity or clip.id
        s = track(clip.path, staging, head_model=self.head, size=c.size, smooth=c.smooth, video_id=clip.id,
                  identity=identity, split=split_of(identity, c.splits, c.seed), overlay=c.overlay,
                  frame_format=c.frame_format, progress=False)
        if s.n_tracked == 0:
            raise ClipFailed(f"no face in any of its {s.n_frames} frame(s)", s.n_frames)
        return s.video_dir, s.n_frames, len(s.no_face), 1

    def _import(self, clip: Clip, staging: Path) -> tuple[Path, int, int, int]:
        """A GAGAvatar_track folder: imported, each of its videos renamed ``<clip id>__<its video>``
        (just ``<clip id>`` for one video), of the clip's identity (default: each video its own)."""
        import numpy as np

        from gagavatar.data.format import PARAMS_FILE
        from gagavatar.data.reference import import_reference

        infos = import_reference(clip.path, staging / "import", frame_format=self.config.frame_format)
        single = len(infos) == 1
        result = staging / "result"
        if not single:
            result.mkdir()
        frames = no_face = 0
        for info in infos:
            video_id = clip.id if single else f"{clip.id}__{info.id}"
            folder = result if single else result / info.id
            os.rename(staging / "import" / info.path, folder)
            identity = clip.identity or video_id
            split = split_of(identity, self.config.splits, self.config.seed)
            path = clip.id if single else f"{clip.id}/{info.id}"
            info = replace(info, id=video_id, identity=identity, split=split, path=path)
            write_json(folder / VIDEO_FILE, asdict(info))
            with np.load(folder / PARAMS_FILE) as p:
                no_face += int((~p["valid"]).sum())
            frames += info.n_frames
        return result, frames, no_face, len(infos)


def _count_frames(clip: Clip) -> int | None:
    """Frames of a clip that failed, when its file says (None when it cannot be read at all)."""
    try:
        path = Path(clip.path)
        if path.is_dir():
            return len(gio.list_images(path))
        return gio.video_info(path).n_frames if gio.is_video(path) else 1
    except Exception:  # noqa: BLE001 - a count is only a courtesy
        return None


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = str(error)
    if "=== stderr ===" in text:  # imageio-ffmpeg appends ffmpeg's whole banner: its last line says what went wrong
        head, _, tail = text.partition("=== stderr ===")
        text = f"{head.strip()} ... {(tail.strip().splitlines() or [''])[-1]}"
    text = " ".join(text.split()) or "(no message)"
    text = text if isinstance(error, (ClipFailed, gio.InputError)) else f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------

def usable_cores() -> int:
    """Cores this process may run on (a cluster job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@contextmanager
def _thread_environment(threads: int):
    """Thread-count variables set while worker processes start (they inherit them), then restored."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES + ("GLOG_minloglevel",)}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's per-graph warnings, once per clip and worker
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(conn, out: str, config: BuildConfig, threads: int, parent: int) -> None:
    """A worker: receives clips, tracks each, sends back a ``ClipResult``; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    _exit_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    tracker = ClipTracker(out, config)
    while True:
        try:
            clip = conn.recv()
        except EOFError:
            return
        if clip is None:
            return
        conn.send(tracker(clip))


def _exit_with_parent(parent: int) -> None:
    """A thread that ends this process when its parent is gone (a killed run leaves no worker
    writing into the dataset that the rerun then cleans)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Worker:
    def __init__(self, ctx, out: Path, config: BuildConfig, threads: int):
        self.conn, child = ctx.Pipe()
        with _thread_environment(threads):
            self.process = ctx.Process(target=_worker_main, args=(child, str(out), config, threads, os.getpid()),
                                       daemon=True, name="gagavatar-build-worker")
            self.process.start()
        child.close()
        self.clip: Clip | None = None


class WorkerPool:
    """``workers`` spawned processes, one clip each at a time. A worker that dies (segfault,
    out of memory) fails only its clip: it is recorded and a fresh worker takes its place."""

    def __init__(self, out: Path, config: BuildConfig, workers: int, threads: int):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")  # fork would copy torch's and MediaPipe's threads
        self.args = (out, config, threads)
        self.workers = [_Worker(self.ctx, *self.args) for _ in range(workers)]

    def map(self, clips: list[Clip]):
        """Yields a ``ClipResult`` per clip, in the order they finish."""
        from multiprocessing.connection import wait

        queue = deque(clips)
        while True:
            for i, w in enumerate(self.workers):
                if w.clip is None and queue:
                    self.workers[i] = w = self._send(w, queue.popleft())
            busy = [w for w in self.workers if w.clip is not None]
            if not busy:
                return
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    yield self._receive(w)

    def _send(self, w: _Worker, clip: Clip) -> _Worker:
        try:
            w.conn.send(clip)
        except OSError:  # it died while idle: a fresh one
            w = _Worker(self.ctx, *self.args)
            w.conn.send(clip)
        w.clip = clip
        return w

    def _receive(self, w: _Worker) -> ClipResult:
        clip, w.clip = w.clip, None
        try:
            if w.conn.poll():
                return w.conn.recv()
        except (EOFError, OSError):
            pass
        w.process.join(5)
        code = w.process.exitcode
        why = " (SIGKILL: out of memory?)" if code == -signal.SIGKILL else ""
        self.workers[self.workers.index(w)] = _Worker(self.ctx, *self.args)
        return ClipResult(clip, "failed", _count_frames(clip),
                          reason=f"the tracking process died on this clip (exit code {code}{why})")

    def close(self) -> None:
        for w in self.workers:
            if w.clip is None and w.process.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.process.join(10 if w.clip is None else 0)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join()


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

@dataclass
class BuildSummary:
    """What a ``build_dataset`` run did."""

    out: Path
    clips: int                       # clips of this run (of its shard)
    tracked: int = 0                 # clips finished by this run
    skipped: int = 0                 # clips finished by an earlier run
    attempted: int = 0               # clips this run tried (tracked or failed)
    failed: list[dict] = field(default_factory=list)  # every failed clip: this run's and earlier ones not retried
    frames: int = 0                  # frames tracked by this run
    no_face_frames: int = 0          # of those, frames without a face (valid=False)
    seconds: float = 0.0
    workers: int = 1
    splits: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (videos, identities)
    own_identities: bool = False     # no identity rule: each clip its own person

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        report = self.out / REPORT_FILE
        out = [f"{self.tracked} clips tracked, {len(self.failed)} failed"
               + (f" (see {report})" if self.failed else "")]
        if self.attempted:
            how = f"{self.workers} worker process(es)" if self.workers else "this process"
            out.append(f"  {self.frames} frames in {self.seconds:.1f} s: {self.frames_per_s:.1f} tracked frames/s "
                       f"in {how}; {self.no_face_frames} frame(s) without a face (kept, valid=False)")
        if self.skipped:
            out.append(f"  {self.skipped} clip(s) finished by an earlier run (skipped)")
        earlier = sum(1 for f in self.failed if f.get("earlier"))
        if earlier:
            out.append(f"  {earlier} of the failures are from an earlier run (--retry-failed tracks them again)")
        if self.splits:
            counts = ", ".join(f"{s} {v} videos / {i} identities" for s, (v, i) in self.splits.items())
            out.append(f"  dataset: {counts} -> {self.out}")
        if self.own_identities:
            out.append("  each clip is its own identity: give --identity-level or --identity-map so that one "
                       "person's clips share a split")
        return out


def build_dataset(clips: list[Clip], out: str | Path, config: BuildConfig | None = None,
                  shard: tuple[int, int] | None = None, input: str = "") -> BuildSummary:
    """Track ``clips`` (``find_clips``) into the dataset ``out``; resumable, failures recorded.

    shard (K, N): track only the clips with ``shard_of(clip, N) == K``. Returns the summary;
    raises only for problems of the run itself (bad options, an incompatible ``out``).
    """
    from tqdm import tqdm

    config = config or BuildConfig()
    out = Path(out)
    if config.size < 64 or config.size % 2:
        raise ValueError(f"--size {config.size}: use an even size of at least 64 (the released model uses 512)")
    if shard is not None:
        clips = [c for c in clips if shard_of(c, shard[1]) == shard[0]]
    inside = next((c for c in clips if Path(c.path).resolve().is_relative_to(out.resolve())), None)
    if inside is not None:  # its clip folders would be taken for unfinished ones and cleaned
        raise ValueError(f"{inside.path} lies inside --out {out}; write the dataset to a folder outside the input")
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # a killed run's work in progress
    summary = BuildSummary(out, len(clips), workers=config.workers,
                           own_identities=bool(clips) and all(c.identity is None for c in clips))

    # what earlier runs did: finished clips are skipped, unfinished ones start over
    todo = []
    earlier_failures = _failures_in_log(out)
    for clip in clips:
        folder = out / clip.id
        videos = _finished_videos(folder)
        if videos:
            _check_identity(clip, videos, folder, config)
            summary.skipped += 1
            continue
        if folder.exists():
            shutil.rmtree(folder)  # unfinished (by hand or another tool): start over
        if clip.id in earlier_failures and not config.retry_failed:
            summary.failed.append({**earlier_failures[clip.id], "earlier": True})
            continue
        todo.append(clip)

    started = time.perf_counter()
    report = {"input": str(input), "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
              "settings": config.settings(), "workers": config.workers}
    _write_report(out, report, summary, "running")
    threads = config.threads or max(1, usable_cores() // max(config.workers, 1))
    pool = WorkerPool(out, config, min(config.workers, len(todo)), threads) if config.workers > 0 and todo else None
    results = pool.map(todo) if pool is not None else map(ClipTracker(out, config), todo)
    bar = tqdm(total=len(todo), unit="clip", desc="build-dataset", disable=not config.progress or not todo)
    last_index = time.perf_counter()
    try:
        for result in results:
            _log(out, result)
            summary.attempted += 1
            if result.status == "failed":
                summary.failed.append(_failure(result))
            else:
                summary.tracked += 1
                summary.frames += result.frames or 0
                summary.no_face_frames += result.no_face
            summary.seconds = time.perf_counter() - started
            bar.set_postfix(frames_per_s=f"{summary.frames_per_s:.1f}", failed=len(summary.failed), refresh=False)
            bar.update(1)
            if time.perf_counter() - last_index > INDEX_EVERY_S:  # the dataset grows as it is built
                update_index(out)
                _write_report(out, report, summary, "running")
                last_index = time.perf_counter()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
    summary.seconds = time.perf_counter() - started
    index = update_index(out)
    for split in SPLITS:
        videos = [v for v in index.videos if v.split == split]
        if videos:
            summary.splits[split] = (len(videos), len({v.identity for v in videos}))
    _write_report(out, report, summary, "finished")
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    return summary


def _finished_videos(folder: Path) -> list[dict]:
    """The video.json contents of a finished clip's folder (its own, or its videos' for a reference folder)."""
    if (folder / VIDEO_FILE).is_file():
        return [read_json(folder / VIDEO_FILE)]
    if not folder.is_dir():
        return []
    return [read_json(f / VIDEO_FILE) for f in sorted(folder.iterdir()) if (f / VIDEO_FILE).is_file()]


def _check_identity(clip: Clip, videos: list[dict], folder: Path, config: BuildConfig) -> None:
    """A finished clip of an earlier run must have the identity and split this run gives it."""
    for v in videos:
        identity = clip.identity or v.get("id")
        split = split_of(identity, config.splits, config.seed)
        if (v.get("identity"), v.get("split")) != (identity, split):
            raise DatasetError(f"{folder}: an earlier run tracked it as identity {v.get('identity')!r} (split "
                               f"{v.get('split')}), this run gives {identity!r} ({split}); keep the earlier "
                               f"identity options, or build into a new --out")


def _check_settings(out: Path, config: BuildConfig) -> None:
    path = out / REPORT_FILE
    if not path.is_file():
        return
    before = read_json(path).get("settings", {})
    now = config.settings()
    for key in SHAPING_SETTINGS:
        if key in before and before[key] != now[key]:
            raise ValueError(f"{out} was built with {key}={before[key]!r}, this run asks for {now[key]!r}; "
                             f"use the same options to resume, or a new --out")


def _failure(result: ClipResult) -> dict:
    return {"clip": result.clip.name, "id": result.clip.id, "reason": result.reason, "frames": result.frames}


def _log(out: Path, result: ClipResult) -> None:
    entry = {"clip": result.clip.name, "id": result.clip.id, "status": result.status, "frames": result.frames,
             "no_face_frames": result.no_face, "seconds": round(result.seconds, 3), "time": time.time()}
    if result.reason:
        entry["reason"] = result.reason
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _failures_in_log(out: Path) -> dict[str, dict]:
    """id -> failure entry of the clips whose last outcome in the log is a failure."""
    path = out / LOG_FILE
    last: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                last[entry["id"]] = entry
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a kill
    return {i: {k: e.get(k) for k in ("clip", "id", "reason", "frames")}
            for i, e in last.items() if e.get("status") == "failed"}


def _write_report(out: Path, report: dict, summary: BuildSummary, status: str) -> None:
    write_json(out / REPORT_FILE, {
        "format": "gagavatar-build-report", "status": status, **report,
        "clips": summary.clips, "tracked": summary.tracked, "skipped": summary.skipped,
        "failed_count": len(summary.failed), "frames": summary.frames, "no_face_frames": summary.no_face_frames,
        "seconds": round(summary.seconds, 2), "frames_per_s": round(summary.frames_per_s, 2),
        "splits": {s: {"videos": v, "identities": i} for s, (v, i) in summary.splits.items()},
        "failed": summary.failed})
