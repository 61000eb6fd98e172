"""``gagavatar doctor``: what this install can do, and why not where it cannot.

Every check gives one line: a name, a status and the reason. Statuses:

    OK       works
    missing  an optional part is absent (gsplat, a CUDA device); everything else works
    warning  works, but not as you may expect (FLAME other than 2020, a modified release)
    error    will fail: a required part of the install is broken, or a file you named
             is missing, unreadable, truncated or not what its option needs
    info     a fact worth knowing

Files are recognised by what they hold, and published files also by their size
and SHA-256 (``gagavatar.known_files.KNOWN_FILES``, the one table of them).
A file is hashed only when its size is the published one.

    checks = run(checkpoint="GAGAvatar.pt")
    print("\\n".join(format_line(c) for c in checks)); exit(exit_code(checks))
"""
from __future__ import annotations

import importlib.util
import zipfile
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from gagavatar.io.files import describe_content
from gagavatar.known_files import KNOWN_FILES, compare_known

log = logging.getLogger(__name__)

OK, MISSING, WARNING, ERROR, INFO = "OK", "missing", "warning", "error", "info"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # OK, MISSING, WARNING, ERROR or INFO
    detail: str


# The graphs and models the tracker opens inside the mediapipe 0.10.14 wheel (traced with
# strace): landmarks.LandmarkDetector runs both face detectors and the face mesh with iris
# refinement (its own detector is the short-range one); matting.Segmenter runs the
# "general" selfie-segmentation model.
MEDIAPIPE_VERSION = "0.10.14"
MEDIAPIPE_MODELS = {
    "face detection": ("modules/face_detection/face_detection_short_range_cpu.binarypb",
                       "modules/face_detection/face_detection_short_range.tflite",
                       "modules/face_detection/face_detection_full_range_cpu.binarypb",
                       "modules/face_detection/face_detection_full_range_sparse.tflite"),
    "face mesh": ("modules/face_landmark/face_landmark_front_cpu.binarypb",
                  "modules/face_landmark/face_landmark_with_attention.tflite"),
    "selfie segmentation": ("modules/selfie_segmentation/selfie_segmentation_cpu.binarypb",
                            "modules/selfie_segmentation/selfie_segmentation.tflite"),
}

FLAME_LAYOUT = {"vertices": 5023, "faces": 9976, "joints": 5, "shape": 300, "expression": 100}
# A MediaPipe embedding fits MediaPipe's canonical face (after the best rotation, scale and
# shift) to this fraction of the face's size: the bundled synthetic head fits to 0.03, an
# embedding on the wrong mesh or with shuffled indices to about 1.
MAX_CANONICAL_RESIDUAL = 0.2
MIN_FRONT_FRACTION = 0.8  # landmarks of other formats in front of the head's middle (face looks +z)


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None."""
    if not path.exists():
        return "not found"
    if path.is_dir():
        return "a folder, not a file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def _reason(error: Exception, path: Path | str | None = None) -> str:
    """An exception's message as one short line (without a leading "<path>: ")."""
    text = " ".join(str(error).split("\n")[0].split()) or type(error).__name__
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(f"{path}: "):]
    return text if len(text) <= 240 else text[:237] + "..."


# --------------------------------------------------------------------------- checkpoints
def _release_names(names) -> tuple[int, int, bool]:
    """(how many of ``names`` are the release's tensor names, how many the release has,
    whether all of its network tensors are there)."""
    from gagavatar.perceptual import PERCEPTUAL_PREFIX
    from gagavatar.model.reference_weights import official_listing

    listing = [n for n, _ in official_listing()]
    network = {n for n in listing if not n.startswith(PERCEPTUAL_PREFIX)}
    names = set(names)
    return len(names & set(listing)), len(listing), network <= names


def _describe_tensors(names, container: str) -> tuple[str, bool]:
    found, total, complete = _release_names(names)
    if complete:
        return (f"{container} with the GAGAvatar network's tensors ({found} of the release's {total} names; "
                "load_official reads it)"), True
    return f"{container} with {len(names)} tensors ({found} named as the release's): not GAGAvatar's network", False


