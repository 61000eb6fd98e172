"""MediaPipe face mesh: 478 landmarks (468 mesh points + 10 iris points) in pixels.

MediaPipe 0.10.14 ships its face-detection and face-mesh models inside the
wheel, so nothing is downloaded. Landmark ``i`` is MediaPipe's canonical index
(468-472: the subject's right iris centre + 4 rim points, 473-477: left iris).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

N_LANDMARKS = 478
RIGHT_IRIS = 468  # the subject's right iris centre (left in the image for a frontal face)
LEFT_IRIS = 473
# Larger inputs are shrunk before detection: MediaPipe reads the face at 192x192
# anyway, and a 8000-pixel frame would only cost time and memory.
MAX_DETECTION_SIDE = 2048


def _import_mediapipe():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # protobuf deprecation noise
        try:
            import mediapipe as mp
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the tracker needs mediapipe 0.10.14: pip install --no-deps mediapipe==0.10.14 "
                              "(make install does this)") from e
    return mp


def _connection_points(*names: str) -> np.ndarray:
    mp = _import_mediapipe()
    sets = mp.solutions.face_mesh_connections
    return np.array(sorted({i for name in names for edge in getattr(sets, name) for i in edge}), dtype=np.int64)


def face_oval() -> np.ndarray:
    """MediaPipe ids of the face contour (36): silhouette-like, less reliable than inner points."""
    return _connection_points("FACEMESH_FACE_OVAL")


def salient_landmarks() -> np.ndarray:
    """The ~150 MediaPipe ids worth fitting: contours of the face, lips, eyes and brows, the
    nose, and the two iris centres. The other mesh points are interpolated by MediaPipe
    and add cost, not information."""
    ids = _connection_points("FACEMESH_CONTOURS", "FACEMESH_NOSE")
    return np.union1d(ids, [RIGHT_IRIS, LEFT_IRIS])


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


class LandmarkDetector:
    """Face landmarks of RGB uint8 images [H, W, 3]; ``None`` where there is no face.

    video=True uses MediaPipe's tracking mode (faster, temporally consistent),
    for consecutive frames of one video; use a new detector per video.
    """

    def __init__(self, video: bool = False, max_faces: int | None = None, min_confidence: float = 0.5):
        mp = _import_mediapipe()
        # In tracking mode MediaPipe re-runs detection while fewer than max_faces are
        # tracked, so 2 is enough to notice a second person without paying every frame.
        self.max_faces = max_faces or (2 if video else 4)
        self.video = video
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=self.max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> FaceLandmarks | None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
        H, W = image.shape[:2]
        scale = 1.0
        if max(H, W) > MAX_DETECTION_SIDE:
            import cv2

            scale = MAX_DETECTION_SIDE / max(H, W)
            image = cv2.resize(image, (round(W * scale), round(H * scale)), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = result.multi_face_landmarks or []
        if not faces:
            return None
        all_points = [np.array([(p.x * w, p.y * h, p.z * w) for p in f.landmark], dtype=np.float32)
                      for f in faces]
        areas = [np.prod(p[:, :2].max(0) - p[:, :2].min(0)) for p in all_points]
        points = all_points[int(np.argmax(areas))] / scale
        if points.shape[0] != N_LANDMARKS:
            raise RuntimeError(f"MediaPipe returned {points.shape[0]} landmarks, expected {N_LANDMARKS} "
                               f"(refine_landmarks must be on; is mediapipe 0.10.14 installed?)")
        return FaceLandmarks(points, len(faces))

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "LandmarkDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
