"""``HeadModel``: a FLAME-layout head model driven by linear blend skinning.

Vertices are computed as in FLAME (and SMPL):

1. blend shapes: ``v_shaped = v_template + shapedirs @ shape + exprdirs @ expression``;
2. joints ``J = J_regressor @ v_shaped`` [J,3] (root, neck, jaw, left eye, right eye);
3. pose correctives: ``v_posed = v_shaped + posedirs @ (R_j - I)_{j=1..J-1}``, the
   rotation matrices of the non-root joints minus identity, flattened joint by
   joint, row-major (FLAME's 36 features for its 4 non-root joints);
4. skinning: every joint's world transform ``G_j`` (chained along ``parents``)
   relative to its rest pose, blended per vertex with ``lbs_weights``;
5. ``vertices = skinned + translation``.

Pose inputs are axis-angle vectors: ``global_pose`` (root), ``neck_pose``,
``jaw_pose`` [B,3] and ``eye_pose`` [B,6] (left eye, then right eye; FLAME's
joints 3 and 4). Everything is in the model's own units (metres for FLAME);
world units (x ``WORLD_SCALE``, SPEC §1) are applied in exactly one place,
``gagavatar.data.frame.FrameParams.vertices``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gagavatar.assets import bundled
from gagavatar.geometry.rotation import axis_angle_to_matrix
from gagavatar.head import flame_io

DEFAULT_HEAD_PATH = bundled("head/synthetic_head.npz")
BUNDLED_HEAD_ID = "synthetic-flame-v1"  # ``HeadModel.default().id``, as datasets and checkpoints record it
# older names of the same head (synth's datasets and the bundled clips said "synthetic-default")
HEAD_ID_ALIASES = {"synthetic-default": BUNDLED_HEAD_ID}


def canonical_head_id(head_id: str | None) -> str | None:
    """One name per head model: a recorded id with its older aliases resolved."""
    return HEAD_ID_ALIASES.get(head_id, head_id)


def _planar(dirs: np.ndarray) -> Tensor:
    """[V,3,K] array -> [V,3,K] tensor whose memory is a contiguous [K,3,V] block.

    The forward works component-major ([B,3,V]: all x, then all y, then all z),
    where every product reads contiguous memory; this keeps FLAME's [V,3,K] view.
    """
    return torch.from_numpy(np.ascontiguousarray(dirs.transpose(2, 1, 0))).permute(2, 1, 0)


def _planar_matrix(dirs: Tensor, columns: int) -> Tensor:
    """First ``columns`` columns of a [V,3,K] basis as a [columns, 3V] component-major matrix."""
    return dirs[..., :columns].permute(2, 1, 0).reshape(columns, -1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals [B,V,3] of a mesh: vertices [B,V,3], faces [F,3]."""
    tri = vertices[:, faces]  # [B,F,3,3]
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], fn)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