def describe_checkpoint(path: str | Path) -> tuple[str, bool]:
    """(what the file is, whether the loaders can use it as a checkpoint). Reads only headers
    and metadata (torch files are memory-mapped, not read)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta, names = f.metadata() or {}, list(f.keys())
        except Exception as e:  # noqa: BLE001 - reported as the reason
            return f"a damaged safetensors file ({e})", False
        from gagavatar.model.checkpoint import FORMAT
        from gagavatar.model.config import ModelConfig

        if meta.get("format") == FORMAT:
            config = ModelConfig.from_json(meta["config"])
            text = (f"a gagavatar checkpoint, preset '{config.name}' ({config.render_size} px render, "
                    f"{config.n_vertices:,}-vertex head)")
            if config.name == "paper":
                text += (": the released network's size (its weights converted by `gagavatar convert-official`, "
                         "or trained here)")
            return text, True
        return _describe_tensors(names, "a safetensors file")
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
        if not any(m.endswith("data.pkl") for m in members):
            if any(m.endswith(".npy") for m in members):
                return "a numpy .npz archive, not a checkpoint", False
            return "a zip archive, not a checkpoint", False
        return _describe_torch(path, mmap=True)
    if head[:1] == b"\x80":  # a pickle: a legacy torch.save file, or e.g. a FLAME .pkl
        return _describe_torch(path, mmap=False)
    return f"not a checkpoint: {describe_content(head)}", False


def _describe_torch(path: Path, mmap: bool) -> tuple[str, bool]:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:  # noqa: BLE001 - anything torch refuses is "not loadable"
        kind = "a torch file" if mmap else "a Python pickle (a FLAME .pkl or an old torch file?)"
        return f"{kind} that torch.load(weights_only=True) refuses: not a checkpoint read here", False
    if isinstance(obj, dict) and "flame_model" in obj:
        return ("a head model (the reference's FLAME_with_eye.pt layout), not a checkpoint: "
                "pass it as --head-model"), False
    tensors = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if isinstance(tensors, dict) and tensors and all(isinstance(v, torch.Tensor) for v in tensors.values()):
        return _describe_tensors(list(tensors), "a torch checkpoint")
    return f"a torch file holding a {type(obj).__name__}, not a checkpoint", False


def _known_file_check(name: str, path: Path, known) -> tuple[str | None, Check | None]:
    """(how ``path`` compares to the published file ``known``, the check when that settles it:
    unreadable, the release itself, or a truncated download; else None)."""
    problem = _unreadable(path)
    if problem:
        return None, Check(name, ERROR, f"{path}: {problem}")
    size = path.stat().st_size
    kind = compare_known(path, known)
    if kind == "match":
        return kind, Check(name, OK, f"{path}: {known.label} ({known.filename}, {size:,} bytes, SHA-256 matches)")
    if kind == "truncated":
        return kind, Check(name, ERROR, f"{path}: a truncated download ({size:,} of {known.size:,} bytes): "
                                        f"download {known.filename} again")
    return kind, None


def checkpoint_check(path: str | Path) -> Check:
    """What the --checkpoint file is: the release, a truncated download, or a different file (and which)."""
    path = Path(path)
    known = KNOWN_FILES["checkpoint"]
    kind, found = _known_file_check("checkpoint", path, known)
    if found is not None:
        return found
    what, usable = describe_checkpoint(path)
    if usable:  # the weights themselves: NaN or Inf (a diverged run) renders black frames
        from gagavatar.errors import NonFiniteError
        from gagavatar.io import read_tensor_file

        try:
            read_tensor_file(path)
        except NonFiniteError as e:
            return Check("checkpoint", ERROR, f"{path}: {what}, but {_reason(e, path)}")
    if kind == "differs":
        return Check("checkpoint", WARNING if usable else ERROR,
                     f"{path}: a different file: the size of {known.filename} but another SHA-256 "
                     f"(a corrupted download or a modified copy?); {what}")
    return Check("checkpoint", OK if usable else ERROR, f"{path}: a different file: {what}")


def speech_model_check(path: str | Path) -> Check:
    """What the --speech-model file is: ARTalk's release, a truncated download, or another file
    (one that fits the speech model, or what does not fit)."""
    from gagavatar.speech.weights import load_speech_model

    path = Path(path)
    known = KNOWN_FILES["speech_model"]
    kind, found = _known_file_check("speech model", path, known)
    if found is not None:
        return found
    try:
        load_speech_model(path)
    except (ValueError, OSError) as e:
        return Check("speech model", ERROR, f"{path}: not a speech model this project runs: {_reason(e, path)}")
    if kind == "differs":
        return Check("speech model", WARNING, f"{path}: the size of {known.filename} but another SHA-256 (a "
                                              f"corrupted download or a modified copy?); its tensors fit the model")
    return Check("speech model", OK, f"{path}: a different file whose tensors fit ARTalk's speech model")


# --------------------------------------------------------------------------- head models
def describe_head(arrays: dict) -> tuple[str, str]:
    """(status, what the head model is) from ``flame_io.read_head_file``'s arrays."""
    V, F = arrays["v_template"].shape[0], arrays["f"].shape[0]
    J, K, S = arrays["kintree_table"].shape[1], arrays["shapedirs"].shape[2], int(arrays["n_shape_basis"])
    layout = f"{V:,} vertices, {F:,} faces, {S} shape + {K - S} expression columns, {J} joints"
    version = str(arrays.get("version", "unknown"))
    flame_mesh = (V, F, J) == (FLAME_LAYOUT["vertices"], FLAME_LAYOUT["faces"], FLAME_LAYOUT["joints"])
    if flame_mesh and (S, K - S) == (FLAME_LAYOUT["shape"], FLAME_LAYOUT["expression"]):
        # FLAME 2017, 2019, 2020 and 2023 share this layout: only the file name tells them apart
        if version == "2020":
            return OK, (f"FLAME ({layout}), FLAME 2020 by its name: what the released weights expect "
                        "(the releases share one layout, so the name is the only sign)")
        if version == "2023":
            return WARNING, (f"FLAME ({layout}), FLAME 2023 by its name: the released weights expect FLAME 2020 "
                             "(generic_model.pkl); use 2023 only with a model trained on it")
        return WARNING, (f"FLAME ({layout}), release not told by its name: the released weights expect "
                         "FLAME 2020 (generic_model.pkl)")
    if version.startswith("synthetic"):
        return OK, (f"this project's synthetic head ({layout}, {version}): not FLAME; the bundled tiny model's "
                    "head (the released weights need FLAME 2020)")
    if flame_mesh:
        return WARNING, (f"FLAME's mesh with other blend shapes ({layout}; FLAME releases have "
                         f"{FLAME_LAYOUT['shape']} + {FLAME_LAYOUT['expression']}): "
                         "the released weights need FLAME 2020")
    return WARNING, f"a FLAME-format model of another mesh ({layout}): the released weights need FLAME 2020"


