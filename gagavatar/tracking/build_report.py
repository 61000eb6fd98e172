"""The record of a build-dataset run: ``build_log.jsonl`` (one line per clip outcome, appended
as they come, so it survives a kill), ``build_report.json`` (settings, counts, failed clips)
and the summary printed on the console (``BuildSummary.lines``)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gagavatar.data.format import write_json
from gagavatar.tracking.clip_tracker import ClipResult

REPORT_FILE = "build_report.json"   # the run's settings, counts and failed clips
LOG_FILE = "build_log.jsonl"        # one line per clip outcome, appended as they come (survives a kill)
FAILURES_SHOWN = 10                 # failed clips named on the console; the report lists them all


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
        out += self.failure_lines()
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

    def failure_lines(self, limit: int = FAILURES_SHOWN) -> list[str]:
        """Each failed clip and its one-line reason, ``limit`` of them, then how many more."""
        out = [f"  failed: {f.get('clip')}: {f.get('reason') or '(no reason recorded)'}"
               + (" (earlier run)" if f.get("earlier") else "") for f in self.failed[:limit]]
        if len(self.failed) > limit:
            out.append(f"  ... and {len(self.failed) - limit} more")
        return out


def failure_entry(result: ClipResult) -> dict:
    return {"clip": result.clip.name, "id": result.clip.id, "reason": result.reason, "frames": result.frames}


def log_result(out: Path, result: ClipResult) -> None:
    entry = {"clip": result.clip.name, "id": result.clip.id, "status": result.status, "frames": result.frames,
             "no_face_frames": result.no_face, "seconds": round(result.seconds, 3), "time": time.time()}
    if result.reason:
        entry["reason"] = result.reason
    with open(out / LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def failures_in_log(out: Path) -> dict[str, dict]:
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


def write_report(out: Path, report: dict, summary: BuildSummary, status: str) -> None:
    write_json(out / REPORT_FILE, {
        "format": "gagavatar-build-report", "status": status, **report,
        "clips": summary.clips, "tracked": summary.tracked, "skipped": summary.skipped,
        "failed_count": len(summary.failed), "frames": summary.frames, "no_face_frames": summary.no_face_frames,
        "seconds": round(summary.seconds, 2), "frames_per_s": round(summary.frames_per_s, 2),
        "splits": {s: {"videos": v, "identities": i} for s, (v, i) in summary.splits.items()},
        "failed": summary.failed})
