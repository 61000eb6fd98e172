"""MediaPipe face mesh: 478 landmarks (468 mesh points + 10 iris points) in pixels.

MediaPipe 0.10.14 ships its face-detection and face-mesh models inside the
wheel, so nothing is downloaded. Landmark ``i`` is MediaPipe's canonical index
(468-472: the subject's right iris centre + 4 rim points, 473-477: left iris).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from gagavatar.assets import bundled

log = logging.getLogger(__name__)

N_LANDMARKS = 478
CANONICAL_FACE_PATH = bundled("head/mediapipe_canonical_face.obj")
RIGHT_IRIS = 468  # the subject's right iris centre (left in the image for a frontal face)
LEFT_IRIS = 473
# Larger inputs are shrunk before face detection (which reads at most a 192x192
# picture anyway); the face mesh then reads the face from the full-resolution frame.
MAX_DETECTION_SIDE = 2048


# GAGAVATAR_VERBOSE=1 keeps MediaPipe's own console output (TF Lite, absl, protobuf), which is
# otherwise silenced where it starts: see _import_mediapipe and native_logs_silenced.
VERBOSE_ENV = "GAGAVATAR_VERBOSE"


def verbose() -> bool:
    """True when GAGAVATAR_VERBOSE asks for MediaPipe's own log lines."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _import_mediapipe():
    if not verbose():
        # protobuf 4 warns on every first use of SymbolDatabase.GetPrototype, which mediapipe's
        # solution_base calls in process(): long after the import, so filter it for good
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated",
                                category=UserWarning, module=r"google\.protobuf")
    with warnings.catch_warnings():
        if not verbose():
            warnings.simplefilter("ignore")  # protobuf deprecation noise of the import itself
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the tracker needs mediapipe 0.10.14: pip install --no-deps mediapipe==0.10.14 "
                              "(make install does this)") from e
    return mp


_STDERR_LOCK = threading.Lock()  # fd 2 is one per process: one redirection at a time


@contextmanager
def native_logs_silenced():
    """Send file descriptor 2 to /dev/null while MediaPipe builds its graphs (unless verbose()).

    mediapipe 0.10.14's C++ code logs with TF Lite's logger ("Created TensorFlow Lite
    XNNPACK delegate") and absl ("All log messages before absl::InitializeLog()",
    "inference_feedback_manager.cc ... Disabling support for feedback tensors") straight
    to fd 2, and no switch reaches them: GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL do
    not (measured), absl's log flags are not linked in, and the binding exports no
    logging call. Errors still arrive: a graph that fails raises a Python exception.
    """
    if verbose():
        yield
        return
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no fd 2 (closed, or a replaced sys.stderr): nothing to silence
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def wait_until_open(*solutions) -> None:
    """Wait until MediaPipe solutions have opened their calculators: they open (and log)
    on the graph's worker threads after the constructor returns."""
    for solution in solutions:
        graph = getattr(solution, "_graph", None)  # mediapipe.python.solution_base.SolutionBase
        if graph is not None:
            graph.wait_until_idle()


# MediaPipe's face-mesh connection sets, as point ids (tests check them against
# mediapipe.solutions.face_mesh_connections; written out so that fitting does
# not have to import mediapipe).
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284,
             288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
CONTOURS_AND_NOSE = (
    0, 1, 2, 4, 5, 6, 7, 10, 13, 14, 17, 19, 21, 33, 37, 39, 40, 45, 46, 48, 52, 53, 54, 55, 58, 61, 63, 64, 65, 66,
    67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 94, 95, 97, 98, 103, 105, 107, 109, 115, 127, 132, 133, 136, 144,
    145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181,
    185, 191, 195, 197, 220, 234, 246, 249, 251, 263, 267, 269, 270, 275, 276, 278, 282, 283, 284, 285, 288, 291,
    293, 294, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 326, 327, 332, 334, 336, 338,
    344, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397,
    398, 400, 402, 405, 409, 415, 440, 454, 466)


