"""Framing: the square crop the released model was trained on (SPEC §9).

The reference tracker detects a whole-head box (hair included) with VGGHead,
smooths it over a video with an exponential moving average (weight 0.03 on the
new frame), grows it to a square of side 1.65 sqrt(w h) about its centre,
truncates the corners to integers, crops (black outside the frame) and resizes
to 512 (bilinear, antialiased).

MediaPipe gives face landmarks, not a head box, so we estimate the head box:

    size   = GAIN * r^(1 - W) * h^W          (the head box's sqrt(w h))
    centre = c + OFFSET * size

with ``c`` the centroid of the 468 mesh landmarks (pixels), ``r`` their RMS
distance from it in 3D (MediaPipe's z included, so it hardly changes with head
rotation), and ``h`` the height from the top of the hair (the selfie-segmentation
matte above the forehead) to the chin; ``h`` is clamped to a band around its
typical ratio to ``r`` so a raised hand or a hat cannot run away with the box.
GAIN, OFFSET and the typical ratio are calibrated on 28 crops that the
reference tracker made (``calibrate``; figures in docs/tracking.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from gagavatar.tracking.landmarks import FaceLandmarks
from gagavatar.tracking.matting import composite_on_black

CROP_SCALE = 1.65  # reference: crop side = 1.65 sqrt(w h) of the head box
BOX_EMA = 0.03  # reference: box_t = 0.03 detected_t + 0.97 box_{t-1}
MESH = slice(0, 468)  # the face mesh without the iris points
CHIN = 152
FOREHEAD = 10
EYE_OUTER = (33, 263)
SEGMENT_SIZE = 256  # the selfie-segmentation model's own input size


@dataclass(frozen=True)
class FramingParams:
    """The landmark -> head-box mapping (module docstring). Defaults: calibrated values."""

    gain: float = 0.944  # head-box size / (r^(1-W) h^W)
    offset: tuple[float, float] = (-0.012, 0.0)  # head-box centre - landmark centroid, in head-box sizes
    hair_ratio: float = 4.34  # median h / r
    hair_weight: float = 0.9  # W: how much the hair-to-chin height counts against the face radius
    hair_clamp: tuple[float, float] = (0.8, 1.25)  # h is kept within this band of hair_ratio * r


@dataclass
class HeadMeasure:
    """What framing reads off one face: centroid [2], 3D RMS radius and hair-to-chin height (pixels)."""

    centre: np.ndarray
    radius: float
    hair_to_chin: float | None = None


# Memory a crop side costs per pixel while a frame is framed and matted (the crop, its matte,
# float copies while resizing and compositing)
CROP_BYTES_PER_PIXEL = 48


def check_crop_size(size: int) -> int:
    """``size`` (``--size``, the side of the stored crops) when it is even, at least 64, and its
    crops fit in this machine's memory; else one line saying so."""
    from gagavatar.system import check_memory

    if size < 64 or size % 2:
        raise ValueError(f"--size {size}: use an even size of at least 64 (the released model uses 512)")
    check_memory(size * size * CROP_BYTES_PER_PIXEL, f"--size {size}")
    return size


def measure_face(landmarks: FaceLandmarks) -> HeadMeasure:
    """Centroid and rotation-independent size of the face mesh (pixels)."""
    p = landmarks.points[MESH].astype(np.float64)
    c = p.mean(0)
    return HeadMeasure(c[:2].copy(), float(np.sqrt(((p - c) ** 2).sum(1).mean())))


def hair_to_chin(landmarks: FaceLandmarks, matte: np.ndarray, threshold: float = 0.5) -> float | None:
    """Height from the top of the head (hair) to the chin, in the matte's pixels.

    landmarks are in the matte's pixel coordinates. Each matte column between the
    outer eye corners is followed upwards from the forehead while it stays
    foreground; the head top is the 10th percentile of where those runs end (so a
    single stray column does not decide it). None when the forehead is off the matte.
    """
    H, W = matte.shape
    xy = landmarks.xy
    x0, x1 = sorted((xy[EYE_OUTER[0], 0], xy[EYE_OUTER[1], 0]))
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, W)
    r0 = int(np.floor(xy[FOREHEAD, 1]))
    if c1 - c0 < 2 or not 0 <= r0 < H:
        return None
    fg = matte[: r0 + 1, c0:c1] > threshold  # rows 0..r0 of the band
    run = np.cumprod(fg[::-1], axis=0).sum(0)  # foreground run length going up from the forehead
    tops = r0 + 1 - run
    top = float(np.percentile(tops, 10))
    return float(xy[CHIN, 1]) - top


