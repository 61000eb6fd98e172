"""How well speech drives the lips (``gagavatar eval-speech``), beside what trivial baselines do.

    result = evaluate_speech(model_predictor(model), clips, head)       # clips: speech.data.SpeechClip
    print(table(result)); write_report(result, "report/")              # metrics.json, mouth_opening.png

A predictor is any ``predict(audio float32 [N] at 16 kHz) -> motion [F, D] at 25 fps``
(``model_predictor`` wraps a model's ``generate``). Predicted and true motions go through the
same path to vertices (``motion_frames`` with a neutral source, then the head model: head
rotation lives in the camera, so it does not move the vertices), in millimetres of the head
model (FLAME: metres x 1000). Per clip, on the frames both have:

- lip vertex error (LVE): per frame the largest distance over the lip vertices
  (``face_regions.lip_vertices``) between predicted and true, averaged over all frames; a 95 %
  bootstrap interval over clips (clips resampled, frame-weighted);
- mouth opening (``face_regions.mouth_opening``): its Pearson correlation with the sound's
  loudness (RMS over each motion frame's samples) and with the true opening, averaged over clips;
- upper-face dynamics (FDD-like): per upper-face vertex the std over time of its distance from
  the neutral face; reported as their mean, and FDD = mean |predicted - true| of them.

Baselines: no motion (zeros), mean motion (over the ``fit_clips``, default the evaluated
clips), and loudness (mean motion with the jaw opening = a RMS + b, least squares over the
``fit_clips``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gagavatar.data.frame import FrameParams
from gagavatar.geometry import REFERENCE_FOCAL, WORLD_SCALE, Camera, intrinsics
from gagavatar.io import SPEECH_RATE
from gagavatar.speech.face_regions import inner_lip_rows, lip_vertices, mouth_opening, upper_face_vertices
from gagavatar.speech.postprocess import JAW, motion_frames

Predictor = Callable[[np.ndarray], np.ndarray]
FPS = 25.0
MM = 1000.0 / WORLD_SCALE  # world units -> millimetres of the head model (FLAME: metres)
BOOTSTRAP = 1000
CHUNK = 256  # frames through the head model at once


# ---------------------------------------------------------------------------------- predictors

def model_predictor(model, smooth: bool = True) -> Predictor:
    """A speech model (``.generate(audio [N]) -> motion [F, D]``) as a predictor; ``smooth``: the
    demo engine's smoothing (``smooth_motion``), as ``speak`` drives it."""
    from gagavatar.speech.postprocess import smooth_motion

    def predict(audio: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            motion = model.generate(torch.from_numpy(np.asarray(audio, np.float32)))
            return (smooth_motion(motion) if smooth else motion).float().cpu().numpy()
    return predict


def frames_of(audio: np.ndarray, rate: int = SPEECH_RATE, fps: float = FPS) -> int:
    """Motion frames that ``audio`` [N] spans."""
    return max(1, int(round(len(audio) * fps / rate)))


def loudness(audio: np.ndarray, n_frames: int, rate: int = SPEECH_RATE, fps: float = FPS) -> np.ndarray:
    """RMS [n_frames] of each motion frame's samples (frame t: [t rate / fps, (t + 1) rate / fps);
    silence past the sound's end)."""
    edges = np.round(np.arange(n_frames + 1) * rate / fps).astype(int)
    audio = np.pad(np.asarray(audio, np.float64), (0, max(0, edges[-1] - len(audio))))
    power = np.add.reduceat(audio[:edges[-1]] ** 2, edges[:-1]) / np.diff(edges)
    return np.sqrt(power).astype(np.float32)


def zero_predictor(dims: int) -> Predictor:
    """No motion: the neutral face, still."""
    return lambda audio: np.zeros((frames_of(audio), dims), np.float32)


def mean_motion(clips) -> np.ndarray:
    """The clips' motion [D] averaged over all their frames."""
    return np.concatenate([c.motion for c in clips]).mean(0).astype(np.float32)


def mean_predictor(clips) -> Predictor:
    """The clips' mean motion, held still."""
    mean = mean_motion(clips)
    return lambda audio: np.tile(mean, (frames_of(audio), 1))


@dataclass
class LoudnessJaw:
    """The loudness baseline: mean motion with the jaw opening (the jaw pose's first component)
    = ``gain`` RMS + ``offset``."""

    mean: np.ndarray
    gain: float
    offset: float

    @classmethod
    def fit(cls, clips) -> "LoudnessJaw":
        """Least squares of the clips' jaw opening on their loudness, over all frames."""
        rms = np.concatenate([loudness(c.audio, len(c.motion)) for c in clips])
        jaw = np.concatenate([c.motion[:, JAW.start] for c in clips])
        (gain, offset), *_ = np.linalg.lstsq(np.stack([rms, np.ones_like(rms)], 1), jaw, rcond=None)
        return cls(mean_motion(clips), float(gain), float(offset))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        motion = np.tile(self.mean, (frames_of(audio), 1))
        motion[:, JAW.start] = self.gain * loudness(audio, len(motion)) + self.offset
        return motion


# ---------------------------------------------------------------------------------- geometry

@dataclass
class FaceGeometry:
    """What the metrics read of F frames, in head-model millimetres: lip vertices [F, L, 3],
    upper-face vertices [F, U, 3], mouth opening [F]."""

    lips: np.ndarray
    upper: np.ndarray
    opening: np.ndarray


class FaceMeasure:
    """Motion -> ``FaceGeometry`` through ``motion_frames`` and the head model (neutral shape)."""

    def __init__(self, head):
        self.head = head
        self.lips = torch.as_tensor(lip_vertices(head), device=head.v_template.device)
        self.upper = torch.as_tensor(upper_face_vertices(head), device=head.v_template.device)
        self.inner_lips = inner_lip_rows(head)
        view = torch.eye(4)
        view[:3, :3], view[2, 3] = torch.diag(torch.tensor([1.0, -1.0, -1.0])), 10.0  # any camera: not used
        z = lambda n: torch.zeros(1, n)  # noqa: E731
        self.source = FrameParams(z(head.n_shape), z(head.n_expression), z(3), z(3), z(3), z(6), z(3),
                                  Camera(view[None], intrinsics(REFERENCE_FOCAL, 512, 512, 1), 512, 512))
        self.neutral_upper = self(np.zeros((1, 6), np.float32)).upper[0]  # [U, 3]: no expression, no jaw

    def __call__(self, motion: np.ndarray) -> FaceGeometry:
        parts = []
        with torch.no_grad():
            for start in range(0, len(motion), CHUNK):
                frames = motion_frames(torch.as_tensor(np.asarray(motion[start:start + CHUNK], np.float32)),
                                       self.source)
                vertices = frames.vertices(self.head) * MM  # on the head's device
                opening = mouth_opening(self.head.landmarks(vertices), self.inner_lips)
                parts.append([x.float().cpu() for x in (vertices[:, self.lips], vertices[:, self.upper], opening)])
        return FaceGeometry(*(torch.cat(p).numpy() for p in zip(*parts)))


# ---------------------------------------------------------------------------------- metrics

def lip_errors(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per frame the largest lip-vertex distance [F] (lip vertices [F, L, 3] each)."""
    return np.linalg.norm(predicted - true, axis=-1).max(-1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series [F]; NaN when either is constant (e.g. no motion: its
    float rounding is not a signal, hence the relative tolerance)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if min(a.std() / (np.abs(a).mean() + 1e-9), b.std() / (np.abs(b).mean() + 1e-9)) < 1e-5:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def dynamics(upper: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Per vertex [U] the std over time of its distance from the neutral face (upper [F, U, 3])."""
    return np.linalg.norm(upper - neutral, axis=-1).std(0)


def bootstrap_interval(sums: np.ndarray, counts: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> list[float]:
    """95 % interval of sum(sums) / sum(counts) with clips resampled (each clip: its frames' sum
    and count), percentile bootstrap; [x, x] for one clip."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(sums), size=(n, len(sums)))
    values = sums[picks].sum(1) / counts[picks].sum(1)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _mean(values) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_speech(predict: Predictor | None, clips, head, fit_clips=None, name: str = "model",
                    seed: int = 0) -> dict:
    """Metrics of ``predict`` on ``clips`` and of the baselines (fitted on ``fit_clips``, default
    ``clips``), as a dict (what metrics.json holds): ``rows`` (one per method: lve_mm,
    lve_ci_mm, opening_loudness_r, opening_true_r, upper_dynamics_mm, fdd_mm), ``truth`` (the
    tracked motion's opening_loudness_r and upper_dynamics_mm), the counts, and per method the
    first clip's mouth opening for the plot. ``predict`` None: the baselines alone."""
    if not clips:
        raise ValueError("no clips to evaluate: give a dataset split with sound, or a clips file")
    fit_clips = fit_clips or clips
    methods = {} if predict is None else {name: predict}
    methods |= {"no motion": zero_predictor(clips[0].motion.shape[1]), "mean motion": mean_predictor(fit_clips),
                "loudness jaw": LoudnessJaw.fit(fit_clips)}
    measure = FaceMeasure(head)
    per = {m: {"sums": [], "counts": [], "r_loud": [], "r_true": [], "dyn": [], "fdd": []} for m in methods}
    truth = {"r_loud": [], "dyn": []}
    plot = {}
    for k, clip in enumerate(clips):
        true = measure(clip.motion)
        rms = loudness(clip.audio, len(clip.motion))
        truth["r_loud"].append(pearson(true.opening, rms))
        true_dyn = dynamics(true.upper, measure.neutral_upper)
        truth["dyn"].append(float(true_dyn.mean()))
        if k == 0:
            plot = {"clip": clip.id, "audio": clip.audio, "rms": rms, "opening": {"truth": true.opening}}
        for method, fn in methods.items():
            motion = np.asarray(fn(clip.audio), np.float32)
            n = min(len(motion), len(clip.motion))  # a model may give a frame more or less
            got = measure(motion[:n])
            errors = lip_errors(got.lips, true.lips[:n])
            dyn = dynamics(got.upper, measure.neutral_upper)
            s = per[method]
            s["sums"].append(float(errors.sum()))
            s["counts"].append(n)
            s["r_loud"].append(pearson(got.opening, rms[:n]))
            s["r_true"].append(pearson(got.opening, true.opening[:n]))
            s["dyn"].append(float(dyn.mean()))
            s["fdd"].append(float(np.abs(dyn - true_dyn).mean()))
            if k == 0:
                plot["opening"][method] = got.opening
    rows = []
    for method, s in per.items():
        sums, counts = np.array(s["sums"]), np.array(s["counts"], np.float64)
        rows.append({"name": method, "lve_mm": float(sums.sum() / counts.sum()),
                     "lve_ci_mm": bootstrap_interval(sums, counts, seed=seed),
                     "opening_loudness_r": _mean(s["r_loud"]), "opening_true_r": _mean(s["r_true"]),
                     "upper_dynamics_mm": _mean(s["dyn"]), "fdd_mm": _mean(s["fdd"])})
    result = {"clips": len(clips), "frames": int(sum(len(c.motion) for c in clips)),
              "seconds_of_audio": float(sum(len(c.audio) for c in clips) / SPEECH_RATE),
              "head_model": head.id, "lip_vertices": len(measure.lips), "upper_face_vertices": len(measure.upper),
              "rows": rows, "truth": {"opening_loudness_r": _mean(truth["r_loud"]),
                                      "upper_dynamics_mm": _mean(truth["dyn"])}}
    if predict is not None:  # the model against the loudness baseline, clips paired
        result["lve_vs_loudness_mm"] = _paired_difference(per[name], per["loudness jaw"], seed)
    result["plot"] = plot
    return result


def _paired_difference(a: dict, b: dict, seed: int) -> dict:
    """LVE of a minus LVE of b (same clips), with its 95 % bootstrap interval over clips."""
    sums = np.array(a["sums"]) - np.array(b["sums"])
    counts = np.array(a["counts"], np.float64)
    return {"difference": float(sums.sum() / counts.sum()), "ci": bootstrap_interval(sums, counts, seed=seed)}


# ---------------------------------------------------------------------------------- outputs

# (key, header, digits); arrows say which way is better
COLUMNS = (("lve_mm", "LVE mm↓", 2), ("lve_ci_mm", "LVE 95% CI", 2), ("opening_loudness_r", "open~loud r", 3),
           ("opening_true_r", "open~true r↑", 3), ("upper_dynamics_mm", "upper dyn mm", 3), ("fdd_mm", "FDD mm↓", 3))


def _cell(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return f"[{value[0]:.{digits}f}, {value[1]:.{digits}f}]"
    return f"{value:.{digits}f}"


def table(result: dict) -> str:
    """The metrics as a markdown table, one row per method, the tracked motion last."""
    lines = ["| Method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---" + "|---:" * len(COLUMNS) + "|"]
    truth = result["truth"] | {"lve_mm": 0.0, "lve_ci_mm": None, "opening_true_r": 1.0, "fdd_mm": 0.0}
    for row in result["rows"] + [truth | {"name": "tracked (truth)"}]:
        lines.append(f"| {row['name']} | " + " | ".join(_cell(row[key], d) for key, _, d in COLUMNS) + " |")
    lines.append(f"\n{result['clips']} clips, {result['frames']} frames ({result['seconds_of_audio']:.1f} s), head "
                 f"{result['head_model']} ({result['lip_vertices']} lip, {result['upper_face_vertices']} upper-face "
                 f"vertices); mm of the head model; n/a: a still mouth has no correlation.")
    if "lve_vs_loudness_mm" in result:
        d = result["lve_vs_loudness_mm"]
        lines.append(f"LVE minus the loudness baseline's: {d['difference']:+.2f} mm, 95% CI "
                     f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] (clips paired).")
    return "\n".join(lines)


def plot_mouth(result: dict, path: str | Path) -> Path:
    """The first clip's waveform (and loudness) over its mouth opening, truth and each method (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gagavatar.io import atomic_path

    plot = result["plot"]
    audio = np.asarray(plot["audio"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    top.plot(np.arange(len(audio)) / SPEECH_RATE, audio, lw=0.4, color="0.6", label="waveform")
    t = np.arange(len(plot["rms"])) / FPS
    top.plot(t, plot["rms"], color="C3", lw=1.2, label="loudness (RMS)")
    top.set_ylabel("sound")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    for i, (method, opening) in enumerate(plot["opening"].items()):
        style = {"color": "black", "lw": 2.0} if method == "truth" else {"color": f"C{i - 1}", "lw": 1.2}
        bottom.plot(np.arange(len(opening)) / FPS, opening, label=method, **style)
    bottom.set_ylabel("mouth opening (mm)")
    bottom.set_xlabel("time (s)")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    top.set_title(f"clip {plot['clip']}: mouth opening against the waveform")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(result: dict, out: str | Path) -> dict[str, Path]:
    """``out``/metrics.json (the result without the plot's series), report.md (the table) and
    mouth_opening.png."""
    from gagavatar.data.json_files import write_json
    from gagavatar.io import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if k != "plot"} | {"plot_clip": result["plot"].get("clip")}
    paths = {"metrics": out / "metrics.json", "report": out / "report.md", "plot": out / "mouth_opening.png"}
    write_json(paths["metrics"], metrics)
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text("# Speech evaluation\n\n" + table(result) + "\n")
    plot_mouth(result, paths["plot"])
    return paths
