"""Self- and cross-reenactment evaluation: the paper's Table 1 for any checkpoint on any tracked data.

    gagavatar eval --checkpoint CKPT --data DIR --out REPORT_DIR [--split test] [--cross-pairs N]
    gagavatar eval --compare RUN_A RUN_B ... --data DIR --out REPORT_DIR

Protocol (the same pairs for every row of a table):
  self   the source is the first valid frame of each held-out video; every other
         valid frame of that video is a target (driver and ground truth), as the
         reference evaluates. ``max_pairs`` keeps that many, evenly spread.
  cross  ``cross_pairs`` pairs drawn with the seed: a driving frame of one identity
         animates the first frame of a video of another identity (no ground truth).
Every image is at the evaluation size (default: the first model's render size),
composited with its matte on ``background``; a generated frame is composited on
the same background (``fine + (1 - alpha) * background``; the network renders on black).

Metrics (``metrics.py`` holds the image metrics):
  PSNR, SSIM, LPIPS  generated vs target (self only); means over pairs of per-pair values.
  CSIM   cosine similarity of dlib face descriptors: self generated vs target,
         cross generated vs SOURCE (the identity that must be kept).
  AED    mean absolute difference between the expression the project's tracker fits
         to the generated frame and to the driving frame: the head model's expression
         coefficients (the columns it has) and the jaw rotation (3, axis-angle, rad),
         averaged over those E + 3 numbers.
  APD    the same for the head rotation (3, axis-angle, rad), which lives in the camera.
  AKD    mean distance between the 478 MediaPipe landmarks of the generated and the
         target frame, in pixels of a 512 image (self only).
For AED/APD the tracker (``tracking.landmarks`` + ``tracking.fitting.fit_landmarks``,
with the head model given, else the first run's, else the bundled synthetic head) runs
as it does on a video: the frames generated from one source video are fitted together
(one shared shape), and so are the driving frames of one video; frames are not linked
in time. So the ground truth as prediction gives AED = APD = 0 exactly. A frame where MediaPipe finds no face has no AED/APD/AKD: it is
counted (``no_face_generated`` / ``no_face_driving``) and left out of those means.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from gagavatar.data.pairs import collate
from gagavatar.eval.metrics import identity_encoder, keypoint_distance, psnr, ssim
from gagavatar.io import resize_image
from gagavatar.io import tensor_to_image as to_uint8
from gagavatar.model.loader import MODEL_FILE, resolve_checkpoint
from gagavatar.system import default_device
from gagavatar.tracking.fitting import FitConfig

SELF_METRICS = ("psnr", "ssim", "lpips", "csim", "aed", "apd", "akd")
CROSS_METRICS = ("csim", "aed", "apd")


@dataclass
class EvalConfig:
    """Settings of an evaluation (the CLI's options)."""

    split: str = "test"
    cross_pairs: int = 100           # 0: no cross-reenactment
    max_pairs: int | None = None     # self pairs at most (evenly spread); None: all
    seed: int = 0                    # draws the cross pairs
    size: int | None = None          # evaluation image size; None: the first model's render size
    batch_size: int = 8              # frames rendered per call
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    head_model: str | None = None    # FLAME-format file; None: a run's own, else the bundled synthetic head
    lpips_weights: str | None = None  # GAGAvatar.pt / converted .safetensors with the AlexNet (percep_loss.*)
    device: str | None = None        # None: cuda when present
    examples: int = 3                # example pairs per mode in the grid
    mean_image_frames: int = 256     # training frames averaged for the "mean training image" baseline
    fit: FitConfig = field(default_factory=FitConfig)
    progress: bool = True


# --------------------------------------------------------------------------- methods
class Method:
    """Something that makes a frame for each pair: a network, a baseline, an oracle.

    ``predict(batch)``: a collated batch of ``PairDataset`` samples that share one
    source -> images [B,3,S,S] in [0,1] on the evaluation background.
    """

    name = "method"
    checkpoint: str | None = None

    def open(self, config: EvalConfig, size: int) -> None:
        pass

    def predict(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ModelMethod(Method):
    """A checkpoint (ours, a run folder, or the released GAGAvatar.pt). ``image``: "fine" (the
    network's output) or "coarse" (the splatted RGB before the neural renderer, its own row)."""

    def __init__(self, checkpoint: str | Path, name: str | None = None, image: str = "fine"):
        if image not in ("fine", "coarse"):
            raise ValueError(f"image must be 'fine' or 'coarse', got {image!r}")
        self.checkpoint = str(resolve_checkpoint(checkpoint))
        self.name = (name or checkpoint_name(checkpoint)) + (" (coarse)" if image == "coarse" else "")
        self.image = image
        self.animator = None

    def open(self, config: EvalConfig, size: int | None = None) -> None:
        if self.animator is not None:  # already open (the table's size was read from it)
            return
        from gagavatar.reenact import Animator

        self.animator = Animator.load(self.checkpoint, _load_head(config.head_model, self.checkpoint),
                                      device=config.device, background=config.background)

    @property
    def render_size(self) -> int:
        return self.animator.size

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        size = batch["target_image"].shape[-1]
        a = self.animator
        avatar = a.model.reconstruct(batch["source_image"][:1].to(a.device), batch["source"].camera[0].to(a.device))
        image = a.images(avatar, batch["target"], coarse=self.image == "coarse").cpu()
        return resize_image(image, size).clamp(0, 1)

    def close(self) -> None:
        self.animator = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class CopySource(Method):
    """Baseline: the source image itself, whatever the driver does."""

    name = "copy source"

    def predict(self, batch: dict) -> torch.Tensor:
        return batch["source_image"].clone()


class MeanTrainingImage(Method):
    """Baseline: the mean of (up to ``config.mean_image_frames``) training frames."""

    name = "mean training image"

    def __init__(self, data: str | Path):
        self.data = data

    def open(self, config: EvalConfig, size: int) -> None:
        from gagavatar.data import Dataset

        frames = [(v, int(i)) for v in Dataset(self.data).split("train") for i in np.flatnonzero(v.params["valid"])]
        if not frames:
            raise ValueError(f"{self.data}: no training frames, so no 'mean training image' baseline "
                             f"(leave out --baselines, or evaluate on a dataset with a train split)")
        total = torch.zeros(3, size, size, dtype=torch.float64)
        take = _spread(len(frames), config.mean_image_frames)
        for k in take:  # as the pair loader makes the targets
            video, i = frames[k]
            total += video.image(i, size, config.background).double()
        self.mean = (total / len(take)).float()

    def predict(self, batch: dict) -> torch.Tensor:
        return self.mean.expand(batch["target_image"].shape[0], -1, -1, -1).clone()


class GroundTruth(Method):
    """The driving frame itself (an oracle: the perfect self-reenactment); ``noise`` > 0
    adds Gaussian noise of that standard deviation (a known perturbation)."""

    def __init__(self, noise: float = 0.0, seed: int = 0):
        self.noise, self.seed = noise, seed
        self.name = "ground truth" if noise == 0 else f"ground truth + noise {noise:g}"

    def predict(self, batch: dict) -> torch.Tensor:
        image = batch["target_image"].clone()
        if self.noise > 0:
            g = torch.Generator().manual_seed(self.seed + int(batch["target_frame"][0]))
            image = (image + self.noise * torch.randn(image.shape, generator=g)).clamp(0, 1)
        return image


def baseline_methods(data: str | Path) -> list[Method]:
    """The self-reenactment baselines: copy the source; the mean training image."""
    return [CopySource(), MeanTrainingImage(data)]


# --------------------------------------------------------------------------- helpers
def checkpoint_name(path: str | Path) -> str:
    """Row name: a run folder's name (also for RUN/model.safetensors), else the file's stem."""
    path = Path(path)
    if path.is_dir() or path.name == MODEL_FILE:
        return (path if path.is_dir() else path.parent).resolve().name
    return path.stem


def _load_head(head_model: str | None, checkpoint: str | None = None):
    """The head model: the given file, else the one the run was trained with, else the bundled one."""
    from gagavatar.head import load_head_model

    if head_model is None and checkpoint is not None:
        run_config = Path(checkpoint).parent / "config.json"
        if Path(checkpoint).name == MODEL_FILE and run_config.is_file():
            head_model = json.loads(run_config.read_text()).get("head_model")
    return load_head_model(head_model)


def resolve_lpips(lpips_weights: str | None, checkpoints: list[str]):
    """(LPIPS network or None, where its weights came from / why it is unavailable)."""
    from gagavatar.perceptual import PERCEPTUAL_PREFIX, find_lpips_linear_heads, load_lpips, load_perceptual_state

    heads = find_lpips_linear_heads()
    if heads is None:
        return None, ("unavailable: LPIPS v0.1 linear heads (lpips/weights/v0.1/alex.pth) not installed; "
                      "`pip install --no-deps lpips` (make install does this)")
    sources = [lpips_weights] if lpips_weights else []
    for path in checkpoints:  # a checkpoint that carries the released perceptual network
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                if any(k.startswith(PERCEPTUAL_PREFIX + "net.") for k in f.keys()):
                    sources.append(path)
        elif path.endswith((".pt", ".pth")):
            sources.append(path)
    errors = []
    for source in sources:
        try:
            return load_lpips(load_perceptual_state(source), heads), f"AlexNet from {source}"
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            errors.append(f"{source}: {e}")
    reason = ("unavailable: no AlexNet weights (the released GAGAvatar.pt carries them as percep_loss.*; "
              "pass --lpips-weights GAGAvatar.pt)")
    return None, reason + ("; " + "; ".join(errors) if errors else "")


def _spread(n: int, k: int | None) -> list[int]:
    """``k`` indices evenly spread over range(n) (all when k is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- pairs
class EvalPairs:
    """The self and cross pairs of one split (the same for every method)."""

    def __init__(self, data: str | Path, config: EvalConfig, size: int):
        from gagavatar.data import PairDataset

        kw = dict(split=config.split, size=size, background=config.background, seed=config.seed,
                  source_frame="first")
        self.sets, self.indices, self.unavailable = {}, {}, {}
        self.sets["self"] = PairDataset(data, mode="self", **kw)
        keep = [i for i in range(len(self.sets["self"]))
                if self.sets["self"].pair(i)[0] != self.sets["self"].pair(i)[1]]  # not the source itself
        self.indices["self"] = [keep[i] for i in _spread(len(keep), config.max_pairs)]
        if config.cross_pairs > 0:
            try:
                self.sets["cross"] = PairDataset(data, mode="cross", length=config.cross_pairs, **kw)
                self.indices["cross"] = list(range(config.cross_pairs))
            except ValueError as e:
                self.unavailable["cross"] = str(e)
        else:
            self.unavailable["cross"] = "not asked for (--cross-pairs 0)"

    @property
    def modes(self) -> list[str]:
        return list(self.indices)

    def groups(self, mode: str) -> list[list[int]]:
        """Positions in ``indices[mode]`` grouped by source frame (each source is reconstructed once)."""
        by_source = defaultdict(list)
        for pos, i in enumerate(self.indices[mode]):
            by_source[self.sets[mode].pair(i)[0]].append(pos)
        return list(by_source.values())

    def sample(self, mode: str, pos: int) -> dict:
        return self.sets[mode][self.indices[mode][pos]]


# --------------------------------------------------------------------------- evaluation
class _Shared:
    """What every method's pass reuses: driver landmarks, descriptors, fits of the drivers."""

    def __init__(self):
        self.landmarks: dict[tuple, np.ndarray | None] = {}
        self.descriptors: dict[tuple, np.ndarray] = {}
        self.driver_fits: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}


class Evaluator:
    """Runs methods over the pairs and gathers per-pair records and example images."""

    def __init__(self, data: str | Path, config: EvalConfig, size: int, lpips=None, lpips_device="cpu",
                 fit_head=None):
        from gagavatar.tracking.landmarks import LandmarkDetector

        self.data, self.config, self.size = data, config, size
        self.lpips, self.lpips_device = lpips, lpips_device
        self.pairs = EvalPairs(data, config, size)
        self.detector = LandmarkDetector()
        self.encoder = identity_encoder()
        self.fit_head = fit_head if fit_head is not None else _load_head(config.head_model)
        self.fit_error: str | None = None
        self.shared = _Shared()
        self.examples = {m: _spread(len(self.pairs.indices[m]), config.examples) for m in self.pairs.modes}
        # mode -> {position: (source image, driving image)} of the example pairs
        self.example_inputs: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = defaultdict(dict)

    # per image
    def _landmarks(self, image: np.ndarray) -> np.ndarray | None:
        face = self.detector(image)
        return None if face is None else face.xy.astype(np.float64)

    def _csim(self, generated: np.ndarray, key: tuple, reference: np.ndarray) -> float:
        if key not in self.shared.descriptors:
            self.shared.descriptors[key] = self.encoder.descriptor(reference)
        a, b = self.encoder.descriptor(generated), self.shared.descriptors[key]
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def run(self, method: Method) -> tuple[dict, dict]:
        """({"self": [per-pair records], "cross": [...], "seconds": s}, {(mode, position): image [3,S,S]})."""
        from tqdm import tqdm

        t0 = time.perf_counter()
        method.open(self.config, self.size)
        out, examples = {}, {}
        try:
            for mode in self.pairs.modes:
                records = [None] * len(self.pairs.indices[mode])
                gen_landmarks = [None] * len(records)
                bar = tqdm(total=len(records), desc=f"{method.name} ({mode})", disable=not self.config.progress,
                           leave=False)
                for group in self.pairs.groups(mode):
                    for start in range(0, len(group), self.config.batch_size):
                        chunk = group[start:start + self.config.batch_size]
                        batch = collate([self.pairs.sample(mode, p) for p in chunk])
                        images = method.predict(batch).float().clamp(0, 1)
                        for j, pos in enumerate(chunk):
                            records[pos], gen_landmarks[pos] = self._score(mode, batch, j, images[j])
                            if pos in self.examples[mode]:
                                examples[(mode, pos)] = images[j]
                                self.example_inputs[mode][pos] = (
                                    batch["source_image"][j], batch["target_image"][j])
                        bar.update(len(chunk))
                bar.close()
                self._expression_and_pose(mode, records, gen_landmarks)
                out[mode] = records
        finally:
            method.close()
        out["seconds"] = time.perf_counter() - t0
        return out, examples

    def _score(self, mode: str, batch: dict, j: int, image: torch.Tensor) -> tuple[dict, np.ndarray | None]:
        target = batch["target_image"][j]
        source_key = (batch["source_video"][j], int(batch["source_frame"][j]))
        target_key = (batch["target_video"][j], int(batch["target_frame"][j]))
        generated_u8, target_u8 = to_uint8(image), to_uint8(target)
        record = {"source_video": batch["source_video"][j], "source_frame": int(batch["source_frame"][j]),
                  "target_video": batch["target_video"][j], "target_frame": int(batch["target_frame"][j])}
        if target_key not in self.shared.landmarks:
            self.shared.landmarks[target_key] = self._landmarks(target_u8)
        driver_lm, gen_lm = self.shared.landmarks[target_key], self._landmarks(generated_u8)
        record["face_generated"], record["face_driving"] = gen_lm is not None, driver_lm is not None
        if mode == "self":
            record["psnr"] = float(psnr(image[None], target[None])[0])
            record["ssim"] = float(ssim(image[None], target[None])[0])
            record["lpips"] = None if self.lpips is None else float(
                self.lpips(image[None].to(self.lpips_device), target[None].to(self.lpips_device))[0])
            record["csim"] = self._csim(generated_u8, target_key, target_u8)
            both = gen_lm is not None and driver_lm is not None
            record["akd"] = keypoint_distance(gen_lm, driver_lm, self.size) if both else None
        else:  # the identity to keep is the source's
            record["csim"] = self._csim(generated_u8, source_key, to_uint8(batch["source_image"][j]))
        return record, gen_lm

    # expression and pose
    def _fit(self, groups: dict[str, list[tuple[int, np.ndarray]]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Fit each group (frames of one video) together: {position: (expression + jaw [E+3], rotation [3])}."""
        from gagavatar.tracking.fitting import fit_landmarks

        fits = {}
        if self.fit_error is not None:
            return fits
        E = self.fit_head.expression_columns
        for members in groups.values():
            landmarks = np.stack([lm for _, lm in members])
            try:  # frames not linked in time: every row's frame index is two apart
                fit = fit_landmarks(self.fit_head, landmarks, self.size, self.config.fit,
                                    frame_index=2 * np.arange(len(members)))
            except ValueError as e:  # a head model the tracker cannot fit (no MediaPipe embedding, ...)
                self.fit_error = str(e)
                return {}
            expression = np.concatenate([fit.expression[:, :E], fit.jaw_pose], 1)
            for k, (pos, _) in enumerate(members):
                fits[pos] = (expression[k], fit.rotation[k])
        return fits

    def _expression_and_pose(self, mode: str, records: list[dict], gen_landmarks: list) -> None:
        gen_groups, driver_groups = defaultdict(list), defaultdict(list)
        for pos, (record, lm) in enumerate(zip(records, gen_landmarks)):
            if lm is not None:
                gen_groups[record["source_video"]].append((pos, lm))
            driver_lm = self.shared.landmarks[(record["target_video"], record["target_frame"])]
            if driver_lm is not None:
                driver_groups[record["target_video"]].append((pos, driver_lm))
        if mode not in self.shared.driver_fits:
            self.shared.driver_fits[mode] = self._fit(driver_groups)
        driver, generated = self.shared.driver_fits[mode], self._fit(gen_groups)
        for pos, record in enumerate(records):
            both = pos in generated and pos in driver
            record["aed"] = float(np.abs(generated[pos][0] - driver[pos][0]).mean()) if both else None
            record["apd"] = float(np.abs(generated[pos][1] - driver[pos][1]).mean()) if both else None


def summarize(records: list[dict], metrics: tuple[str, ...]) -> dict:
    """Means over pairs, and the counts behind them."""
    out = {m: _mean(r.get(m) for r in records) for m in metrics}
    out["n_pairs"] = len(records)
    out["no_face_generated"] = sum(not r["face_generated"] for r in records)
    out["no_face_driving"] = sum(not r["face_driving"] for r in records)
    out["n_expression_pose"] = sum(r.get("aed") is not None for r in records)
    if "akd" in metrics:
        out["n_akd"] = sum(r.get("akd") is not None for r in records)
    return out


def evaluate_methods(methods: list[Method], data: str | Path, out_dir: str | Path,
                     config: EvalConfig | None = None) -> dict:
    """Evaluate ``methods`` on the same pairs; write report.md, metrics.json and grid.png
    to ``out_dir``; return what metrics.json holds (non-finite numbers as floats)."""
    from gagavatar.eval.report import write_grid, write_report

    config = config or EvalConfig()
    if not methods:
        raise ValueError("nothing to evaluate: give at least one checkpoint (or --baselines)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = config.size
    first_model = next((m for m in methods if isinstance(m, ModelMethod)), None)
    if size is None and first_model is not None:
        first_model.open(config)  # stays open for its own pass
        size = first_model.render_size
    if size is None:
        from gagavatar.data import Dataset

        videos = Dataset(data).split(config.split)
        size = max((v.width for v in videos), default=512)

    lpips, lpips_status = resolve_lpips(config.lpips_weights, [m.checkpoint for m in methods if m.checkpoint])
    lpips_device = default_device(config.device)
    # the tracker fits the head model the user gave, else the first run's, else the bundled one
    fit_head = _load_head(config.head_model, first_model.checkpoint if first_model else None)
    evaluator = Evaluator(data, config, size, None if lpips is None else lpips.to(lpips_device), lpips_device,
                          fit_head)

    rows, examples = [], {}
    for method in methods:
        result, images = evaluator.run(method)
        row = {"name": method.name, "checkpoint": method.checkpoint, "seconds": result["seconds"]}
        for mode, metrics in (("self", SELF_METRICS), ("cross", CROSS_METRICS)):
            if mode in result:
                row[mode] = summarize(result[mode], metrics)
                row[f"{mode}_pairs"] = result[mode]
        rows.append(row)
        examples[method.name] = images
    evaluator.detector.close()

    unavailable = {"lpips": None if evaluator.lpips is not None else lpips_status,
                   "aed_apd": None if evaluator.fit_error is None else
                   f"unavailable: the tracker cannot fit this head model ({evaluator.fit_error})",
                   **{f"{mode}": reason for mode, reason in evaluator.pairs.unavailable.items()}}
    from gagavatar.system import machine_description

    result = {
        "data": str(data), "split": config.split, "size": size, "machine": machine_description(),
        "config": {k: v for k, v in asdict(config).items() if k not in ("fit", "progress")},
        "lpips": lpips_status, "fit_head_model": getattr(fit_head, "name", str(fit_head)),
        "unavailable": {k: v for k, v in unavailable.items() if v},
        "definitions": DEFINITIONS, "rows": rows,
    }
    (out_dir / "metrics.json").write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
    write_report(result, out_dir / "report.md", grid="grid.png")
    write_grid(evaluator.example_inputs, examples, [m.name for m in methods], out_dir / "grid.png")
    return result


DEFINITIONS = {
    "psnr": "dB, generated vs target, mean over pairs of per-pair PSNR (inf when identical)",
    "ssim": "Gaussian window 11, sigma 1.5, data range 1, per channel (metrics.ssim)",
    "lpips": "LPIPS v0.1, AlexNet, images in [0,1] scaled to [-1,1]",
    "csim": "cosine similarity of dlib face-recognition descriptors; self: generated vs target, "
            "cross: generated vs source",
    "aed": "mean |difference| of the tracker's fitted expression coefficients + jaw rotation (rad), "
           "generated vs driving frame",
    "apd": "mean |difference| of the tracker's fitted head rotation (axis-angle, rad), generated vs driving frame",
    "akd": "mean distance of the 478 MediaPipe landmarks, generated vs target, pixels at 512",
}


def jsonable(x):
    """JSON without NaN/Infinity literals: non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate(checkpoint: str | Path | None, data: str | Path, out_dir: str | Path, split: str = "test",
             cross_pairs: int = 100, max_pairs: int | None = None, device: str | None = None,
             baselines: bool = False, name: str | None = None, coarse: bool = False, **options) -> dict:
    """Evaluate one checkpoint (file or run folder; None with ``baselines`` evaluates only the
    baselines) on ``split`` of ``data``; writes the report to ``out_dir``. ``coarse`` adds the
    checkpoint's coarse image as a row. ``options``: any other ``EvalConfig`` field."""
    config = EvalConfig(split=split, cross_pairs=cross_pairs, max_pairs=max_pairs, device=device, **options)
    checkpoints = [checkpoint] if checkpoint is not None else []
    return evaluate_methods(_methods(checkpoints, [name], data, baselines, coarse), data, out_dir, config)


def compare(checkpoints: list[str | Path], data: str | Path, out_dir: str | Path, names: list[str] | None = None,
            baselines: bool = False, coarse: bool = False, **options) -> dict:
    """Several checkpoints / run folders in one table (row names: ``names`` or the folder names)."""
    if names and len(names) != len(checkpoints):
        raise ValueError(f"{len(names)} names for {len(checkpoints)} checkpoints: give one name per checkpoint")
    return evaluate_methods(_methods(checkpoints, names, data, baselines, coarse), data, out_dir, EvalConfig(**options))


def _methods(checkpoints: list, names: list | None, data, baselines: bool, coarse: bool) -> list[Method]:
    """The table's rows: each checkpoint (then its coarse image), then the baselines."""
    names = names or [None] * len(checkpoints)
    images = ("fine", "coarse") if coarse else ("fine",)
    methods = [ModelMethod(c, n, image) for c, n in zip(checkpoints, names) for image in images]
    seen = [m.name for m in methods]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ValueError(f"rows would share the names {duplicates}: give distinct names with --names")
    return methods + (baseline_methods(data) if baselines else [])
