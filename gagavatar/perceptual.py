"""Perceptual networks: the reference's face perceptual loss, and LPIPS(alex).

Both are built from frozen convolution stacks whose weights the user already has:
the released GAGAvatar.pt carries VGG-Face and torchvision's ImageNet AlexNet
conv layers as ``percep_loss.vggface.network.*`` and ``percep_loss.net.slice*``
(SPEC §6); LPIPS v0.1 adds five 1x1 linear heads that the ``lpips`` wheel ships
as ``lpips/weights/v0.1/alex.pth``. Nothing is downloaded; a missing file is an
error that says where to get it.

Loss (SPEC §7.11), for images in [0, 1]:
    P(x, y) = sum_l w_l * mean_px sum_c |n(A_l(x)) - n(A_l(y))|            (AlexNet, ImageNet-normalised input)
            + 0.5 * sum_l w_l * mean_px sum_c |n(V_l(x)) - n(V_l(y))|      (VGG-Face relu1_1 .. relu5_1)
with n() the per-pixel unit normalisation over channels and w = (0.1, 0.1, 1, 1, 1).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from gagavatar.io import read_tensor_file
from gagavatar.io.images import IMAGENET_MEAN, IMAGENET_STD

VGGFACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)  # RGB, 0..255 scale
LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS input scaling, for input in [-1, 1]
LPIPS_SCALE = (0.458, 0.448, 0.450)
PERCEPTUAL_PREFIX = "percep_loss."
WHERE_TO_GET = ("The perceptual networks ship inside the released GAGAvatar.pt (see README, "
                "'Pretrained weights'); pass its path, or a .safetensors made by "
                "`gagavatar convert-official`.")


def unit_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide [B,C,H,W] features by their L2 norm over channels, per pixel."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet conv trunk, split after each ReLU (LPIPS's slicing).

    Parameter names ``slice{k}.{i}`` match ``percep_loss.net.*`` of GAGAvatar.pt.
    Input: ImageNet-normalised (loss) or LPIPS-scaled images [B,3,H,W].
    Output: five feature maps with 64, 192, 384, 256, 256 channels.
    """

    channels = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=False)  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2)  # noqa: E731
        # the layer indices inside each slice are those of torchvision's `features`
        self.slice1 = nn.Sequential()
        self.slice1.add_module("0", nn.Conv2d(3, 64, 11, stride=4, padding=2))
        self.slice1.add_module("1", relu())
        self.slice2 = nn.Sequential()
        self.slice2.add_module("2", pool())
        self.slice2.add_module("3", nn.Conv2d(64, 192, 5, padding=2))
        self.slice2.add_module("4", relu())
        self.slice3 = nn.Sequential()
        self.slice3.add_module("5", pool())
        self.slice3.add_module("6", nn.Conv2d(192, 384, 3, padding=1))
        self.slice3.add_module("7", relu())
        self.slice4 = nn.Sequential()
        self.slice4.add_module("8", nn.Conv2d(384, 256, 3, padding=1))
        self.slice4.add_module("9", relu())
        self.slice5 = nn.Sequential()
        self.slice5.add_module("10", nn.Conv2d(256, 256, 3, padding=1))
        self.slice5.add_module("11", relu())

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for block in (self.slice1, self.slice2, self.slice3, self.slice4, self.slice5):
            x = block(x)
            feats.append(x)
        return feats