def head_box(measure: HeadMeasure, params: FramingParams = FramingParams()) -> np.ndarray:
    """Estimated reference head box: a square [4] xyxy in pixels (its side is the box's sqrt(w h))."""
    r = measure.radius
    typical = params.hair_ratio * r
    h = typical if measure.hair_to_chin is None else measure.hair_to_chin
    h = float(np.clip(h, params.hair_clamp[0] * typical, params.hair_clamp[1] * typical))
    size = params.gain * r ** (1.0 - params.hair_weight) * h ** params.hair_weight
    centre = measure.centre + np.asarray(params.offset) * size
    return np.concatenate([centre - size / 2, centre + size / 2])


def expand_box(box: np.ndarray, scale: float = CROP_SCALE) -> np.ndarray:
    """The reference's crop: square of side scale sqrt(w h) about the box centre, corners
    truncated towards zero to integers as the reference does. [4] xyxy (float array of ints)."""
    box = np.asarray(box, dtype=np.float64)
    c = (box[:2] + box[2:]) / 2
    side = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 0.0)) * scale
    return np.trunc(np.concatenate([c - side / 2, c + side / 2]))


def ema(previous: np.ndarray | None, current: np.ndarray, alpha: float) -> np.ndarray:
    """One step of the reference's exponential moving average: alpha * current + (1 - alpha) * previous."""
    if previous is None:
        return np.asarray(current, dtype=np.float64)
    return alpha * np.asarray(current, dtype=np.float64) + (1.0 - alpha) * previous