def landmark_points(arrays: dict, embedding: dict) -> np.ndarray:
    """[L, 3] landmark positions on the template mesh (barycentric in the named faces)."""
    v = np.asarray(arrays["v_template"], np.float64)
    corners = v[np.asarray(arrays["f"])[embedding["face_idx"]]]  # [L, 3, 3]
    return np.einsum("lk,lkc->lc", embedding["bary"], corners)


def similarity_residual(points: np.ndarray, target: np.ndarray) -> float:
    """RMS distance of ``points`` [N,3] to ``target`` [N,3] after the best rotation, scale
    and shift (no mirroring), as a fraction of the target's RMS radius."""
    a, b = points - points.mean(0), target - target.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    if np.linalg.det(u @ vt) < 0:  # the best proper rotation, not a reflection
        u[:, -1] *= -1
        s[-1] *= -1
    scale = s.sum() / max((a ** 2).sum(), 1e-30)
    residual = b - scale * a @ (u @ vt)
    return float(np.sqrt((residual ** 2).sum(1).mean() / max((b ** 2).sum(1).mean(), 1e-30)))


def embedding_check(arrays: dict, embedding: dict, source: str) -> Check:
    """Does the landmark embedding fit the mesh (its faces exist) and land on the face?"""
    face_idx, bary = embedding["face_idx"], embedding["bary"]
    n_faces, fmt = arrays["f"].shape[0], str(embedding.get("format", "custom"))
    what = f"{source}: {len(face_idx)} {fmt} points"
    if len(face_idx) == 0:
        return Check("landmark embedding", ERROR, f"{what}: empty")
    if face_idx.min() < 0 or face_idx.max() >= n_faces:
        return Check("landmark embedding", ERROR, f"{what} name faces up to {int(face_idx.max()):,} but the mesh has "
                                                  f"{n_faces:,}: the embedding belongs to another mesh")
    if bary.min() < -1e-3 or np.abs(bary.sum(1) - 1).max() > 1e-3:
        return Check("landmark embedding", ERROR, f"{what}: the barycentric coordinates are not weights "
                                                  "(each row must be >= 0 and sum to 1)")
    points = landmark_points(arrays, embedding)
    if fmt.startswith("mediapipe"):
        from gagavatar.tracking.landmarks import canonical_face

        canonical, _ = canonical_face()
        ids = np.asarray(embedding["indices"])
        keep = (ids >= 0) & (ids < len(canonical))  # the 10 iris points are not in the canonical face
        if keep.sum() < 4:
            return Check("landmark embedding", WARNING, f"{what}: too few face-mesh points to check where they land")
        residual = similarity_residual(points[keep], canonical[ids[keep]])
        if residual > MAX_CANONICAL_RESIDUAL:
            return Check("landmark embedding", ERROR,
                         f"{what} do not land on the face: aligned as well as they can be, they lie {residual:.0%} "
                         "of the face's size from MediaPipe's canonical face (wrong mesh or indices?)")
        return Check("landmark embedding", OK, f"{what}, fit the mesh and land on the face ({residual:.0%} of the "
                                               "face's size from MediaPipe's canonical face)")
    z = np.asarray(arrays["v_template"], np.float64)[:, 2]
    front = float((points[:, 2] > (z.min() + z.max()) / 2).mean())
    if front < MIN_FRONT_FRACTION:
        return Check("landmark embedding", ERROR, f"{what} do not land on the face: only {front:.0%} are on the "
                                                  "front half of the head")
    return Check("landmark embedding", WARNING, f"{what}, fit the mesh and land on the face, but the tracker fits "
                                                "MediaPipe landmarks: pass FLAME's mediapipe_landmark_embedding.npz")