class VGGFaceFeatures(nn.Module):
    """VGG-16 conv trunk with VGG-Face weights; returns relu1_1 .. relu5_1.

    ``network.{i}`` are torchvision's vgg16 ``features`` indices, matching
    ``percep_loss.vggface.network.*``. The two convs after relu5_1 are kept so
    the released tensors load one to one, but never run. Input: images in
    [0, 1], [B,3,H,W]; the VGG-Face normalisation is applied here.
    """

    taps = (1, 6, 11, 18, 25)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
    _cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

    def __init__(self):
        super().__init__()
        layers, c_in = [], 3
        for v in self._cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = v
        self.network = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = x * 255.0 - self.mean
        feats = []
        for i, layer in enumerate(self.network[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return feats


class FacePerceptualLoss(nn.Module):
    """The reference's perceptual loss on face crops (AlexNet + 0.5 x VGG-Face)."""

    layer_weights = (0.1, 0.1, 1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        self.vggface = VGGFaceFeatures()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "FacePerceptualLoss":
        """From ``percep_loss.*`` tensors (prefix optional); every tensor must be present."""
        state = {k.removeprefix(PERCEPTUAL_PREFIX): v for k, v in state.items()}
        loss = cls()
        missing, unexpected = loss.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"perceptual weights do not match: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}. {WHERE_TO_GET}")
        return loss

    def features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """AlexNet and VGG-Face features of images x [B,3,H,W] in [0, 1]."""
        return self.net((x - self.mean) / self.std), self.vggface(x)

    def distance(self, fx: tuple[list[Tensor], list[Tensor]], fy: tuple[list[Tensor], list[Tensor]]) -> Tensor:
        """Scalar loss between two images' ``features``."""
        (alex_x, vgg_x), (alex_y, vgg_y) = fx, fy
        total = alex_x[0].new_zeros(())
        for w, ax, ay, vx, vy in zip(self.layer_weights, alex_x, alex_y, vgg_x, vgg_y):
            total = total + w * (unit_normalize(ax) - unit_normalize(ay)).abs().sum(1).mean()
            total = total + 0.5 * w * (unit_normalize(vx) - unit_normalize(vy)).abs().sum(1).mean()
        return total

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Scalar loss between images x, y [B,3,H,W] in [0, 1] (gradients flow to both)."""
        return self.distance(self.features(x), self.features(y))


class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk: per-image distance [B] for images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.net = AlexNetFeatures()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in AlexNetFeatures.channels)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_weights(cls, alexnet_state: dict[str, Tensor], linear_heads: dict[str, Tensor]) -> "LPIPS":
        """AlexNet from the ``[percep_loss.]net.*`` tensors (others ignored); heads from
        lpips' ``alex.pth`` (``lin{k}.model.1.weight``)."""
        model = cls()
        alex = {}
        for key, value in alexnet_state.items():
            key = key.removeprefix(PERCEPTUAL_PREFIX)
            if key.startswith("net."):
                alex[key.removeprefix("net.")] = value
        model.net.load_state_dict(alex)
        for k, lin in enumerate(model.lins):
            key = f"lin{k}.model.1.weight"
            if key not in linear_heads:
                raise ValueError(f"LPIPS linear head {key!r} missing from the given alex.pth")
            lin.weight.data.copy_(linear_heads[key])
        return model

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx = self.net(((2 * x - 1) - self.shift) / self.scale)
        fy = self.net(((2 * y - 1) - self.shift) / self.scale)
        dist = 0
        for lin, a, b in zip(self.lins, fx, fy):
            dist = dist + lin((unit_normalize(a) - unit_normalize(b)).square()).mean(dim=(1, 2, 3))
        return dist


def load_perceptual_state(path: str | Path) -> dict[str, Tensor]:
    """The ``percep_loss.*`` tensors from GAGAvatar.pt or a converted .safetensors.

    Raises FileNotFoundError / ValueError naming the file and where to get it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual weights not found at {path}. {WHERE_TO_GET}")

    state = read_tensor_file(path)
    found = {k: v for k, v in state.items() if k.startswith(PERCEPTUAL_PREFIX)}
    if not found:
        raise ValueError(f"{path} holds no '{PERCEPTUAL_PREFIX}*' tensors. {WHERE_TO_GET}")
    return found


def find_lpips_linear_heads(path: str | Path | None = None) -> Path | None:
    """Path of LPIPS v0.1 ``alex.pth``: the given one, or the installed ``lpips`` wheel's.

    The ``lpips`` package imports torchvision, so it is located, never imported
    (``pip install --no-deps lpips`` provides the file).
    """
    if path is not None:
        return Path(path) if Path(path).is_file() else None
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return candidate if candidate.is_file() else None


def load_lpips(perceptual: str | Path | dict, linear_heads: str | Path | None = None) -> LPIPS:
    """LPIPS(alex) from GAGAvatar.pt (or its ``percep_loss`` tensors) and lpips' alex.pth."""
    state = perceptual if isinstance(perceptual, dict) else load_perceptual_state(perceptual)
    heads_path = find_lpips_linear_heads(linear_heads)
    if heads_path is None:
        raise FileNotFoundError("LPIPS v0.1 linear heads (alex.pth) not found: `pip install --no-deps "
                                "lpips` provides lpips/weights/v0.1/alex.pth, or pass its path.")
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    return LPIPS.from_weights(state, heads)
