"""Which landmarks of each supported landmark format form the lips, eyes, lids, brows, nose
and chin: the points the synthetic look is placed by. "right"/"left" are the subject's;
FLAME's x axis points to the subject's left."""
from __future__ import annotations

LANDMARK_GROUPS = {
    "ibug68": {
        "lips_outer": list(range(48, 60)),
        "lips_inner_upper": [60, 61, 62, 63, 64],
        "lips_inner_lower": [60, 67, 66, 65, 64],
        "eye_right": list(range(36, 42)), "eye_left": list(range(42, 48)),
        "lid_right": [36, 37, 38, 39], "lid_left": [42, 43, 44, 45],
        "brow_right": [17, 18, 19, 20, 21], "brow_left": [22, 23, 24, 25, 26],
        "nose_tip": [30], "nose_bottom": [33], "chin": [8], "nostrils": [31, 35],
    },
    "mediapipe": {
        "lips_outer": [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146],
        "lips_inner_upper": [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308],
        "lips_inner_lower": [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308],
        "eye_right": [33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7],
        "eye_left": [263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249],
        "lid_right": [33, 246, 161, 160, 159, 158, 157, 173, 133],
        "lid_left": [263, 466, 388, 387, 386, 385, 384, 398, 362],
        "brow_right": [70, 63, 105, 66, 107], "brow_left": [300, 293, 334, 296, 336],
        "nose_tip": [1], "nose_bottom": [2], "chin": [152], "nostrils": [98, 327],
    },
}
LANDMARK_GROUPS["ibug68+eyes"] = LANDMARK_GROUPS["ibug68"]


def group_rows(fmt: str, rows: dict, name: str) -> list[int]:
    """Rows (``rows``: landmark id -> row) of the landmarks of group ``name`` in format ``fmt``."""
    got = [rows[i] for i in LANDMARK_GROUPS[fmt][name] if i in rows]
    if not got:
        raise ValueError(f"the head model's {fmt} landmark embedding has none of the {name} points")
    return got