def crop(image: np.ndarray, box: np.ndarray, size: int, fast: bool = False) -> np.ndarray:
    """Crop ``box`` (xyxy, integer corners) from image [H, W, C] or [H, W], black outside
    the image, and resize to size x size: bilinear and antialiased like the reference's
    torchvision resize, or with ``fast`` OpenCV's pixel-area average (for analysis only)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {list(box)}")
    H, W = image.shape[:2]
    canvas = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    if canvas.shape[0] == size and canvas.shape[1] == size:
        return canvas
    if fast:
        import cv2

        return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    if canvas.dtype == np.float32:
        return np.asarray(Image.fromarray(canvas, mode="F").resize((size, size), Image.BILINEAR))
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))


def image_coverage(box: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """[size, size] float32: the share of each pixel of the size x size crop of ``box`` (xyxy)
    that lies inside a height x width image: 1 inside, 0 on the black ``crop`` pads it with."""
    x0, y0, x1, y1 = (float(v) for v in box)

    def along(lo: float, hi: float, n: int) -> np.ndarray:
        edges = lo + (hi - lo) * np.arange(size + 1) / size
        return np.clip((np.minimum(edges[1:], n) - np.maximum(edges[:-1], 0)) / (edges[1:] - edges[:-1]), 0, 1)

    return np.outer(along(y0, y1, height), along(x0, x1, width)).astype(np.float32)


def resample_crop(crop_image: np.ndarray, box: np.ndarray, new_box: np.ndarray, size: int) -> np.ndarray:
    """A square crop of ``box`` (any side in pixels) -> the size x size crop of ``new_box``
    (both xyxy in the same image), by bilinear resampling; outside ``box`` is zero."""
    import cv2

    n = crop_image.shape[0]
    s = n / float(box[2] - box[0])  # crop pixels per image pixel
    a = float(new_box[2] - new_box[0]) / size * s  # crop pixels per output pixel
    M = np.array([[a, 0.0, (new_box[0] - box[0]) * s + 0.5 * a - 0.5],
                  [0.0, a, (new_box[1] - box[1]) * s + 0.5 * a - 0.5]])
    return cv2.warpAffine(crop_image, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_crop(landmarks: FaceLandmarks, box: np.ndarray, size: int) -> FaceLandmarks:
    """Landmarks of the full image -> pixels of the size x size crop of ``box``."""
    return landmarks.shifted(box[:2], size / float(box[2] - box[0]))


@dataclass
class Framed:
    """One framed frame.

    image: [S, S, 3] uint8 crop composited on black; raw: the same crop unmatted;
    matte: [S, S] float32 in [0, 1]; crop_box: [4] xyxy in the input's pixels;
    head_box: [4] the smoothed estimated head box and frame_head_box: this
    frame's own estimate (input pixels); landmarks: the face's landmarks in the
    crop's pixels.
    """

    image: np.ndarray
    raw: np.ndarray
    matte: np.ndarray
    crop_box: np.ndarray
    head_box: np.ndarray
    frame_head_box: np.ndarray
    landmarks: FaceLandmarks


@dataclass
class Framer:
    """Frames the faces of one video (or one image) in order, smoothing the head box.

    ``framer(image, landmarks)`` -> ``Framed``. The head box's moving average is
    causal, as in the reference, so frames are framed as they stream in.
    smoothing: the EMA weight of a new frame (0.03 = reference; 1 = no smoothing).
    The matte is segmented at 256x256 (the model's own resolution) on the last
    frame's crop, where the hair top is measured, and resampled to the new crop
    (segmented again when the crop moved more than ``reuse_matte`` of its side).
    """

    segmenter: object
    size: int = 512
    smoothing: float = BOX_EMA
    params: FramingParams = field(default_factory=FramingParams)
    reuse_matte: float = 0.02  # resample the last matte when the crop moved less than this x its side
    _box: np.ndarray | None = None

    def __call__(self, image: np.ndarray, landmarks: FaceLandmarks) -> Framed:
        # 1. segment a crop near where this frame's crop will be (the last crop of the
        #    video, or a landmark-only estimate), to see the top of the hair.
        measure = measure_face(landmarks)
        region = expand_box(head_box(measure, self.params) if self._box is None else self._box)
        matte = self._segment(image, region)
        h = hair_to_chin(to_crop(landmarks, region, SEGMENT_SIZE), matte)
        measure.hair_to_chin = None if h is None else h * float(region[2] - region[0]) / SEGMENT_SIZE
        # 2. this frame's head box, smoothed over the video, grown to the crop.
        frame_box = head_box(measure, self.params)
        self._box = ema(self._box, frame_box, self.smoothing)
        box = expand_box(self._box)
        if np.abs(box - region).max() > self.reuse_matte * float(region[2] - region[0]):
            matte, region = self._segment(image, box), box  # moved a lot: segment the new crop
        raw = crop(image, box, self.size)
        matte = resample_crop(matte, region, box, self.size)
        return Framed(composite_on_black(raw, matte), raw, matte, box, self._box.copy(), frame_box,
                      to_crop(landmarks, box, self.size))

    def _segment(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Matte [SEGMENT_SIZE, SEGMENT_SIZE] of the square crop ``box``; none of it outside the image
        (the segmenter takes the black padding under a chin for the shoulders)."""
        coverage = image_coverage(box, *image.shape[:2], SEGMENT_SIZE)
        return self.segmenter(crop(image, box, SEGMENT_SIZE, fast=True)) * coverage


# ---------------------------------------------------------------------------
# Calibration against crops made by the reference tracker
# ---------------------------------------------------------------------------

def calibrate(measures: list[HeadMeasure], hair_weight: float = 0.9, scale: float = CROP_SCALE,
              hair_clamp=(0.8, 1.25)) -> FramingParams:
    """FramingParams from faces measured in reference crops (each crop is the whole image).

    In a reference crop of side S the head box is centred at (S/2, S/2) with
    sqrt(w h) = S / scale; measures are in pixels of crops of side 1 (divide by S).
    Each constant is the median over the crops, so one odd crop cannot move it.
    """
    r = np.array([m.radius for m in measures])
    h = np.array([m.hair_to_chin for m in measures], dtype=float)
    c = np.stack([m.centre for m in measures])
    size = 1.0 / scale
    hair_ratio = float(np.median(h / r))
    hc = np.clip(h, hair_clamp[0] * hair_ratio * r, hair_clamp[1] * hair_ratio * r)
    gain = float(np.median(size / (r ** (1 - hair_weight) * hc ** hair_weight)))
    offset = np.median((0.5 - c) / size, axis=0)
    return FramingParams(round(gain, 3), (round(float(offset[0]), 3), round(float(offset[1]), 3)),
                         round(hair_ratio, 2), hair_weight, tuple(hair_clamp))
