"""``track``: an image, a folder of images or a video in; a tracked video in the dataset format out.

Stages (one module each): landmarks (MediaPipe face mesh) -> framing (the
reference's crop, matte on black) -> fitting (head model + camera) ->
optional smoothing -> output (dataset format, overlay, and optionally the
reference tracker's optim.pkl / smoothed.pkl / img_lmdb). See docs/tracking.md.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gagavatar import io as gio
from gagavatar.data import reference_format as refmt
from gagavatar.data.format import VideoWriter, update_index
from gagavatar.data.frame import FrameParams
from gagavatar.data.layout import AUDIO_RATE
from gagavatar.geometry import REFERENCE_FOCAL, WORLD_SCALE, Camera, intrinsics, reference_to_viewmat
from gagavatar.tracking import framing, smoothing
from gagavatar.tracking.fitting import FitConfig, FitResult, fit_landmarks
from gagavatar.tracking.landmarks import LandmarkDetector
from gagavatar.tracking.matting import Segmenter

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.npz"


@dataclass
class TrackSummary:
    """What ``track`` did. Frame numbers are positions in the input (0-based)."""

    video_id: str
    out_dir: Path
    video_dir: Path
    n_frames: int
    n_tracked: int
    no_face: list[int] = field(default_factory=list)
    several_faces: list[int] = field(default_factory=list)
    mean_error_px: float = float("nan")  # mean landmark reprojection error, pixels of a 512 crop
    seconds: dict[str, float] = field(default_factory=dict)
    overlay: Path | None = None
    reference_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a video whose end is damaged

    def lines(self) -> list[str]:
        fit = (f"mean landmark error {self.mean_error_px:.2f} px at 512" if self.n_tracked
               else "no face found, nothing fitted")
        out = [f"{self.video_id}: {self.n_tracked}/{self.n_frames} frames tracked, {fit} -> {self.video_dir}"]
        if self.no_face:
            out.append(f"  no face in {len(self.no_face)} frame(s) (marked valid=False): {_short(self.no_face)}")
        if self.several_faces:
            out.append(f"  several faces in {len(self.several_faces)} frame(s), the largest was tracked: "
                       f"{_short(self.several_faces)}")
        if self.overlay:
            out.append(f"  overlay: {self.overlay}")
        for p in self.reference_files:
            out.append(f"  reference format: {p}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _short(ids: list[int], n: int = 10) -> str:
    return ", ".join(map(str, ids[:n])) + (" ..." if len(ids) > n else "")


def _progress(total: int | None, desc: str, enabled: bool):
    """A frame counter that clears itself when done; none for a single image (a bar that only says 1/1)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled or total == 1, leave=False)


def _fallback_box(shape, last: np.ndarray | None) -> np.ndarray:
    """Crop for a frame without a face: the previous crop, or the centred square."""
    if last is not None:
        return last
    H, W = shape[:2]
    s = min(H, W)
    x0, y0 = (W - s) // 2, (H - s) // 2
    return np.array([x0, y0, x0 + s, y0 + s], dtype=np.float64)


def _nearest_tracked(valid_idx: np.ndarray, n: int) -> np.ndarray:
    """For each of n frames, the row (in ``valid_idx``, the tracked frames) of the nearest tracked frame."""
    frames = np.arange(n)
    pos = np.searchsorted(valid_idx, frames)  # rank of the first tracked frame >= each frame
    after = np.minimum(pos, len(valid_idx) - 1)
    before = np.maximum(pos - 1, 0)
    return np.where(np.abs(valid_idx[before] - frames) <= np.abs(valid_idx[after] - frames), before, after)