def head_model_checks(path: str | Path | None, landmark_embedding: str | Path | None = None) -> list[Check]:
    """What the --head-model file is (FLAME version, layout) and whether its embedding
    (the one given, else its own) fits it."""
    from gagavatar.errors import NonFiniteError
    from gagavatar.head import flame_io

    errors = (flame_io.HeadFileError, flame_io.RefusedGlobalError, OSError, ValueError, KeyError)
    if path is None:
        checks = [Check("head model", OK, "default: the bundled synthetic head (not FLAME; the tiny model's head; "
                                          "the released weights need FLAME 2020: --head-model generic_model.pkl)")]
        if landmark_embedding is not None:
            checks.append(_embedding_alone(landmark_embedding, errors, "it belongs to --head-model (give both to check "
                                                                       "them together)"))
        return checks
    path = Path(path)

    def failed(detail: str) -> list[Check]:  # the head model is unusable; the embedding is read alone
        checks = [Check("head model", ERROR, f"{path}: {detail}")]
        if landmark_embedding is not None:
            checks.append(_embedding_alone(landmark_embedding, errors, "not checked against the head model"))
        return checks

    problem = _unreadable(path)
    if problem:
        return failed(problem)
    known = KNOWN_FILES["flame_with_eye"]
    kind = compare_known(path, known)
    if kind == "truncated":
        return failed(f"a truncated download ({path.stat().st_size:,} of {known.size:,} bytes, the size of "
                      f"{known.filename}): download it again")
    try:
        arrays = flame_io.read_head_file(path)
    except NonFiniteError as e:
        return failed(_reason(e, path))
    except errors as e:
        with open(path, "rb") as f:
            looks = describe_content(f.read(4096))
        return failed("not a head model: " + (_reason(e, path) if looks in (
            "a Python pickle", "a zip archive", "unrecognised binary data") else looks))
    status, what = describe_head(arrays)
    if kind == "match":
        what = f"{known.label} (SHA-256 matches): {what}"
    elif kind == "differs":
        what += f"; the size of {known.filename} but another SHA-256"
    checks = [Check("head model", status, f"{path}: {what}")]
    if landmark_embedding is not None:
        try:
            embedding = flame_io.read_landmark_embedding(landmark_embedding)
        except errors as e:
            why = _reason(e, landmark_embedding)
            return checks + [Check("landmark embedding", ERROR, f"{landmark_embedding}: {why}")]
        checks.append(embedding_check(arrays, embedding, str(landmark_embedding)))
    elif arrays.get("landmarks") is not None:
        own = embedding_check(arrays, arrays["landmarks"], "its own embedding")
        if own.status == ERROR:  # the file still serves as a head model; --landmark-embedding can replace it
            own.status = WARNING
        checks.append(own)
    else:
        checks.append(Check("landmark embedding", WARNING, "none in the head model: tracking needs "
                                                           "--landmark-embedding mediapipe_landmark_embedding.npz"))
    return checks