class HeadModel(nn.Module):
    """FLAME-layout head model.

    Buffers (V vertices, J joints, F faces, S shape / E expression columns)::

        v_template  [V,3]     shapedirs [V,3,S]    exprdirs [V,3,E]
        posedirs    [V,3,9(J-1)]  (FLAME's layout)
        J_regressor [J,V] dense     parents [J] (long, parents[0] = -1)
        lbs_weights [V,J]           faces [F,3] (long)

    Build one with ``HeadModel.load(path)`` (FLAME files) or ``HeadModel.default()``
    (the bundled synthetic head). Works in float32 and float64 (``model.double()``).
    """

    def __init__(self, arrays: dict, n_shape: int = 300, n_expression: int = 100,
                 landmarks: dict | None = None, name: str = "head model"):
        super().__init__()
        shapedirs = np.asarray(arrays["shapedirs"], dtype=np.float32)
        n_basis_shape = int(arrays.get("n_shape_basis", min(300, shapedirs.shape[2])))
        if n_shape < 0 or n_expression < 0:
            raise ValueError(f"n_shape and n_expression must be >= 0, got {n_shape}, {n_expression}")
        V = shapedirs.shape[0]
        # columns the file really has (the rest are zero padding: coefficients with no effect)
        self.shape_columns = min(n_shape, n_basis_shape)
        self.expression_columns = min(n_expression, shapedirs.shape[2] - n_basis_shape)
        shape_dirs = np.zeros((V, 3, n_shape), np.float32)
        shape_dirs[..., :self.shape_columns] = shapedirs[..., :self.shape_columns]
        expr_dirs = np.zeros((V, 3, n_expression), np.float32)
        expr_dirs[..., :self.expression_columns] = shapedirs[..., n_basis_shape:n_basis_shape + self.expression_columns]
        posedirs = np.asarray(arrays["posedirs"], dtype=np.float32)
        parents = np.asarray(arrays["kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        if any(p >= j or p < 0 for j, p in enumerate(parents[1:], start=1)):
            raise flame_io.HeadFileError(f"{name}: kintree_table parents {parents.tolist()} are not ordered "
                                         "parent-before-child")
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("v_template", f32(arrays["v_template"]))
        self.register_buffer("shapedirs", _planar(shape_dirs))
        self.register_buffer("exprdirs", _planar(expr_dirs))
        self.register_buffer("posedirs", _planar(posedirs))
        self.register_buffer("J_regressor", f32(arrays["J_regressor"]))
        self.register_buffer("parents", torch.from_numpy(parents))
        self.register_buffer("lbs_weights", f32(arrays["weights"]))
        self.register_buffer("faces", torch.as_tensor(np.asarray(arrays["f"]).astype(np.int64)))
        self.version = str(arrays.get("version", "unknown"))
        self.name = name
        self.id = self._identify(arrays, name)
        self._parents_list = parents.tolist()
        self.landmark_format = None
        self.register_buffer("lmk_face_idx", torch.zeros(0, dtype=torch.long))
        self.register_buffer("lmk_b_coords", torch.zeros(0, 3))
        self.register_buffer("landmark_indices", torch.zeros(0, dtype=torch.long))
        if landmarks is not None:
            self.set_landmark_embedding(landmarks)

    @staticmethod
    def _identify(arrays: dict, name: str) -> str:
        """What checkpoints and datasets record as the head they need: the bundled head's
        name, ``flame2020`` / ``flame2023`` for FLAME, else a fingerprint of the template mesh
        (a FLAME-layout model of unknown version)."""
        import hashlib

        if Path(name).resolve() == DEFAULT_HEAD_PATH.resolve():
            return BUNDLED_HEAD_ID
        version = str(arrays.get("version", "unknown"))
        if version in ("2020", "2023"):
            return f"flame{version}"
        if version != "unknown":  # a file that names itself (the synthetic heads the builder makes)
            return version
        digest = hashlib.sha256(np.ascontiguousarray(arrays["v_template"], np.float32).tobytes()).hexdigest()
        return f"head-{digest[:12]}"

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | Path, n_shape: int = 300, n_expression: int = 100,
             landmark_embedding: str | Path | dict | None = None) -> "HeadModel":
        """Load a FLAME-format file (.pkl, .npz, .pt; see ``flame_io``).

        ``landmark_embedding``: a file (e.g. FLAME's ``mediapipe_landmark_embedding.npz``)
        or a dict from ``flame_io.read_landmark_embedding``; by default the embedding
        stored in the model file, if any.
        """
        arrays = flame_io.read_head_file(path)
        if arrays["version"] == "2023":
            warnings.warn(f"{Path(path).name} looks like FLAME 2023: the released GAGAvatar weights were trained "
                          "on FLAME 2020 (generic_model.pkl) bases, so they expect FLAME 2020 coefficients; "
                          "use FLAME 2023 only with a model trained on it.", stacklevel=2)
        landmarks = arrays.get("landmarks")
        if landmark_embedding is not None:
            landmarks = (landmark_embedding if isinstance(landmark_embedding, dict)
                         else flame_io.read_landmark_embedding(landmark_embedding))
        return cls(arrays, n_shape=n_shape, n_expression=n_expression, landmarks=landmarks,
                   name=str(path))

    @classmethod
    def default(cls, n_shape: int = 300, n_expression: int = 100) -> "HeadModel":
        """The bundled synthetic head (``gagavatar/assets/head/synthetic_head.npz``,
        made by ``python -m gagavatar.tools.build_head``) with its MediaPipe landmark embedding."""
        if not DEFAULT_HEAD_PATH.exists():
            raise FileNotFoundError(f"the bundled synthetic head is missing: {DEFAULT_HEAD_PATH}. "
                                    "Regenerate it with `python -m gagavatar.tools.build_head`.")
        return cls.load(DEFAULT_HEAD_PATH, n_shape=n_shape, n_expression=n_expression)

    def set_landmark_embedding(self, landmarks: dict) -> None:
        """Use a barycentric embedding: ``{'face_idx' [L], 'bary' [L,3], 'indices' [L], 'format'}``."""
        face_idx = torch.as_tensor(np.asarray(landmarks["face_idx"]), dtype=torch.long)
        if face_idx.numel() and (face_idx.min() < 0 or face_idx.max() >= self.faces.shape[0]):
            raise ValueError(f"landmark embedding names faces up to {int(face_idx.max())} but the model has "
                             f"{self.faces.shape[0]} faces: the embedding belongs to another mesh")
        dev, dt = self.v_template.device, self.v_template.dtype
        self.lmk_face_idx = face_idx.to(dev)
        self.lmk_b_coords = torch.as_tensor(np.asarray(landmarks["bary"]), dtype=dt, device=dev).reshape(-1, 3)
        self.landmark_indices = torch.as_tensor(np.asarray(landmarks["indices"]), dtype=torch.long, device=dev)
        self.landmark_format = landmarks.get("format", "custom")

    def arrays(self) -> dict:
        """The model in FLAME's file layout (numpy), for ``flame_io.save_head_npz``."""
        shapedirs = torch.cat([self.shapedirs[..., :self.shape_columns],
                               self.exprdirs[..., :self.expression_columns]], dim=-1)
        J = self.n_joints
        parents = np.array(self._parents_list, dtype=np.int64)
        kintree = np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(J)])
        return {
            "v_template": self.v_template.cpu().numpy(), "shapedirs": shapedirs.cpu().numpy(),
            "posedirs": self.posedirs.cpu().numpy(),
            "J_regressor": self.J_regressor.cpu().numpy(), "kintree_table": kintree,
            "weights": self.lbs_weights.cpu().numpy(), "f": self.faces.cpu().numpy(),
            "n_shape_basis": self.shape_columns, "version": self.version,
        }

    def save(self, path: str | Path) -> None:
        """Write the model (and its landmark embedding) in this project's npz layout."""
        landmarks = None
        if self.lmk_face_idx.numel():
            landmarks = {"face_idx": self.lmk_face_idx.cpu().numpy(), "bary": self.lmk_b_coords.cpu().numpy(),
                         "indices": self.landmark_indices.cpu().numpy(), "format": self.landmark_format}
        flame_io.save_head_npz(path, self.arrays(), landmarks)

    # ------------------------------------------------------------------ sizes

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def n_joints(self) -> int:
        return self.J_regressor.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def n_expression(self) -> int:
        return self.exprdirs.shape[-1]

    @property
    def n_landmarks(self) -> int:
        return self.lmk_face_idx.shape[0]

    # ------------------------------------------------------------------ forward

    def _coefficients(self, x: Tensor | None, n: int, used: int, what: str, like: Tensor) -> Tensor | None:
        """[B, used] coefficients (missing columns are zero), or None when nothing is used."""
        if x is None or used == 0:
            return None
        if x.dim() != 2 or x.shape[1] > n:
            raise ValueError(f"{what} must be [B, <= {n}], got {tuple(x.shape)}")
        x = x[:, :used].to(like)
        if x.shape[1] < used:
            x = torch.nn.functional.pad(x, (0, used - x.shape[1]))
        return x  # batch 1 or B; broadcast later

    def _pose(self, x: Tensor | None, width: int, what: str, B: int, like: Tensor) -> Tensor:
        if x is None:
            return like.new_zeros(B, width)
        if x.dim() != 2 or x.shape[1] != width:
            raise ValueError(f"{what} must be [B, {width}] axis-angle, got {tuple(x.shape)}")
        return x.to(like).expand(B, -1)

    def forward(self, shape: Tensor, expression: Tensor | None = None, global_pose: Tensor | None = None,
                neck_pose: Tensor | None = None, jaw_pose: Tensor | None = None, eye_pose: Tensor | None = None,
                translation: Tensor | None = None) -> Tensor:
        """Vertices [B,V,3].

        shape [B,S<=n_shape], expression [B,E<=n_expression] (fewer columns: the rest
        are zero), global/neck/jaw pose [B,3] axis-angle, eye_pose [B,6] (left, right),
        translation [B,3] (model units). Inputs with batch 1
        broadcast against the others.
        """
        ref = self.v_template
        inputs = [shape, expression, global_pose, neck_pose, jaw_pose, eye_pose, translation]
        B = max(x.shape[0] for x in inputs if x is not None)
        for x in inputs:
            if x is not None and x.shape[0] not in (1, B):
                raise ValueError(f"batch sizes disagree: {[None if t is None else tuple(t.shape) for t in inputs]}")
        beta = self._coefficients(shape, self.n_shape, self.shape_columns, "shape", ref)
        psi = self._coefficients(expression, self.n_expression, self.expression_columns, "expression", ref)
        pose = torch.cat([self._pose(global_pose, 3, "global_pose", B, ref), self._pose(neck_pose, 3, "neck_pose", B, ref),
                          self._pose(jaw_pose, 3, "jaw_pose", B, ref), self._pose(eye_pose, 6, "eye_pose", B, ref)], 1)
        J = self.n_joints
        if pose.shape[1] != 3 * J:
            raise ValueError(f"this model has {J} joints; the forward inputs give {pose.shape[1] // 3} rotations")

        # Everything below is component-major ([B,3,V]: x of all vertices, then y, then z),
        # so the products and the skinning read contiguous memory.
        # 1. blend shapes: shape and expression each at their own batch size (shape is
        #    often shared by a whole batch), reading only the columns the file has
        V = self.n_vertices
        v_shaped = ref.T.reshape(1, 3 * V)
        for coeff, dirs, used in ((beta, self.shapedirs, self.shape_columns),
                                  (psi, self.exprdirs, self.expression_columns)):
            if coeff is not None:
                v_shaped = v_shaped + coeff @ _planar_matrix(dirs, used)
        v_shaped = v_shaped.reshape(-1, 3, V)  # batch 1 or B

        # 2. joints from the shaped mesh
        joints = (v_shaped @ self.J_regressor.T).transpose(1, 2).expand(B, J, 3)  # [B,J,3]

        # 3. pose correctives from the non-root rotations
        rot = axis_angle_to_matrix(pose.reshape(B, J, 3))  # [B,J,3,3]
        eye = torch.eye(3, dtype=ref.dtype, device=ref.device)
        pose_feature = (rot[:, 1:] - eye).reshape(B, -1)  # [B, 9(J-1)]
        v_posed = v_shaped + (pose_feature @ _planar_matrix(self.posedirs, pose_feature.shape[1])).reshape(B, 3, V)

        # 4. joint world transforms (loop over the J joints, batched), relative to rest
        rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, self.parents[1:]]], 1)
        world_R, world_t = [rot[:, 0]], [rel[:, 0]]
        for j in range(1, J):
            p = self._parents_list[j]
            world_R.append(world_R[p] @ rot[:, j])
            world_t.append(world_t[p] + (world_R[p] @ rel[:, j, :, None])[..., 0])
        R = torch.stack(world_R, 1)  # [B,J,3,3]
        t = torch.stack(world_t, 1) - (R @ joints[..., None])[..., 0]  # maps rest-pose points
        A = torch.cat([R, t[..., None]], -1).reshape(B, J, 12)
        T = (A.transpose(1, 2) @ self.lbs_weights.T).reshape(B, 3, 4, V)  # blended per vertex
        # T[:, c, :3] . v + T[:, c, 3], written out
        x, y, z = v_posed[:, 0:1], v_posed[:, 1:2], v_posed[:, 2:3]
        verts = torch.addcmul(torch.addcmul(torch.addcmul(T[:, :, 3], T[:, :, 0], x), T[:, :, 1], y), T[:, :, 2], z)
        if translation is not None:
            verts = verts + self._pose(translation, 3, "translation", B, ref)[..., None]
        return verts.transpose(1, 2).contiguous()  # [B,V,3]

    def landmarks(self, vertices: Tensor) -> Tensor:
        """Landmarks [B,L,3] of vertices [B,V,3] (any scale) from the barycentric embedding.

        ``landmark_indices`` [L] says which landmark of ``landmark_format`` each row is
        ('mediapipe': an index into MediaPipe's 478 face-mesh landmarks).
        """
        if self.lmk_face_idx.numel() == 0:
            raise RuntimeError(f"{self.name} has no landmark embedding: pass landmark_embedding= to "
                               "HeadModel.load (e.g. FLAME's mediapipe_landmark_embedding.npz)")
        tri = vertices[:, self.faces[self.lmk_face_idx]]  # [B,L,3,3]
        return (tri * self.lmk_b_coords.to(vertices)[None, :, :, None]).sum(2)

    def extra_repr(self) -> str:
        return (f"vertices={self.n_vertices}, faces={self.faces.shape[0]}, joints={self.n_joints}, "
                f"shape={self.n_shape} ({self.shape_columns} in file), expression={self.n_expression} "
                f"({self.expression_columns} in file), landmarks={self.n_landmarks} "
                f"({self.landmark_format}), version={self.version}")


def load_head_model(path: str | Path | None = None, landmark_embedding: str | Path | None = None) -> HeadModel:
    """The head model a command runs with: a FLAME-format file, or the bundled synthetic head (None)."""
    if path is None:
        if landmark_embedding is not None:
            raise ValueError("a landmark embedding belongs to a head model file (--head-model); "
                             "the bundled head has its own")
        return HeadModel.default()
    return HeadModel.load(path, landmark_embedding=landmark_embedding)