def track(input: str | Path, out_dir: str | Path, head_model=None, size: int = 512, smooth: float = 0.0,
          reference_format: bool = False, video_id: str | None = None, split: str = "train",
          identity: str | None = None, overlay: bool = True, frame_format: str = "jpg",
          fit_config: FitConfig | None = None, box_smoothing: float | None = None, max_frames: int | None = None,
          progress: bool = True, decode_fps: float | None = None) -> TrackSummary:
    """Track ``input`` (image, folder of images, or video) into the dataset ``out_dir``.

    head_model: a ``HeadModel`` with a MediaPipe landmark embedding (default: the
    bundled synthetic head). size: side of the stored crops. smooth: strength of
    the pose/eye smoothing applied to the stored parameters (0 = none, 1 = the
    reference's smoothed.pkl). reference_format: also write optim.pkl,
    smoothed.pkl and img_lmdb into out_dir. box_smoothing: EMA weight of a new
    frame's head box (default: 0.03 for videos as the reference; 1, i.e. none,
    for images and folders, as the reference's frame-folder script).
    max_frames: track only the first frames (a quick look at a long video). decode_fps: decode a video at
    this rate (default: its own average rate; a variable-rate clip is resampled on its timestamps).
    identity: the person (default: the video id); ``split`` follows it in a dataset.
    Frames without a face are kept (valid=False) and reported, not fatal. A video's sound is
    kept as audio.wav (16 kHz mono, aligned to the tracked frames; docs/data-format.md).
    """
    from gagavatar.head import HeadModel

    t_start = time.perf_counter()
    source = Path(input)
    if not source.exists():
        raise gio.InputError(f"{source}: no such file or folder")
    framing.check_crop_size(size)
    smoothing.weights_for(smooth)  # validates the strength early
    is_video = source.is_file() and gio.is_video(source)
    if source.is_file() and not is_video and not gio.is_image(source):
        raise gio.InputError(f"{source}: not an image ({', '.join(gio.IMAGE_EXTENSIONS)}) or video "
                             f"({', '.join(gio.VIDEO_EXTENSIONS)}) file")
    info = gio.video_info(source, decode_fps) if is_video else None
    fps = info.fps if is_video else 25.0
    total = info.n_frames if is_video else len(gio.frame_names(source) or [])
    total = total if max_frames is None else min(total, max_frames)
    video_id = video_id or source.stem
    head = head_model if head_model is not None else HeadModel.default()
    config = fit_config or FitConfig()
    out_dir = Path(out_dir)
    made_from = _check_same_clip(out_dir / video_id, source)
    staged = gio.staging_folder(out_dir / video_id)  # built aside, swapped in whole at the end
    seconds = {"landmarks": 0.0, "framing": 0.0, "writing": 0.0}

    # ---- 1. landmarks and framing, streaming over the frames
    detector = LandmarkDetector(video=is_video)
    segmenter = Segmenter()
    framer = framing.Framer(segmenter, size, box_smoothing if box_smoothing is not None
                            else (framing.BOX_EMA if is_video else 1.0))
    writer = VideoWriter(out_dir, video_id, identity=identity or video_id, split=split, width=size, height=size,
                         head_model=head.id, frame_format=frame_format, fps=fps, source=source.name, path=staged.name)
    writer.info.path = video_id  # written in the staging folder, recorded where it will be
    lmdb = (refmt.LmdbImageWriter(out_dir / "img_lmdb", max(total, 1), size, video=video_id)
            if reference_format else None)
    crop_boxes, head_boxes, lmk_crop, n_faces, valid = [], [], [], [], []
    n = 0
    last_box = None
    bar = _progress(total or None, f"track {video_id}", progress)
    try:
        frames = gio.iter_video(source, decode_fps) if is_video else gio.iter_frames(source)  # a video reports a damaged end
        for frame in frames:
            if max_frames is not None and n >= max_frames:
                break
            t0 = time.perf_counter()
            lm = detector(frame)
            t1 = time.perf_counter()
            if lm is not None:
                framed = framer(frame, lm)
                raw, matte, box = framed.raw, framed.matte, framed.crop_box
                # the reference's bbox: this frame's head box in the crop, / crop size
                head_boxes.append((framed.frame_head_box - np.tile(box[:2], 2)) / (box[2] - box[0]))
                lmk_crop.append(framed.landmarks.points)
                last_box = box
                if lmdb is not None:
                    lmdb.add(refmt.reference_key(video_id, len(lmdb.keys)), framed.image)  # n-th face frame
            else:
                box = _fallback_box(frame.shape, last_box)
                raw = framing.crop(frame, box, size)
                matte = segmenter(raw)
                head_boxes.append(np.zeros(4))
                lmk_crop.append(np.zeros((478, 3), np.float32))
            t2 = time.perf_counter()
            writer.add(raw, matte)
            seconds["writing"] += time.perf_counter() - t2
            seconds["landmarks"] += t1 - t0
            seconds["framing"] += t2 - t1
            crop_boxes.append(box)
            n_faces.append(0 if lm is None else lm.n_faces)
            valid.append(lm is not None)
            n += 1
            bar.update(1)
    except BaseException:
        if lmdb is not None:
            lmdb.close()
        raise
    finally:
        bar.close()
        detector.close()
        segmenter.close()
    valid = np.array(valid, bool)
    valid_idx = np.nonzero(valid)[0]
    n_faces = np.array(n_faces)
    for i in np.nonzero(n_faces > 1)[0]:
        log.info("frame %d: %d faces, tracking the largest", i, n_faces[i])
    if not valid.any():
        log.warning("%s: no face found in any of its %d frame(s)", source, n)

    # ---- 2. fit the head model to the landmarks of the tracked frames
    t0 = time.perf_counter()
    lmk_crop = np.stack(lmk_crop).astype(np.float32)
    fit = None
    if len(valid_idx):
        fbar = _progress(len(valid_idx), f"fit {video_id}", progress)
        fit = fit_landmarks(head, lmk_crop[valid_idx, :, :2], size, config, frame_index=valid_idx,
                            progress=fbar.update)
        fbar.close()
    seconds["fitting"] = time.perf_counter() - t0

    # ---- 3. smoothing and parameters in the dataset format
    params, extra = _params(head, fit, valid, valid_idx, smooth, size, np.array(crop_boxes),
                            np.array(head_boxes), lmk_crop)
    t0 = time.perf_counter()
    audio, sound_warning = _sound(source, n, fps) if is_video else (None, None)
    writer.close(params, audio)
    np.savez(writer.folder / TRACKING_FILE, **extra, source_sha256=made_from)
    seconds["writing"] += time.perf_counter() - t0

    summary = TrackSummary(video_id, out_dir, writer.folder, n, int(valid.sum()),
                           no_face=[int(i) for i in np.nonzero(~valid)[0]],
                           several_faces=[int(i) for i in np.nonzero(n_faces > 1)[0]],
                           mean_error_px=float(fit.error_px.mean()) if fit is not None else float("nan"))
    if is_video and frames.warning():
        summary.warnings.append(frames.warning())  # the frames that decoded are tracked; the rest is named
    if sound_warning:
        summary.warnings.append(sound_warning)

    # ---- 4. the reference tracker's layout
    if lmdb is not None:
        lmdb.close()
        summary.reference_files.append(out_dir / "img_lmdb")
    if reference_format and fit is not None:
        summary.reference_files += _write_reference(out_dir, video_id, fit, params, valid_idx, smooth)

    # ---- 5. overlay for a person to check
    if overlay:
        t0 = time.perf_counter()
        summary.overlay = _write_overlay(writer.folder, head, params, extra, valid, fps, is_video or n > 1, progress)
        seconds["overlay"] = time.perf_counter() - t0
    summary.video_dir = gio.swap_in(staged, out_dir / video_id)  # complete: it replaces any earlier one whole
    if summary.overlay is not None:
        summary.overlay = summary.video_dir / summary.overlay.name
    update_index(out_dir)
    seconds["total"] = time.perf_counter() - t_start
    summary.seconds = seconds
    return summary


