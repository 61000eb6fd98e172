"""Names of the bundled synthetic head's first shape and expression columns.

The synthetic head (built by ``gagavatar.tools.build_head``) puts these named
components first in its bases, in this order; the synthetic video generator
gives each named expression its own kind of motion (blinks, smiles, ...).
"""

EXPRESSIONS = ("mouth_open", "smile", "pucker", "brow_raise", "blink_left", "blink_right", "frown",
               "mouth_stretch", "lip_press", "cheek_puff", "mouth_left", "nose_wrinkle", "upper_lip_raise",
               "lower_lip_down", "jaw_forward", "smile_left", "smile_right")
SHAPES = ("head_size", "head_width", "face_length", "head_depth", "nose_size", "nose_width", "jaw_width",
          "cheek_fullness", "chin_forward", "forehead_slope", "eye_distance", "lip_thickness", "ear_size",
          "brow_ridge", "neck_thickness")