def _embedding_alone(path, errors, note: str) -> Check:
    from gagavatar.head import flame_io

    try:
        embedding = flame_io.read_landmark_embedding(path)
    except errors as e:
        return Check("landmark embedding", ERROR, f"{path}: {_reason(e, path)}")
    n, fmt = len(embedding["face_idx"]), embedding["format"]
    return Check("landmark embedding", INFO, f"{path}: {n} {fmt} points; {note}")


# --------------------------------------------------------------------------- the install
def torch_checks() -> list[Check]:
    import torch

    checks = [Check("torch", OK, f"{torch.__version__}")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        checks.append(Check("device", OK, f"CUDA {torch.version.cuda}: {names}"))
    else:
        from gagavatar.system import usable_cores

        checks.append(Check("device", INFO, f"CPU only, torch on {torch.get_num_threads()} of {usable_cores()} cores "
                                            f"(OMP_NUM_THREADS=N to change; no CUDA device): everything runs, "
                                            f"large models slowly"))
    return checks


def _tiny_scene(device) -> dict:
    """rasterize() arguments for 16 Gaussians in front of a 32x32 camera."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = 16
    means = torch.rand(1, n, 3, generator=g) * 0.4 - 0.2
    means[..., 2] += 2.0
    scene = dict(means=means, quats=torch.randn(1, n, 4, generator=g), scales=torch.full((1, n, 3), 0.05),
                 opacities=torch.full((1, n), 0.8), features=torch.rand(1, n, 3, generator=g),
                 viewmats=torch.eye(4)[None], Ks=torch.tensor([[[64.0, 0, 16], [0, 64.0, 16], [0, 0, 1]]]))
    return {k: v.to(device) for k, v in scene.items()} | {"width": 32, "height": 32}


def gsplat_check() -> Check:
    """Is gsplat installed, and does it render (a tiny scene, compared with the torch renderer)?"""
    import torch

    if importlib.util.find_spec("gsplat") is None:
        return Check("gsplat", MISSING, "not installed (optional, CUDA only: pip install 'gagavatar[gpu]'); "
                                        "the torch renderer is used")
    try:
        version = metadata.version("gsplat")
    except metadata.PackageNotFoundError:
        version = "?"
    if not torch.cuda.is_available():
        return Check("gsplat", MISSING, f"{version} installed, but there is no CUDA device: the torch renderer is used")
    from gagavatar.render.rasterize import rasterize

    scene = _tiny_scene("cuda")
    try:  # the first call may compile gsplat's CUDA kernels (minutes)
        fast = rasterize(**scene, backend="gsplat")
    except Exception as e:  # noqa: BLE001 - reported: backend="auto" would hit the same error
        return Check("gsplat", ERROR, f"{version} installed but fails on CUDA ({type(e).__name__}: {e}); "
                                      "reinstall it for this torch/CUDA, or pip uninstall gsplat")
    reference = rasterize(**scene, backend="torch")
    diff = float((fast.image - reference.image).abs().max())
    if not float(reference.alpha.sum()) > 0 or diff > 1e-3:
        return Check("gsplat", WARNING, f"{version} renders, but differs from the torch renderer by {diff:.2g}")
    return Check("gsplat", OK, f"{version} renders on CUDA (agrees with the torch renderer to {diff:.1g})")


def mediapipe_checks() -> list[Check]:
    """mediapipe's version, its import, and the model files the tracker uses."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return [Check("mediapipe", ERROR, f"not installed: the tracker needs it (pip install --no-deps "
                                          f"mediapipe=={MEDIAPIPE_VERSION}; make install does this)")]
    version = metadata.version("mediapipe")
    try:
        from gagavatar.tracking.landmarks import _import_mediapipe

        _import_mediapipe()
        status, detail = OK, version
    except Exception as e:  # noqa: BLE001 - reported as the reason
        status, detail = ERROR, f"{version} does not import ({type(e).__name__}: {e})"
    if status == OK and version != MEDIAPIPE_VERSION:
        status, detail = WARNING, (f"{version}: the tracker is built for {MEDIAPIPE_VERSION}, the last release that "
                                   "ships the face-mesh models it uses")
    checks = [Check("mediapipe", status, detail)]
    root = Path(list(spec.submodule_search_locations)[0])
    for name, files in MEDIAPIPE_MODELS.items():
        absent = [f for f in files if not (root / f).is_file() or (root / f).stat().st_size == 0]
        if absent:
            checks.append(Check(name, ERROR, f"missing from the mediapipe wheel: {', '.join(absent)}"))
        else:
            sizes = sum((root / f).stat().st_size for f in files)
            checks.append(Check(name, OK, f"{len(files)} model/graph files in the wheel ({sizes / 1e6:.1f} MB)"))
    return checks


