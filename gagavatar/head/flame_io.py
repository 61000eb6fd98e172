"""Reading FLAME-format head model files safely.

Supported files (all give the same dictionary of numpy arrays):

- FLAME 2020 ``generic_model.pkl``, FLAME 2023 / 2023 Open ``.pkl``: Python 2
  pickles whose ``shapedirs`` is a chumpy ``Ch`` object and whose
  ``J_regressor`` is a scipy sparse matrix. They are read WITHOUT chumpy by a
  restricted unpickler that admits only numpy array reconstruction, sparse
  matrices (rebuilt from their arrays) and a stand-in for chumpy objects that
  keeps their array ``x``; any other global (for example ``os.system``) is
  refused, so a file cannot run code.
- ``.npz``: the same keys as FLAME's pickle (this project's own layout adds a
  few optional keys, see ``save_head_npz``).
- ``.pt``: the reference's ``FLAME_with_eye.pt`` (``{'flame_model': {...},
  'lmk_embeddings': {...}}``), read with ``torch.load(weights_only=True)``.

``read_head_file(path)`` returns::

    v_template   [V,3]      shapedirs  [V,3,K]   (K = shape + expression columns)
    posedirs     [V,3,P]    (P = 9 x (J-1), FLAME's pickle layout)
    J_regressor  [J,V] dense             kintree_table [2,J]
    weights      [V,J]      f [F,3]
    n_shape_basis            how many of the K columns are shape (300 for FLAME)
    version                  '2020', '2023' or 'unknown' (from the file name)
    landmarks                optional embedding dict (see ``read_landmark_embedding``)

Landmark embeddings (``read_landmark_embedding``) come from FLAME's
``mediapipe_landmark_embedding.npz`` (keys ``lmk_face_idx``, ``lmk_b_coords``,
``landmark_indices``), the 68-point ``landmark_embedding.npy`` of DECA / EMOCA
(a pickled dict with ``full_lmk_faces_idx`` / ``full_lmk_bary_coords``),
FLAME's ``flame_static_embedding.pkl`` (51 inner points), the reference's
``lmk_embeddings`` inside ``FLAME_with_eye.pt``, and this project's own npz
(the mediapipe keys plus ``landmark_format``).
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from gagavatar.errors import InputError
from gagavatar.io.tensors import check_finite

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
FLAME_SHAPE_COLUMNS = 300  # FLAME's 400 blend-shape columns: 300 shape, then 100 expression

OBTAIN_HINT = ("FLAME cannot be redistributed: register at https://flame.is.tue.mpg.de, download "
               "FLAME 2020 (generic_model.pkl) and pass its path; see docs/head-model.md. "
               "Without FLAME, HeadModel.default() gives the bundled synthetic head.")


class HeadFileError(InputError):
    """A head-model or landmark file that exists but cannot be used (wrong, truncated, corrupt)."""


class RefusedGlobalError(HeadFileError, pickle.UnpicklingError):
    """A pickle asked for a Python object that a FLAME file never needs (possible code execution).
    A ``ValueError`` too, so commands report it as one line."""


def _refused(path: Path, err: RefusedGlobalError) -> RefusedGlobalError:
    return RefusedGlobalError(f"{path} holds code ({err}) and was not run; a head-model file holds only "
                              "numpy arrays, sparse matrices and chumpy arrays")


# ---------------------------------------------------------------------------
# restricted unpickler


class ChumpyArray:
    """Stand-in for chumpy objects (``chumpy.ch.Ch`` and friends): keeps only the array ``x``.

    A chumpy expression that stores no ``x`` (e.g. a lazy product) becomes None;
    FLAME's arrays are all plain ``Ch`` values.
    """

    def __init__(self, x=None):
        self.x = None if x is None else np.asarray(x)

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots) form
            state = state[0]
        x = state.get("x") if isinstance(state, dict) else None
        self.x = None if x is None else np.asarray(x)

    def __array__(self, dtype=None, copy=None):
        return self.x if dtype is None else self.x.astype(dtype)


class SparseMatrixState:
    """Stand-in for a pickled scipy.sparse matrix: keeps its arrays, builds it on demand.

    Rebuilding from plain arrays (instead of running scipy's own unpickling)
    works across scipy versions and runs no code named by the file.
    """

    format = "csc"

    def __setstate__(self, state):
        if isinstance(state, tuple):
            state = state[0]
        if not isinstance(state, dict):
            raise HeadFileError("a sparse matrix in the file has an unexpected state")
        self.state = state

    def toarray(self) -> np.ndarray:
        import scipy.sparse as sp

        s = self.state
        shape = tuple(int(n) for n in s.get("_shape", s.get("shape")))
        if self.format in ("csc", "csr"):
            build = sp.csc_matrix if self.format == "csc" else sp.csr_matrix
            m = build((np.asarray(s["data"]), np.asarray(s["indices"]), np.asarray(s["indptr"])), shape=shape)
        else:  # coo: old scipy stores row/col, new scipy stores coords
            row, col = (s["coords"] if "coords" in s else (s["row"], s["col"]))
            m = sp.coo_matrix((np.asarray(s["data"]), (np.asarray(row), np.asarray(col))), shape=shape)
        return np.asarray(m.toarray())


def _sparse_class(fmt: str):
    return type(f"Sparse{fmt.upper()}State", (SparseMatrixState,), {"format": fmt})


_SPARSE = {fmt: _sparse_class(fmt) for fmt in ("csc", "csr", "coo")}
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array reconstruction function
_SCALAR = np.float64(0).__reduce__()[0]  # numpy's scalar reconstruction function
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 arrays


def _bytes_from_latin1(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: str -> bytes only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise RefusedGlobalError("_codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _admitted_classes():  # what copy_reg._reconstructor may build
    return (ChumpyArray, *_SPARSE.values())


def _object_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` limited to the stand-in classes (what protocol 0/1 pickles use)."""
    if base is not object or state is not None or cls not in _admitted_classes():
        raise RefusedGlobalError(f"copy_reg._reconstructor({cls!r}, {base!r}), not a FLAME array")
    return object.__new__(cls)


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric", "numpy")
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("__builtin__", "object"): object, ("builtins", "object"): object,
    ("__builtin__", "set"): set, ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset, ("builtins", "frozenset"): frozenset,
    ("__builtin__", "complex"): complex, ("builtins", "complex"): complex,
    ("copy_reg", "_reconstructor"): _object_reconstructor, ("copyreg", "_reconstructor"): _object_reconstructor,
    ("_codecs", "encode"): _bytes_from_latin1, ("codecs", "encode"): _bytes_from_latin1,
}
for _m in _NUMPY_MODULES:
    _ALLOWED[(_m, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_m, "scalar")] = _SCALAR
    _ALLOWED[(_m, "_frombuffer")] = _FROMBUFFER


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for FLAME files: numpy arrays, sparse matrices and chumpy ``Ch`` only."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return ChumpyArray  # never chumpy's own code
        if module.startswith("scipy.sparse"):
            for fmt, cls in _SPARSE.items():
                if name in (f"{fmt}_matrix", f"{fmt}_array"):
                    return cls
        raise RefusedGlobalError(f"the pickled object {module}.{name}")


