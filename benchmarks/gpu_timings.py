"""Driving and reconstruction timings of a preset, plain and with torch.compile / CUDA graphs.

    python benchmarks/gpu_timings.py --device cuda --preset paper --batches 1,8 --json OUT.json
    python benchmarks/gpu_timings.py --device cpu --preset tiny --batches 1,2 --repeat 2   # a dry run

One frame of driving = expression branch (the head model: this frame's
parameters -> vertices, the expression Gaussians' centres) + splatting
(``GAGAvatar.splat``: every Gaussian rasterised, gsplat on CUDA when installed)
+ refiner (``GAGAvatar.refine``). Each stage is timed on its own (median of
``--repeat`` runs after warm-up, the device synchronised around each) and the
whole frame end to end; FPS = batch / frame time. Reconstruction
(``GAGAvatar.reconstruct``) is timed at each batch too.

Variants, each reported beside the plain float32 run, each with its largest
difference from the plain run's output:

* ``compile``: torch.compile on the head model and the refiner (the splat is
  gsplat's own CUDA kernels or the torch backend's data-dependent tiling: not
  compiled);
* ``cuda-graphs`` (CUDA only): the head model and the refiner captured once per
  batch size as CUDA graphs and replayed (the splat cannot be captured: its
  tile lists have data-dependent sizes);
* ``bf16-refiner``: the refiner under bfloat16 autocast;
* splatting alone: the torch backend on the same device, and gsplat with its
  default channel chunk (32: the 32 features and the depth in two passes)
  beside ours (33: one pass).

A variant that fails is recorded with its error and the others go on; the
script exits 1 if the plain run failed. Every result is written to ``--json``
as soon as it is measured, so a run stopped early keeps what it measured.
Random weights (the network's cost does not depend on them; the splat's does:
random lifting heads give every Gaussian a scale of 0.025, larger than trained
ones, so splatting is slower than with a trained model).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

from gagavatar.geometry import WORLD_SCALE, Camera
from gagavatar.head import HeadModel
from gagavatar.model import create_model
from gagavatar.render import rasterize

RASTERIZE = sys.modules[rasterize.__module__]  # the module
GSPLAT = importlib.import_module("gagavatar.render.gsplat_backend")  # gsplat's channel chunk (splat variants)
METHODS = {"cuda-graphs": "cuda_graphs", "bf16-refiner": "bf16_refiner", "splat": "splat_backends",
           "compile": "compile"}  # variant -> Case method


class Report:
    """The JSON report, rewritten after every measurement."""

    def __init__(self, path: str | None, **header):
        self.path = Path(path) if path else None
        self.data = dict(header, results=[], skipped=[], errors=[], finished=False)
        self.t0 = time.perf_counter()

    def add(self, kind: str, **row) -> None:
        self.data[kind].append(row)
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            tmp.replace(self.path)


def timer(device: torch.device):
    """``median_ms(fn, repeat, warmup)``: median wall time of fn() with the device synchronised."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def median_ms(fn, repeat: int, warmup: int = 2) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeat):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1000)
        return sorted(times)[len(times) // 2]

    return median_ms


def cuda_graph(fn, *static_inputs):
    """fn captured as a CUDA graph on ``static_inputs``; returns call(*inputs) that copies the
    inputs in, replays, and returns the graph's (reused) output."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as capture requires
            fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = fn(*static_inputs)

    def call(*inputs):
        for s, x in zip(static_inputs, inputs):
            s.copy_(x)
        graph.replay()
        return static_output

    return call


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


class Case:
    """One batch size: its inputs, avatar and the plain run (measured on construction)."""

    def __init__(self, model, head, B: int, device, median_ms, report: Report, repeat: int):
        self.model, self.head, self.B, self.device = model, head, B, device
        self.median_ms, self.report, self.repeat = median_ms, report, repeat
        cfg = model.config
        g = torch.Generator().manual_seed(B)
        self.image = torch.rand(B, 3, 512, 512, generator=g).to(device)
        self.source = Camera.look_at(torch.tensor([0.0, 0.0, 5.0]).expand(B, 3), size=cfg.render_size).to(device)
        self.target = Camera.look_at(torch.tensor([0.5, 0.3, 4.9]).expand(B, 3), size=cfg.render_size).to(device)
        params = [torch.zeros(B, head.n_shape), 0.5 * torch.randn(B, head.n_expression, generator=g)]
        params += [0.1 * torch.randn(B, n, generator=g) for n in (3, 3, 3, 6)]  # global, neck, jaw, eyes
        self.params = [p.to(device) for p in params]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        reconstruct_ms = median_ms(self.reconstruct, max(2, repeat // 4), warmup=1)
        self.avatar = self.reconstruct()
        self.vertices = self.expression()
        self.features = self.splat()
        self.reference = self.frame().float()
        self.measure("plain", reconstruct_ms=reconstruct_ms, reconstruct_ms_per_avatar=reconstruct_ms / B)
        print(f"  reconstruction batch {B}: {reconstruct_ms:.2f} ms ({reconstruct_ms / B:.2f} ms per avatar)")

    def reconstruct(self):
        with torch.no_grad():
            return self.model.reconstruct(self.image, self.source)

    def expression(self, forward=None):
        with torch.no_grad():
            return (self.head if forward is None else forward)(*self.params) * WORLD_SCALE

    def splat(self):
        with torch.no_grad():
            return self.model.splat(self.avatar, self.vertices, self.target)[0]

    def refine(self, forward=None, autocast=contextlib.nullcontext):
        with torch.no_grad(), autocast():
            return (self.model.refine if forward is None else forward)(self.features)

    def frame(self, head=None, refine=None, autocast=contextlib.nullcontext):
        with torch.no_grad():
            vertices = (self.head if head is None else head)(*self.params) * WORLD_SCALE
            features = self.model.splat(self.avatar, vertices, self.target)[0]
            with autocast():
                return (self.model.refine if refine is None else refine)(features)

    def measure(self, variant, head=None, refine=None, autocast=contextlib.nullcontext, **extra):
        ms, B = self.median_ms, self.B
        expression_ms = ms(lambda: self.expression(head), self.repeat)
        splat_ms = ms(self.splat, self.repeat)
        refine_ms = ms(lambda: self.refine(refine, autocast), self.repeat)
        frame_ms = ms(lambda: self.frame(head, refine, autocast), self.repeat)
        out = self.frame(head, refine, autocast)
        row = dict(variant=variant, batch=B, expression_ms=expression_ms, splat_ms=splat_ms, refine_ms=refine_ms,
                   frame_ms=frame_ms, fps=1000.0 * B / frame_ms, max_diff_vs_plain=max_diff(out, self.reference),
                   **extra)
        if self.device.type == "cuda":
            row["peak_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.report.add("results", **row)
        print(f"  {variant:<13} batch {B}: expression {expression_ms:7.2f} ms, splat {splat_ms:7.2f} ms, "
              f"refiner {refine_ms:7.2f} ms | frame {frame_ms:7.2f} ms = {row['fps']:7.1f} FPS "
              f"(max |diff| vs plain {row['max_diff_vs_plain']:.1e})")

    # the variants ---------------------------------------------------------------------
    def compile(self, args, gsplat_used):
        t0 = time.perf_counter()
        head = torch.compile(self.head, backend=args.compile_backend)
        refine = torch.compile(self.model.refine, backend=args.compile_backend)
        self.frame(head, refine)  # compiles; its time is reported as compile_s
        self.measure("compile", head, refine, compile_backend=args.compile_backend,
                     compile_s=time.perf_counter() - t0)

    def cuda_graphs(self, args, gsplat_used):
        with torch.no_grad():
            head = cuda_graph(self.head, *[p.clone() for p in self.params])
            refine = cuda_graph(self.model.refine, self.features.clone())
        self.measure("cuda-graphs", head, refine)

    def bf16_refiner(self, args, gsplat_used):
        self.measure("bf16-refiner", autocast=lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))

    def splat_backends(self, args, gsplat_used):
        """The splat alone: the torch backend, and gsplat with its default channel chunk beside ours."""
        cfg, B = self.model.config, self.B
        means = self.avatar.means(self.vertices).float()
        cam = self.target.resized(cfg.render_size, cfg.render_size).to(device=self.device, dtype=torch.float32)
        a = self.avatar
        inputs = (means, a.splat_rotations.float(), a.splat_scales.float(), a.opacities[..., 0].float(),
                  a.features.float(), cam.viewmat, cam.K, cfg.render_size, cfg.render_size)
        runs = [("torch backend", "torch", None)]
        if gsplat_used:
            runs += [(f"gsplat chunk {GSPLAT.GSPLAT_CHANNEL_CHUNK}", "gsplat", GSPLAT.GSPLAT_CHANNEL_CHUNK),
                     ("gsplat chunk 32", "gsplat", 32)]
        first = None
        for name, backend, chunk in runs:
            saved = GSPLAT.GSPLAT_CHANNEL_CHUNK
            try:
                if chunk is not None:
                    GSPLAT.GSPLAT_CHANNEL_CHUNK = chunk

                def run(backend=backend):
                    with torch.no_grad():
                        return rasterize(*inputs, backend=backend).image

                ms = self.median_ms(run, max(2, self.repeat // (4 if backend == "torch" else 1)), warmup=1)
                image = run()
            finally:
                GSPLAT.GSPLAT_CHANNEL_CHUNK = saved
            first = image if first is None else first
            self.report.add("results", variant=f"splat: {name}", batch=B, splat_ms=ms,
                            max_diff_vs_torch_backend=max_diff(image, first))
            print(f"  splat: {name:<15} batch {B}: {ms:8.2f} ms (max |diff| vs torch backend "
                  f"{max_diff(image, first):.1e})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="paper", help="paper, small or tiny")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per measurement (median reported)")
    parser.add_argument("--variants", default="compile,cuda-graphs,bf16-refiner,splat",
                        help="comma-separated extras beside the plain run (empty: plain only)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (a dry run may use 'eager': traced, not code-generated)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="skip the variants not started after this many seconds (0: no limit)")
    parser.add_argument("--json", default=None, help="write the report here (rewritten as results come)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    batches = [int(b) for b in args.batches.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(METHODS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    median_ms = timer(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # plain float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-backbone warning: random weights on purpose
        model = create_model(args.preset).eval().to(device)
    cfg = model.config
    gsplat_used = device.type == "cuda" and RASTERIZE.gsplat_available()
    report = Report(args.json, device=str(device), device_name=torch.cuda.get_device_name(device)
                    if device.type == "cuda" else platform.processor() or platform.machine(),
                    torch=torch.__version__, preset=args.preset, gaussians=cfg.n_gaussians,
                    render_size=cfg.render_size, channels=cfg.channels, refiner=cfg.use_refiner,
                    splat_backend="gsplat" if gsplat_used else "torch", batches=batches, repeat=args.repeat,
                    weights="random")
    print(f"{args.preset}: {cfg.n_gaussians:,} Gaussians at {cfg.render_size}px, {cfg.channels} channels, "
          f"on {report.data['device_name']} ({device}), splat backend {report.data['splat_backend']}")
    head = HeadModel.default().to(device)
    if head.n_vertices != cfg.n_vertices:
        raise SystemExit(f"the bundled head model has {head.n_vertices} vertices, the preset {cfg.n_vertices}")

    def budget_left(what: str, batch: int) -> bool:
        if args.budget_s and time.perf_counter() - report.t0 > args.budget_s:
            report.add("skipped", variant=what, batch=batch, reason=f"over the {args.budget_s:g} s budget")
            print(f"  {what} batch {batch}: SKIPPED (over the {args.budget_s:g} s budget)")
            return False
        return True

    def attempt(what: str, batch: int, fn) -> None:
        """Run an extra measurement; a failure is recorded, not raised."""
        if not budget_left(what, batch):
            return
        try:
            fn()
        except Exception as error:  # noqa: BLE001 - one variant failing must not hide the others
            report.add("errors", variant=what, batch=batch, error=f"{type(error).__name__}: {error}",
                       traceback=traceback.format_exc(limit=6))
            print(f"  {what} batch {batch}: FAILED {type(error).__name__}: {error}")

    cases = []
    for B in batches:  # the plain run at every batch size first: the variants may run out of budget
        try:
            case = Case(model, head, B, device, median_ms, report, args.repeat)
        except Exception as error:  # noqa: BLE001
            report.add("errors", variant="plain", batch=B, error=f"{type(error).__name__}: {error}",
                       traceback=traceback.format_exc(limit=6))
            print(f"  plain         batch {B}: FAILED {type(error).__name__}: {error}")
            continue
        cases.append(case)

    # cheapest first; torch.compile last (its compilation takes the longest)
    for variant in [v for v in METHODS if v in variants]:
        for case in cases:
            if variant == "cuda-graphs" and device.type != "cuda":
                report.add("skipped", variant=variant, batch=case.B, reason="CUDA only")
                print(f"  {variant:<13} batch {case.B}: skipped (CUDA only)")
                continue
            method = getattr(case, METHODS[variant])
            attempt(variant, case.B, lambda method=method: method(args, gsplat_used))

    report.data["finished"] = True
    report.write()
    if len(cases) < len(batches):
        print("FAILED: the plain run failed (see errors)")
        return 1
    if report.data["errors"]:
        print(f"done; {len(report.data['errors'])} variant(s) failed (see errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