def default_checkpoint_checks() -> list[Check]:
    from gagavatar.reenact import BUNDLED_MODEL_NOTE, DEFAULT_CHECKPOINT, bundled

    path = bundled(DEFAULT_CHECKPOINT)
    if not path.is_file():
        return [Check("checkpoint", ERROR, f"default: the bundled tiny model is missing from this install ({path}); "
                                           "reinstall gagavatar")]
    what, usable = describe_checkpoint(path)
    return [Check("checkpoint", OK if usable else ERROR, f"default: the bundled tiny model ({path}): {what}"),
            Check("tiny model", INFO, BUNDLED_MODEL_NOTE)]


# optional parts: extra -> (the module it brings, what needs it)
EXTRAS = {"app": ("gradio", "the web app"), "serve": ("uvicorn", "the live service"),
          "eval": ("dlib", "evaluation's CSIM"), "reference": ("lmdb", "GAGAvatar_track folders")}


def extras_checks() -> list[Check]:
    """Which optional parts are installed (``pip install 'gagavatar[EXTRA]'``)."""
    return [Check(f"[{extra}]", OK if importlib.util.find_spec(module) else MISSING,
                  what + ("" if importlib.util.find_spec(module) else f": pip install 'gagavatar[{extra}]'"))
            for extra, (module, what) in EXTRAS.items()]


def run(checkpoint: str | Path | None = None, head_model: str | Path | None = None,
        landmark_embedding: str | Path | None = None, speech_model: str | Path | None = None) -> list[Check]:
    """Every check, in report order."""
    checks = torch_checks() + [gsplat_check()] + mediapipe_checks() + extras_checks()
    checks += default_checkpoint_checks() if checkpoint is None else [checkpoint_check(checkpoint)]
    checks += head_model_checks(head_model, landmark_embedding)
    if speech_model is not None:
        checks.append(speech_model_check(speech_model))
    return checks


def exit_code(checks: list[Check]) -> int:
    """0 when nothing is an error (optional parts may be missing), else 1."""
    return 1 if any(c.status == ERROR for c in checks) else 0


STATUS_COLORS = {OK: "green", MISSING: "yellow", WARNING: "yellow", ERROR: "red", INFO: "cyan"}


def format_line(check: Check, color: bool = False) -> str:
    """``name  status  detail`` in aligned columns (one line per check)."""
    status = f"{check.status:<8}"
    if color:
        import typer

        status = typer.style(status, fg=STATUS_COLORS.get(check.status))
    return f"{check.name:<20} {status} {check.detail}"