def _check_same_clip(folder: Path, source: Path) -> str:
    """The input's fingerprint; refused when ``folder`` holds the tracking of another clip of the
    same name (re-tracking the same clip replaces it: never frames of one beside parameters of
    the other)."""
    made_from = gio.fingerprint(source)
    try:
        with np.load(folder / TRACKING_FILE) as f:
            before = str(f["source_sha256"]) if "source_sha256" in f else None
    except (OSError, ValueError):
        return made_from  # nothing tracked there yet (or not by this version): replaced whole
    if before is not None and before != made_from:
        raise gio.OutputError(f"{folder} holds the tracking of another clip named {folder.name} (a different file "
                              f"from {source}): choose another --out, or delete {folder} to track this one there")
    return made_from


def _sound(source: Path, n_frames: int, fps: float) -> tuple[np.ndarray | None, str | None]:
    """The video's sound for its first ``n_frames`` frames (the ones tracked): float32 [N] at
    16 kHz from frame 0's time, cut or padded to the frames; None without a sound track, and
    a warning when the track is there but cannot be decoded (the frames are tracked anyway)."""
    from gagavatar.data.format import fit_to_frames
    from gagavatar.errors import NoSoundError

    try:
        return fit_to_frames(gio.read_audio(source), n_frames, fps), None
    except NoSoundError:
        return None, None  # a silent clip is fine: video.json says it has no audio
    except gio.InputError as e:
        return None, f"its sound was not kept: {e}"