def canonical_face() -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's canonical face model (bundled, Apache-2.0), FLAME's axes: points [468, 3]
    in metres (landmark i is point i) and triangles [852, 3]."""
    v, f = [], []
    for line in CANONICAL_FACE_PATH.read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            f.append([int(x) - 1 for x in line.split()[1:4]])
    return np.array(v) * 0.01, np.array(f, dtype=np.int64)  # the file is in centimetres


def face_oval() -> np.ndarray:
    """MediaPipe ids of the face contour (36): silhouette-like, less reliable than inner points."""
    return np.array(FACE_OVAL, dtype=np.int64)


def salient_landmarks() -> np.ndarray:
    """The 154 MediaPipe ids worth fitting: contours of the face, lips, eyes and brows
    (FACEMESH_CONTOURS), the nose (FACEMESH_NOSE), and the two iris centres. The other
    mesh points are interpolated by MediaPipe and add cost, not information."""
    return np.union1d(CONTOURS_AND_NOSE, [RIGHT_IRIS, LEFT_IRIS])


@dataclass
class FaceLandmarks:
    """One face's landmarks in the image they were detected in.

    points: [478, 3] pixels; x right, y down, z towards the camera is negative
            (MediaPipe's z, scaled like x, relative to the face's centre).
    n_faces: how many faces the image held (the largest one is returned).
    """

    points: np.ndarray
    n_faces: int = 1

    @property
    def xy(self) -> np.ndarray:
        """[478, 2] pixel coordinates."""
        return self.points[:, :2]

    @property
    def box(self) -> np.ndarray:
        """[4] xyxy bounding box of the 2D landmarks, pixels."""
        return np.concatenate([self.xy.min(0), self.xy.max(0)])

    def shifted(self, offset_xy, scale: float = 1.0) -> "FaceLandmarks":
        """Landmarks in another image: ``(p - offset) * scale`` (z scaled too)."""
        p = self.points.copy()
        p[:, :2] -= np.asarray(offset_xy, dtype=p.dtype)
        return FaceLandmarks(p * scale, self.n_faces)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def _square_crop(image: np.ndarray, centre, side: float, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """size x size crop of the square (centre, side), black outside the image.

    Returns (crop, top-left corner [2] in image pixels, crop pixels per image pixel).
    """
    import cv2

    scale = size / side
    corner = np.asarray(centre, dtype=np.float64) - side / 2
    M = np.array([[scale, 0.0, -corner[0] * scale], [0.0, scale, -corner[1] * scale]])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(image, M, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, corner, scale


class LandmarkDetector:
    """Face landmarks of RGB uint8 images [H, W, 3]; ``None`` where there is no face.

    MediaPipe's face detectors (short range for close-ups, full range for small
    faces) find the faces, and the face mesh reads the largest from a square
    crop around it (the face mesh's own detector only finds faces that fill
    much of the picture). With video=True (consecutive frames of one video) the crop
    follows the previous frame's landmarks, and the detector runs again only
    when the face is lost and every ``recount`` frames (to notice other faces).
    ``FaceLandmarks.n_faces`` is the number of faces the detector saw (on frames
    where it ran; 1 otherwise).
    """

    CROP = 512  # face-mesh input crop; the face fills about half of it
    CROP_MARGIN = 2.0  # crop side / face size

    def __init__(self, video: bool = False, min_confidence: float = 0.5, recount: int = 30):
        mp = _import_mediapipe()
        self.video, self.recount = video, recount
        with native_logs_silenced():
            # the short-range model finds close-ups, the full-range one small faces; both run
            self._detectors = [mp.solutions.face_detection.FaceDetection(model_selection=m,
                                                                         min_detection_confidence=min_confidence)
                               for m in (0, 1)]
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                         refine_landmarks=True, min_detection_confidence=min_confidence)
            wait_until_open(self._mesh, *self._detectors)
        self._previous: np.ndarray | None = None  # last frame's landmarks (video)
        self._frame = 0

    def detect(self, image: np.ndarray) -> list[np.ndarray]:
        """Face boxes [4] xyxy in pixels, largest first (full-range detector)."""
        H, W = image.shape[:2]
        scale = min(1.0, MAX_DETECTION_SIDE / max(H, W))
        small = image
        if scale < 1.0:
            import cv2

            small = cv2.resize(image, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
        boxes = []
        for detector in self._detectors:
            for d in detector.process(np.ascontiguousarray(small)).detections or []:
                b = d.location_data.relative_bounding_box
                box = np.array([b.xmin * W, b.ymin * H, (b.xmin + b.width) * W, (b.ymin + b.height) * H])
                if all(_iou(box, other) < 0.3 for other in boxes):  # both models saw it: count once
                    boxes.append(box)
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def _mesh_in(self, image: np.ndarray, centre, side: float) -> np.ndarray | None:
        """[478,3] landmarks (image pixels) of the face in the square (centre, side), or None."""
        crop, corner, scale = _square_crop(image, centre, side, self.CROP)
        result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        n = self.CROP
        pts = np.array([(p.x * n, p.y * n, p.z * n) for p in result.multi_face_landmarks[0].landmark], np.float64)
        if pts.shape[0] != N_LANDMARKS:
            raise RuntimeError(f"MediaPipe returned {pts.shape[0]} landmarks, expected {N_LANDMARKS} "
                               f"(refine_landmarks must be on; is mediapipe 0.10.14 installed?)")
        pts /= scale
        pts[:, :2] += corner
        return pts.astype(np.float32)

    def __call__(self, image: np.ndarray) -> FaceLandmarks | None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
        image = np.ascontiguousarray(image)
        points, n_faces = None, 1
        recount = not self.video or self._previous is None or self._frame % self.recount == 0
        self._frame += 1
        if self.video and self._previous is not None:  # follow the face of the last frame
            lo, hi = self._previous[:, :2].min(0), self._previous[:, :2].max(0)
            points = self._mesh_in(image, (lo + hi) / 2, self.CROP_MARGIN * float((hi - lo).max()))
        if recount or points is None:
            boxes = self.detect(image)
            n_faces = len(boxes)
            if points is None and boxes:
                b = boxes[0]
                points = self._mesh_in(image, (b[:2] + b[2:]) / 2, self.CROP_MARGIN * float((b[2:] - b[:2]).max()))
        self._previous = points if self.video else None
        if points is None:
            return None
        return FaceLandmarks(points, max(n_faces, 1))

    def close(self) -> None:
        self._mesh.close()
        for detector in self._detectors:
            detector.close()

    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
