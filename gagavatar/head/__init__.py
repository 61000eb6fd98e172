"""Head model layer: FLAME-format files read safely, and ``HeadModel`` (LBS forward, landmarks).

    from gagavatar.head import HeadModel
    head = HeadModel.load("generic_model.pkl", landmark_embedding="mediapipe_landmark_embedding.npz")
    head = HeadModel.default()          # the bundled synthetic head, no FLAME needed
    verts = head(shape, expression, jaw_pose=jaw, eye_pose=eyes)   # [B,V,3], model units (metres)
    lmks = head.landmarks(verts)                                     # [B,L,3]
"""
from gagavatar.head.flame_io import (HeadFileError, RefusedGlobalError, read_head_file, read_landmark_embedding,
                                     save_head_npz)
from gagavatar.head.model import (BUNDLED_HEAD_ID, DEFAULT_HEAD_PATH, HeadModel, canonical_head_id,
                                  load_head_model)

__all__ = ["HeadModel", "BUNDLED_HEAD_ID", "canonical_head_id", "HeadFileError", "RefusedGlobalError",
           "read_head_file", "read_landmark_embedding", "save_head_npz", "load_head_model", "DEFAULT_HEAD_PATH"]
