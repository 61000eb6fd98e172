"""The glue between tracked files and the network, checked against the reference's own pipeline (SPEC §10).

    python -m gagavatar.reenact.parity DIR [--tol 1e-4] [--device cpu|cuda]

DIR holds what the public reference code was run on and what it computed:
``FLAME_with_eye.pt`` (a FLAME-layout head model in the reference's file layout),
``source/`` and ``driver/`` (GAGAvatar_track folders) and ``expected.npz``. Everything
here goes through the functions the commands, the app and the pair loader use, never
a copy written for the check: the ``--head-model`` loader, ``load_tracked``, the source
frame rule, ``drive`` (the motion controls, defaults), ``FrameParams.vertices`` (the world
contract), the network's ``point_plane`` and the training ``PairDataset``. Prints every
group's largest absolute difference; exits 1 if any exceeds ``--tol``. ``--device cuda``
computes the head model, cameras and point plane on the GPU (the files are read on CPU).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.pairs import PairDataset, collate
from gagavatar.data.reference import import_reference
from gagavatar.head import load_head_model
from gagavatar.model.lifting import point_plane
from gagavatar.reenact.motion import drive
from gagavatar.tracking.inputs import load_tracked, source_frame

RENDER_SIZE = 512  # expected.npz projects at the reference's render size
PLANE_SIZE = 296   # the reference's point plane


def compute(folder: str | Path, vertex_index: np.ndarray,
            device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """What this project computes from the fixture's inputs (on ``device``), named like
    expected.npz's arrays."""
    folder = Path(folder)
    head = load_head_model(folder / "FLAME_with_eye.pt").to(device)
    with tempfile.TemporaryDirectory() as work, torch.no_grad():
        work = Path(work)
        source = load_tracked(folder / "source", work)  # GAGAvatar_track folders are imported as they are
        driver = load_tracked(folder / "driver", work)  # smoothed.pkl when present, as the reference's DriverData
        source_camera = source.frames(source_frame(source)).camera.to(device)
        plane_points, plane_dirs = point_plane(source_camera, PLANE_SIZE)
        driven, _ = drive(source, driver)
        driven = driven.to(device)
        t_points = driven.vertices(head)
        camera = driven.camera.resized(RENDER_SIZE).to(torch.float64)  # the float32 vertices, projected exactly
        points = t_points[:, torch.as_tensor(vertex_index)].double()
        depth = camera.to_camera(points)[..., 2]

        # the training loader on the driver's optim.pkl (each frame's own parameters)
        import_reference(folder / "driver", work / "train", use="optim", split="train")
        pairs = PairDataset(work / "train", split="train", source_frame="first")
        train = collate([pairs[i] for i in range(len(pairs))])["target"].to(device)
        out = {
            "plane_points": plane_points[0], "plane_dirs": plane_dirs[0],
            "t_points": t_points, "t_transform": driven.camera.to_reference(),
            "pixels": camera.project(points), "depth": depth,
            "train_points": train.vertices(head), "train_transform": train.camera.to_reference(),
        }
    return {k: v.double().cpu().numpy() for k, v in out.items()}


def compare(folder: str | Path, device: str | torch.device = "cpu") -> list[tuple[str, float, float]]:
    """[(group, max abs difference, max abs expected value)] for every group of expected.npz."""
    with np.load(Path(folder) / "expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    ours = compute(folder, expected["vertex_index"], device)
    rows = []
    for name, value in ours.items():
        want = np.asarray(expected[name], np.float64)
        if value.shape != want.shape:
            raise ValueError(f"{name}: computed shape {value.shape} != expected {want.shape}")
        rows.append((name, float(np.abs(value - want).max()), float(np.abs(want).max())))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gagavatar.reenact.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a pipeline fixture folder (SPEC §10), e.g. shared/reference/pipeline_fixture")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed absolute difference (float32)")
    parser.add_argument("--device", default="cpu", help="where to compute: cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device here")
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 is what is checked
    t0 = time.perf_counter()
    rows = compare(args.folder, device)
    width = max(len(r[0]) for r in rows)
    print(f"{'group':<{width}}  {'max |diff|':>11}  {'max |ref|':>11}")
    for name, diff, ref in rows:
        print(f"{name:<{width}}  {diff:11.3e}  {ref:11.3e}{'' if diff <= args.tol else '  FAIL'}")
    worst = max(rows, key=lambda r: r[1])
    ok = worst[1] <= args.tol
    print(f"worst {worst[0]} {worst[1]:.3e} ({'<=' if ok else '>'} tol {args.tol:g}); {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
