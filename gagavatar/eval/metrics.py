"""Image metrics of the paper's Table 1 (SPEC §5).

PSNR and SSIM are computed here; LPIPS uses ``gagavatar.perceptual.LPIPS`` when
its weights are at hand; CSIM is the cosine similarity of dlib's face-recognition
ResNet descriptors (weights from the ``face-recognition-models`` package);
AKD is the mean distance between face-mesh landmarks, in pixels at 512x512.
Images are float tensors [B,3,H,W] in [0, 1] unless said otherwise.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gagavatar.system import MissingExtra, require


def psnr(prediction: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per image [B]; identical images give +inf."""
    mse = (prediction - target).double().square().flatten(1).mean(1)
    return (-10 * torch.log10(mse)).float()


def _gaussian_window(size: int, sigma: float, dtype, device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    return g / g.sum()


def ssim(prediction: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """SSIM per image [B] (Wang et al. 2004): Gaussian window 11 / sigma 1.5, data range 1,
    per channel, averaged over the valid (unpadded) area and the channels."""
    x, y = prediction.double(), target.double()
    C = x.shape[1]
    g = _gaussian_window(window, sigma, x.dtype, x.device)
    kernel_h = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)
    kernel_v = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)
    blur = lambda t: F.conv2d(F.conv2d(t, kernel_h, groups=C), kernel_v, groups=C)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()


def keypoint_distance(landmarks_a: np.ndarray, landmarks_b: np.ndarray, size: int) -> float:
    """Mean Euclidean distance [px at 512] between matching landmarks [L,2] of two images of side ``size``."""
    return float(np.linalg.norm(landmarks_a - landmarks_b, axis=-1).mean() * 512.0 / size)


def _face_recognition_model_dir() -> Path:
    """Folder of the dlib model files shipped by ``face-recognition-models``.

    Located by path: that package's ``__init__`` imports ``pkg_resources``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("CSIM needs face-recognition-models, which is not installed: pip install 'gagavatar[eval]'")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class IdentityEncoder:
    """dlib's 128-d face descriptor; CSIM = cosine similarity of two descriptors.

    Faces are found with dlib's HOG detector; our frames are head crops, so when
    it finds none the central face region of the crop (the middle 60 %) is used.
    """

    def __init__(self):
        dlib = require("dlib", "eval", "CSIM (the identity metric)")
        models = _face_recognition_model_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._dlib = dlib

    def descriptor(self, image: np.ndarray) -> np.ndarray:
        """[128] descriptor of the largest face in an RGB uint8 image [H,W,3]."""
        image = np.ascontiguousarray(image)
        faces = self.detector(image, 1)
        if len(faces):
            box = max(faces, key=lambda r: r.width() * r.height())
        else:
            h, w = image.shape[:2]
            box = self._dlib.rectangle(int(0.2 * w), int(0.2 * h), int(0.8 * w), int(0.8 * h))
        chip = self._dlib.get_face_chip(image, self.shape(image, box), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip))

    def similarity(self, image_a: np.ndarray, image_b: np.ndarray) -> float:
        a, b = self.descriptor(image_a), self.descriptor(image_b)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


@lru_cache(maxsize=1)
def identity_encoder() -> IdentityEncoder:
    return IdentityEncoder()
