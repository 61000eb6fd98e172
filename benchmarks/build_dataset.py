"""Benchmark of ``gagavatar build-dataset``: 2 workers against 1, and a SIGKILL + resume.

    python benchmarks/build_dataset.py [--work /tmp/gagavatar_bench_build] [--size 512]

Makes 12 short real clips (2.5 s pieces of the shared obama.mp4 and LivePortrait
d*.mp4, cut with imageio-ffmpeg's ffmpeg), one corrupt file (a real clip cut short,
no index) and one clip without a face (a moving gradient), all under --work (never
in the repository), then:

1. builds them with --workers 1 and with --workers 2 (the same command otherwise),
   in the order 1, 2, 2, 1 (--repeats 2; a load that drifts during the runs then
   weighs on both alike), and prints the wall times, their ratio (the target:
   <= 0.65 on 2 cores) and the CPU time each used;
2. builds them again with --workers 2, SIGKILLs the run at a random moment, reruns
   it, and checks that the result equals the uninterrupted run's (same clips, frame
   counts and valid flags) and that no clip was tracked twice.

Prints the load average around each run: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("GAGAVATAR_REALDATA", ROOT.parent / "shared" / "realdata"))
# (person, source clip, start seconds): 12 pieces of 2.5 s
PIECES = [("obama", "obama.mp4", 0.0), ("obama", "obama.mp4", 3.5), ("obama", "obama.mp4", 7.0),
          ("d3", "liveportrait/d3.mp4", 1.0), ("d3", "liveportrait/d3.mp4", 6.0),
          ("d6", "liveportrait/d6.mp4", 2.0), ("d6", "liveportrait/d6.mp4", 20.0),
          ("d10", "liveportrait/d10.mp4", 0.0), ("d10", "liveportrait/d10.mp4", 8.0),
          ("d11", "liveportrait/d11.mp4", 3.0),
          ("d14", "liveportrait/d14.mp4", 0.0), ("d14", "liveportrait/d14.mp4", 10.0)]
SECONDS = 2.5


def make_clips(folder: Path) -> Path:
    """The clip tree: PERSON/partK.mp4, plus broken/truncated.mp4 and landscape/sky.mp4."""
    import imageio.v2 as iio
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    shutil.rmtree(folder, ignore_errors=True)
    for k, (person, source, start) in enumerate(PIECES):
        out = folder / person / f"part{k:02d}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-ss", str(start), "-i", str(REALDATA / source),
                        "-t", str(SECONDS), "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], check=True)
    # corrupt: the first half of a real clip (the mp4 index is at the end: nothing can be decoded)
    whole = (folder / "obama" / "part00.mp4").read_bytes()
    (folder / "broken").mkdir()
    (folder / "broken" / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    # no face: a landscape-like gradient that drifts
    H, W = 360, 480
    y, x = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    (folder / "landscape").mkdir()
    frames = []
    for t in range(50):
        sky = np.stack([0.3 + 0.4 * y, 0.5 + 0.3 * y, 0.9 - 0.3 * y], -1)
        hills = (y > 0.6 + 0.08 * np.sin(8 * x + t / 10))[..., None]
        frames.append((np.where(hills, [0.2, 0.5, 0.2], sky) * 255).astype(np.uint8))
    iio.mimwrite(folder / "landscape" / "sky.mp4", frames, fps=25, macro_block_size=1)
    return folder


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def command(clips: Path, out: Path, workers: int, size: int) -> list[str]:
    return [sys.executable, "-m", "gagavatar", "build-dataset", str(clips), "--out", str(out),
            "--workers", str(workers), "--identity-level", "1", "--size", str(size)]


def run(clips: Path, out: Path, workers: int, size: int) -> tuple[float, float]:
    """Wall and CPU seconds (of the command and its worker processes) of one build."""
    shutil.rmtree(out, ignore_errors=True)
    print(f"--workers {workers}: {load()}", flush=True)
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    done = subprocess.run(command(clips, out, workers, size), env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        sys.exit(f"build-dataset failed:\n{done.stderr[-3000:]}")
    print("\n".join("    " + line for line in done.stdout.strip().splitlines()))
    print(f"    wall {seconds:.1f} s, CPU {cpu:.1f} s ({cpu / seconds:.2f} cores busy); after: {load()}", flush=True)
    return seconds, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished descendant, workers included
    return usage.ru_utime + usage.ru_stime


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def contents(root: Path) -> dict:
    from gagavatar.data import Dataset

    return {v.id: (v.identity, v.split, v.n_frames, v.params["valid"].tolist(), v.params["expression"])
            for v in Dataset(root).videos}


def kill_and_resume(clips: Path, reference: Path, out: Path, size: int, at: float) -> None:
    """SIGKILL a 2-worker run after ``at`` seconds, rerun it, compare with ``reference``."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(command(clips, out, 2, size), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(at)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.time() < deadline:
        time.sleep(0.1)  # its workers notice and quit
    log = out / "build_log.jsonl"
    before = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/video.json")}
    unlogged = sorted(set(finished) - {e["id"] for e in before})  # killed between the rename and the log line
    leftovers = sorted(p.name for p in (out / ".staging").iterdir()) if (out / ".staging").is_dir() else []
    print(f"killed after {at:.1f} s: {len(finished)} clips finished ({len(unlogged)} of them not yet logged), "
          f"{sum(e['status'] == 'failed' for e in before)} failed, work in progress {leftovers}; rerunning", flush=True)
    done = subprocess.run(command(clips, out, 2, size), env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"rerun failed:\n{done.stderr[-3000:]}")
    print("\n".join("    " + line for line in done.stdout.strip().splitlines()))

    a, b = contents(reference), contents(out)
    same_clips = sorted(a) == sorted(b)
    same_frames = same_clips and all(a[k][:4] == b[k][:4] for k in a)
    diff = max((float(np.abs(a[k][4] - b[k][4]).max()) for k in a), default=0.0) if same_clips else float("nan")
    outcomes = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    twice = sorted({i for i in outcomes if outcomes.count(i) > 1})
    untouched = all((out / vid / "video.json").stat().st_mtime_ns == t for vid, t in finished.items())
    ok = same_clips and same_frames and not twice and untouched
    print(f"resume: same clips {same_clips}, same frame counts, identities, splits and valid flags {same_frames}; "
          f"max |expression difference| {diff:.2e}; clips tracked twice {twice or 'none'}; "
          f"clips finished before the kill untouched {untouched} -> {'OK' if ok else 'FAILED'}")
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gagavatar_bench_build"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moment (default: random)")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs, in the order 1 2 2 1 1 2 ...")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"needs the shared real clips at {REALDATA}")
    clips = make_clips(args.work / "clips")
    print(f"{len(list(clips.rglob('*.mp4')))} clips in {clips} ({len(PIECES)} real, 1 corrupt, 1 without a face); "
          f"{os.cpu_count()} cores", flush=True)
    times = {1: [], 2: []}
    for r in range(args.repeats):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            times[workers].append(run(clips, args.work / f"w{workers}", workers, args.size))
    one, two = (sum(t for t, _ in times[w]) / args.repeats for w in (1, 2))
    cpu1, cpu2 = (sum(c for _, c in times[w]) / args.repeats for w in (1, 2))
    report = json.loads((args.work / "w2" / "build_report.json").read_text())
    frames = report["frames"]
    size_bytes = sum(p.stat().st_size for p in (args.work / "w2").rglob("*") if p.is_file())
    cores = os.cpu_count() or 1
    pairs = ", ".join(f"{b:.1f}/{a:.1f}" for (a, _), (b, _) in zip(times[1], times[2]))
    print(f"\n2 workers / 1 worker wall time (mean of {args.repeats}): {two:.1f} / {one:.1f} s = {two / one:.2f} "
          f"(target <= 0.65; each pair {pairs}); CPU time {cpu2:.1f} / {cpu1:.1f} s")
    print(f"{frames} frames tracked; with 2 workers {frames / two:.1f} frames/s, "
          f"{len(PIECES) / two * 3600 / cores:.0f} clips of {SECONDS} s per hour per core, "
          f"{frames / two / cores:.2f} frames/s per core; storage {size_bytes / frames / 1024:.0f} KiB per frame "
          f"at {args.size} px (jpg frames, png mattes, params)\n")
    rng = random.Random(args.seed)
    kill_and_resume(clips, args.work / "w2", args.work / "killed", args.size, at=rng.uniform(0.2, 0.8) * two)


if __name__ == "__main__":
    main()