def _params(head, fit: FitResult | None, valid, valid_idx, smooth, size, crop_boxes, head_boxes, lmk_crop):
    """params.npz arrays (FRAME_ARRAYS of gagavatar.data.format) and tracking.npz arrays.
    Frames without a face copy the nearest tracked frame's parameters (and stay valid=False)."""
    F = len(valid)
    if fit is not None:
        tracked = fit.frames(size)
        transform, eye_pose = smoothing.Smoother(smooth)(tracked.camera.to_reference(), tracked.eye_pose)
        tracked = tracked.replace(eye_pose=eye_pose, camera=Camera(reference_to_viewmat(transform), tracked.camera.K,
                                                                   size, size))
        rank = _nearest_tracked(valid_idx, F)
        frames, shape = tracked[rank], fit.shape
        errors = np.where(valid, fit.error_px[rank], np.nan)
    else:  # no face anywhere: a neutral head, 10 units in front of the camera
        view = torch.eye(4)
        view[:3, :3], view[2, 3] = torch.diag(torch.tensor([1.0, -1.0, -1.0])), 10.0
        zeros = lambda n: torch.zeros(F, n)  # noqa: E731
        frames = FrameParams(zeros(head.n_shape), zeros(head.n_expression), zeros(3), zeros(3), zeros(3), zeros(6),
                             zeros(3), Camera(view.expand(F, 4, 4), intrinsics(REFERENCE_FOCAL, size, size, F),
                                              size, size))
        shape, errors = np.zeros(head.n_shape, np.float32), np.full(F, np.nan)
    params = frames.to_arrays() | {"shape": np.asarray(shape, np.float32)}  # one shape for the video
    params.update({
        "bbox": np.clip(head_boxes, 0.0, 1.0).astype(np.float32),
        "landmarks": lmk_crop[:, :, :2].astype(np.float32),
        "crop_box": crop_boxes.astype(np.float32), "valid": valid,
        "scale": np.float32(WORLD_SCALE), "landmark_set": np.str_("mediapipe478"),
    })
    extra = {"viewmat": frames.camera.viewmat.numpy(), "error_px": errors.astype(np.float32),
             "landmarks_z": lmk_crop[:, :, 2].astype(np.float32), "valid": valid}
    if fit is not None:
        extra.update({"fit_transform": fit.transform[rank], "fit_eye_pose": fit.eye_pose[rank],
                      "fit_landmarks": ((fit.landmarks + 1.0) * (size / 2.0))[rank].astype(np.float32),
                      "fit_landmark_indices": fit.landmark_indices.astype(np.int64),
                      "smooth_strength": np.float32(smooth)})
    return params, extra


def _write_reference(out_dir: Path, video_id: str, fit: FitResult, params: dict, valid_idx, smooth: float):
    """optim.pkl (the fit) and smoothed.pkl (the reference's smoothing, times ``smooth`` when given)
    over the tracked frames, numbered 0, 1, ... as the reference numbers them; other videos kept."""
    bbox = params["bbox"][valid_idx]
    strength = smooth if smooth > 0 else 1.0
    smoothed_transform, smoothed_eyes = smoothing.smooth_track(fit.transform, fit.eye_pose, strength)
    optim, smoothed = {}, {}
    for k in range(len(valid_idx)):
        key = refmt.reference_key(video_id, k)
        optim[key] = refmt.make_record(fit.shape, fit.expression[k], fit.jaw_pose[k], fit.eye_pose[k],
                                       fit.transform[k], bbox[k])
        smoothed[key] = refmt.make_record(fit.shape, fit.expression[k], fit.jaw_pose[k], smoothed_eyes[k],
                                          smoothed_transform[k], bbox[k])
    return [refmt.merge_reference_pickle(out_dir / "optim.pkl", video_id, optim),
            refmt.merge_reference_pickle(out_dir / "smoothed.pkl", video_id, smoothed)]


def _write_overlay(folder: Path, head, params: dict, extra: dict, valid, fps: float, as_video: bool,
                   progress: bool) -> Path:
    """overlay.mp4 (several frames, with the video's sound when it has some: the lips' fit can be
    heard against the speech) or overlay.jpg (one image) next to the video's frames."""
    from PIL import Image

    from gagavatar.data.format import VideoRecord
    from gagavatar.tracking.overlay import overlay_frame

    record = VideoRecord.open(folder)
    frames = record.frames()
    F = len(valid)
    head = copy.deepcopy(head).cpu().float()  # a copy: Module.cpu()/float() would move the caller's head
    faces = head.faces.numpy()

    def overlays():
        bar = _progress(F, "overlay", progress)
        for start in range(0, F, 32):
            idx = np.arange(start, min(F, start + 32))
            with torch.no_grad():
                cams = frames[idx].camera.to_camera(frames[idx].vertices(head)).numpy()
            for j, i in enumerate(idx):
                crop = record.frame(int(i))
                if valid[i]:
                    fitted = extra["fit_landmarks"][i] if "fit_landmarks" in extra else None
                    yield overlay_frame(crop, cams[j], params["K"][i], faces, params["landmarks"][i], fitted)
                else:
                    yield overlay_frame(crop, None, None, None, None, None)
                bar.update(1)
        bar.close()

    if as_video:
        return gio.write_video(folder / "overlay.mp4", overlays(), fps, audio=record.audio(),
                               audio_rate=AUDIO_RATE)
    path = folder / "overlay.jpg"
    Image.fromarray(next(iter(overlays()))).save(path, quality=92)
    return path
