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

Its parts, one idea a module (everything is importable from here too):

    clips          ``Clip``, ``find_clips``: what to track, under which id, for which person
    partition      ``split_of``, ``shard_of``: a person's split and a clip's shard, from their names
    build_config   ``BuildConfig``: ``track``'s options and how the run is spread
    clip_tracker   ``ClipTracker``: one clip into the dataset, or a ``ClipResult`` saying why not
    workers        ``WorkerPool``: the worker processes, crash-isolated
    build_report   ``BuildSummary``, build_log.jsonl and build_report.json
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from gagavatar.data.format import SPLITS, VIDEO_FILE, DatasetError, read_json, update_index
from gagavatar.system import usable_cores
from gagavatar.tracking.build_config import SHAPING_SETTINGS, BuildConfig
from gagavatar.tracking.build_report import (FAILURES_SHOWN, LOG_FILE, REPORT_FILE, BuildSummary, failure_entry,
                                             failures_in_log, log_result, write_report)
from gagavatar.tracking.clip_tracker import STAGING_DIR, ClipFailed, ClipResult, ClipTracker
from gagavatar.tracking.clips import Clip, find_clips, read_identity_map, video_ids
from gagavatar.tracking.partition import parse_fractions, parse_shard, shard_of, split_of
from gagavatar.tracking.workers import WorkerPool

INDEX_EVERY_S = 30.0                # index.json and the report are rewritten at most this often during a run

__all__ = [
    "build_dataset", "INDEX_EVERY_S",
    "SHAPING_SETTINGS", "BuildConfig",
    "FAILURES_SHOWN", "LOG_FILE", "REPORT_FILE", "BuildSummary",
    "STAGING_DIR", "ClipFailed", "ClipResult", "ClipTracker",
    "Clip", "find_clips", "read_identity_map", "video_ids",
    "parse_fractions", "parse_shard", "shard_of", "split_of",
    "WorkerPool",
]


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
    earlier_failures = failures_in_log(out)
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
    write_report(out, report, summary, "running")
    threads = config.threads or max(1, usable_cores() // max(config.workers, 1))
    pool = WorkerPool(out, config, min(config.workers, len(todo)), threads) if config.workers > 0 and todo else None
    results = pool.map(todo) if pool is not None else map(ClipTracker(out, config), todo)
    bar = tqdm(total=len(todo), unit="clip", desc="build-dataset", disable=not config.progress or not todo)
    last_index = time.perf_counter()
    try:
        for result in results:
            log_result(out, result)
            summary.attempted += 1
            if result.status == "failed":
                summary.failed.append(failure_entry(result))
            else:
                summary.tracked += 1
                summary.frames += result.frames or 0
                summary.no_face_frames += result.no_face
            summary.seconds = time.perf_counter() - started
            bar.set_postfix(frames_per_s=f"{summary.frames_per_s:.1f}", failed=len(summary.failed), refresh=False)
            bar.update(1)
            if time.perf_counter() - last_index > INDEX_EVERY_S:  # the dataset grows as it is built
                update_index(out)
                write_report(out, report, summary, "running")
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
    write_report(out, report, summary, "finished")
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