def restricted_load(data: bytes | io.IOBase):
    """Unpickle ``data`` (bytes or a binary file) with ``RestrictedUnpickler`` (latin-1 for Python 2)."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    return RestrictedUnpickler(f, encoding="latin1").load()


def _plain(value):
    """Stand-ins and tensors -> numpy arrays; everything else unchanged."""
    if isinstance(value, ChumpyArray):
        return value.x
    if isinstance(value, SparseMatrixState):
        return value.toarray()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        return value.detach().cpu().numpy()
    return value


# ---------------------------------------------------------------------------
# file readers


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}. {OBTAIN_HINT if what == 'head model' else ''}".strip())
    if path.is_dir():
        raise HeadFileError(f"{path} is a folder; give the {what} file itself (e.g. .../generic_model.pkl)")


def _corrupt(path: Path, err: Exception) -> HeadFileError:
    return HeadFileError(f"cannot read {path}: the file looks truncated or corrupt ({type(err).__name__}: {err}). "
                         "Download it again.")


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return restricted_load(f)
    except RefusedGlobalError as e:
        raise _refused(path, e) from None
    except HeadFileError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            UnicodeDecodeError, MemoryError) as e:
        raise _corrupt(path, e) from None


def _npy_header(f):
    """(shape, fortran order, dtype) of the .npy file object ``f``, read from its header only."""
    version = np.lib.format.read_magic(f)
    return (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)


def _read_npz(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:  # object arrays (pickles) are refused before numpy reads anything
            if any(_npy_header(z.open(name))[2].hasobject for name in z.namelist() if name.endswith(".npy")):
                raise HeadFileError(f"{path} holds pickled Python objects; only plain numeric arrays are read "
                                    "from .npz files (save the arrays themselves)")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except HeadFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
        raise _corrupt(path, e) from None


def _read_npy(path: Path):
    """A .npy file; an object array (a pickled dict, as DECA's landmark_embedding.npy) goes
    through the restricted unpickler instead of numpy's unrestricted one."""
    try:
        with open(path, "rb") as f:
            if _npy_header(f)[2].hasobject:
                obj = restricted_load(f)
                return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
        return np.load(path, allow_pickle=False)
    except RefusedGlobalError as e:
        raise _refused(path, e) from None
    except (EOFError, pickle.UnpicklingError, ValueError, OSError, TypeError) as e:
        raise _corrupt(path, e) from None


def _read_torch(path: Path) -> dict:
    from gagavatar.io import TensorFileError, load_torch_file

    try:
        return load_torch_file(path)  # weights_only=True; its errors are one line
    except TensorFileError as e:
        raise HeadFileError(str(e)) from None


def _read_any(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".npy":
        return _read_npy(path)
    if suffix in (".pt", ".pth", ".ckpt"):
        return _read_torch(path)
    return _read_pickle(path)  # .pkl and anything else


def flame_version(path: str | Path) -> str:
    """'2020', '2023' or 'unknown', from the file name (FLAME files carry no version field)."""
    name = Path(path).name.lower()
    if "2023" in name:
        return "2023"
    if "2020" in name or name in ("generic_model.pkl", "flame_with_eye.pt"):
        return "2020"
    return "unknown"


def read_head_file(path: str | Path) -> dict:
    """Read a FLAME-format model file into numpy arrays (see the module docstring)."""
    path = Path(path)
    _check_exists(path, "head model")
    raw = _read_any(path)
    landmarks = None
    if isinstance(raw, dict) and "flame_model" in raw:  # the reference's FLAME_with_eye.pt
        if isinstance(raw.get("lmk_embeddings"), dict):
            landmarks = _embedding_from_dict({k: _plain(v) for k, v in raw["lmk_embeddings"].items()}, path)
        raw = raw["flame_model"]
    if not isinstance(raw, dict):
        raise HeadFileError(f"{path} holds a {type(raw).__name__}, not a FLAME model (a dict with keys "
                            f"{', '.join(REQUIRED_KEYS)})")
    data = {k: _plain(v) for k, v in raw.items()}
    missing = [k for k in REQUIRED_KEYS if data.get(k) is None]
    if missing:
        raise HeadFileError(f"{path} is not a FLAME model: missing keys {missing} (found {sorted(map(str, data))[:12]})")
    out = {k: np.asarray(data[k]) for k in REQUIRED_KEYS}
    _check_layout(out, path)
    check_finite(out, path)  # NaN in a template or a basis renders nothing, silently
    n_total = out["shapedirs"].shape[2]
    if "n_shape_basis" in data:
        out["n_shape_basis"] = int(np.asarray(data["n_shape_basis"]))
    else:
        out["n_shape_basis"] = min(FLAME_SHAPE_COLUMNS, n_total)
    out["version"] = str(np.asarray(data["version"])) if "version" in data else flame_version(path)
    if landmarks is None and "lmk_face_idx" in data:  # this project's npz carries its embedding
        landmarks = _embedding_from_dict(data, path)
    out["landmarks"] = landmarks
    return out


def _check_layout(d: dict, path: Path) -> None:
    """Shapes consistent with one another; a clear message for the first mismatch."""
    V = d["v_template"].shape[0]
    expect = {
        "v_template": (V, 3), "shapedirs": (V, 3, None), "posedirs": (V, 3, None),
        "weights": (V, None), "f": (None, 3), "kintree_table": (2, None), "J_regressor": (None, V),
    }
    for key, shape in expect.items():
        got = d[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            raise HeadFileError(f"{path}: '{key}' has shape {got}, expected {shape} (None = any); "
                                "the file is not a FLAME-layout model")
    J = d["kintree_table"].shape[1]
    if d["weights"].shape[1] != J or d["J_regressor"].shape[0] != J or d["posedirs"].shape[2] != 9 * (J - 1):
        raise HeadFileError(f"{path}: joint counts disagree (kintree {J}, weights {d['weights'].shape[1]}, "
                            f"J_regressor {d['J_regressor'].shape[0]}, posedirs {d['posedirs'].shape[2]} = 9 x (J-1)?)")


# ---------------------------------------------------------------------------
# landmark embeddings


def _embedding(face_idx, bary, indices, fmt: str) -> dict:
    face_idx = np.asarray(face_idx).reshape(-1).astype(np.int64)
    bary = np.asarray(bary, dtype=np.float64).reshape(-1, 3)
    indices = np.asarray(indices).reshape(-1).astype(np.int64)
    if not (len(face_idx) == len(bary) == len(indices)):
        raise HeadFileError(f"landmark embedding sizes disagree: {len(face_idx)} faces, {len(bary)} barycentric "
                            f"rows, {len(indices)} landmark indices")
    return {"face_idx": face_idx, "bary": bary, "indices": indices, "format": fmt}


def _embedding_from_dict(d: dict, path: Path) -> dict:
    if "lmk_face_idx" in d and "lmk_b_coords" in d:
        n = np.asarray(d["lmk_face_idx"]).size
        if "landmark_indices" in d:  # FLAME's mediapipe embedding or this project's file
            fmt = str(np.asarray(d["landmark_format"])) if "landmark_format" in d else "mediapipe"
            return _embedding(d["lmk_face_idx"], d["lmk_b_coords"], d["landmark_indices"], fmt)
        if n == 51:  # FLAME's static embedding: iBUG points 17..67 (no jaw contour)
            return _embedding(d["lmk_face_idx"], d["lmk_b_coords"], np.arange(17, 68), "ibug68")
        return _embedding(d["lmk_face_idx"], d["lmk_b_coords"], np.arange(n), "ibug68" if n == 68 else "custom")
    for faces_key, bary_key, fmt in (("full_lmk_faces_idx", "full_lmk_bary_coords", "ibug68"),
                                     ("full_lmk_faces_idx_with_eye", "full_lmk_bary_coords_with_eye", "ibug68+eyes"),
                                     ("static_lmk_faces_idx", "static_lmk_bary_coords", "ibug68")):
        if faces_key in d and bary_key in d:
            face_idx = np.asarray(_plain(d[faces_key])).reshape(-1)
            n = face_idx.size
            indices = np.arange(17, 68) if (faces_key.startswith("static") and n == 51) else np.arange(n)
            return _embedding(face_idx, _plain(d[bary_key]), indices, fmt)
    raise HeadFileError(f"{path} is not a landmark embedding: expected keys lmk_face_idx + lmk_b_coords "
                        f"(+ landmark_indices) or full_lmk_faces_idx + full_lmk_bary_coords; found {sorted(d)[:12]}")


def read_landmark_embedding(path: str | Path) -> dict:
    """Read a barycentric landmark embedding.

    Returns ``{'face_idx': [L] int64, 'bary': [L,3] float64, 'indices': [L] int64,
    'format': 'mediapipe' | 'ibug68' | 'ibug68+eyes' | 'custom'}``; ``indices`` says
    which landmark of that format each row is (e.g. which of MediaPipe's 478).
    """
    path = Path(path)
    _check_exists(path, "landmark embedding")
    raw = _read_any(path)
    if isinstance(raw, dict) and "lmk_embeddings" in raw:
        raw = raw["lmk_embeddings"]
    if not isinstance(raw, dict):
        raise HeadFileError(f"{path} holds a {type(raw).__name__}, not a landmark embedding dict")
    return _embedding_from_dict({k: _plain(v) for k, v in raw.items()}, path)


# ---------------------------------------------------------------------------
# writing this project's npz layout


def save_head_npz(path: str | Path, arrays: dict, landmarks: dict | None = None, compressed: bool = True) -> None:
    """Write a head model in FLAME's key layout (float32), plus this project's optional keys.

    ``arrays`` needs the ``REQUIRED_KEYS`` in FLAME's layout (``shapedirs`` [V,3,K],
    ``posedirs`` [V,3,9(J-1)], ``J_regressor`` [J,V] dense) and may give
    ``n_shape_basis`` (how many of the K columns are shape; FLAME: 300) and ``version``.
    ``landmarks`` (as ``read_landmark_embedding`` returns) adds ``lmk_face_idx``,
    ``lmk_b_coords``, ``landmark_indices`` and ``landmark_format``.
    """
    out = {}
    for k in REQUIRED_KEYS:
        a = np.asarray(arrays[k])
        out[k] = a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int64 if k != "f" else np.int32)
    out["n_shape_basis"] = np.int64(arrays.get("n_shape_basis", min(FLAME_SHAPE_COLUMNS, out["shapedirs"].shape[2])))
    if "version" in arrays:
        out["version"] = np.str_(arrays["version"])
    if landmarks is not None:
        out["lmk_face_idx"] = np.asarray(landmarks["face_idx"], dtype=np.int64)
        out["lmk_b_coords"] = np.asarray(landmarks["bary"], dtype=np.float32)
        out["landmark_indices"] = np.asarray(landmarks["indices"], dtype=np.int64)
        out["landmark_format"] = np.str_(landmarks.get("format", "mediapipe"))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **out)
