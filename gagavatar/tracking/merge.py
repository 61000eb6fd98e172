"""``merge_datasets``: the datasets of a sharded ``gagavatar build-dataset`` run, combined into one.

    gagavatar build-dataset videos/ --out shards/3 --shard 3/8 ...   # one per shard (a cluster array job)
    merge_datasets(["shards/0", ..., "shards/7"], "dataset/")      # gagavatar build-dataset --merge

Every video is copied (or moved) into place in one step, so the merged dataset only
ever holds complete videos and an interrupted merge is resumed by running it again.
The split of a video is a function of its identity (``build.split_of``), so shards
built apart agree; this is verified, as are unique ids and equal settings.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from gagavatar.tracking.build import REPORT_FILE, STAGING_DIR
from gagavatar.data.format import DatasetError, read_json, write_json, scan_videos, update_index


@dataclass
class MergeSummary:
    """What ``merge_datasets`` did."""

    out: Path
    videos: int                  # videos added by this merge
    present: int                 # videos already in ``out`` (a resumed merge)
    failed: list[dict]           # the shards' failed clips
    moved: bool

    def lines(self) -> list[str]:
        how = "moved" if self.moved else "copied"
        return [f"{self.videos} videos {how} into {self.out}"
                + (f" ({self.present} were there already)" if self.present else "")
                + f"; {len(self.failed)} clips failed in the shards"
                + (f" (see {self.out / REPORT_FILE})" if self.failed else "")]


def merge_datasets(shards: list[str | Path], out: str | Path, move: bool = False,
                   progress: bool = True) -> MergeSummary:
    """Combine the datasets of a sharded run into ``out``.

    Every shard's complete videos are copied (``move=True``: moved, one rename per
    video on one filesystem) into ``out``, each appearing in one step. Refused before
    anything is written: a video id in two shards, an identity in two splits, shards
    built with different settings. A merge that was interrupted is resumed by running it
    again (videos already in ``out`` with the same frame count are kept).
    """
    from tqdm import tqdm

    out = Path(out)
    shards = [Path(s) for s in shards]
    if not shards:
        raise ValueError("--merge needs the shard datasets to merge: --merge SHARD_DIR... --out DATASET")
    if any(s.resolve() == out.resolve() for s in shards):
        raise ValueError(f"{out} is one of the shards; merge into a new folder")
    present = {v.id: v for v in scan_videos(out)} if out.is_dir() else {}
    owner: dict[str, Path] = {v: out for v in present}
    split_of_identity = {v.identity: (v.split, out) for v in present.values()}
    settings, failed, jobs = None, [], []
    for shard in shards:
        videos = scan_videos(shard)
        report = read_json(shard / REPORT_FILE) if (shard / REPORT_FILE).is_file() else {}
        if report.get("status") == "running":
            raise ValueError(f"{shard}: its build did not finish (build_report.json says running); rerun that "
                             f"shard's build-dataset first")
        if "settings" in report:
            if settings is not None and report["settings"] != settings[0]:
                key = next(k for k in report["settings"] if report["settings"][k] != settings[0].get(k))
                raise ValueError(f"{shard} was built with {key}={report['settings'][key]!r} but {settings[1]} with "
                                 f"{settings[0].get(key)!r}; merge shards of one build")
            settings = settings or (report["settings"], shard)
        failed += [{**f, "shard": str(shard)} for f in report.get("failed", [])]
        for v in videos:
            if v.path in ("", "."):
                raise DatasetError(f"{shard}: is one video's folder, not a dataset; give the shard's --out folder")
            if v.id in present:
                if present[v.id].n_frames != v.n_frames:
                    raise DatasetError(f"video {v.id!r} is in {out} with {present[v.id].n_frames} frames and in "
                                       f"{shard} with {v.n_frames}; merge into a new folder")
                continue
            if v.id in owner:
                raise DatasetError(f"video id {v.id!r} is in both {owner[v.id]} and {shard}; shards of one build "
                                   f"hold different clips - were two shards given the same --shard K/N?")
            owner[v.id] = shard
            split, where = split_of_identity.setdefault(v.identity, (v.split, shard))
            if split != v.split:
                raise DatasetError(f"identity {v.identity!r} is in split {split!r} in {where} and {v.split!r} in "
                                   f"{shard}; shards must use the same --splits and --seed")
            jobs.append((shard, v))

    out.mkdir(parents=True, exist_ok=True)
    staging = out / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    for shard, v in tqdm(jobs, unit="video", desc="merge", disable=not progress):
        source, target = shard / v.path, out / v.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)  # a folder without video.json: not finished
        if move:
            try:
                os.rename(source, target)
                continue
            except OSError:  # another filesystem: copy, then remove the source
                pass
        temporary = staging / v.id
        shutil.copytree(source, temporary)
        os.rename(temporary, target)
        if move:
            shutil.rmtree(source)
    shutil.rmtree(staging, ignore_errors=True)
    update_index(out)
    if move:
        for shard in shards:
            update_index(shard)
    write_json(out / REPORT_FILE, {"format": "gagavatar-build-report", "status": "merged",
                                    "merged_from": [str(s) for s in shards],
                                    "settings": settings[0] if settings else {},
                                    "failed_count": len(failed), "failed": failed})
    return MergeSummary(out, len(jobs), len(present), failed, move)
