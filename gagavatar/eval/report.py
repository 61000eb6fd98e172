"""The evaluation's outputs: report.md (the paper's Table 1 layout) and the example grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gagavatar.io import resize_image, tensor_to_image, write_image_grid

# (mode, metric, header); arrows say which way is better
COLUMNS = (
    ("self", "psnr", "PSNR↑"), ("self", "ssim", "SSIM↑"), ("self", "lpips", "LPIPS↓"), ("self", "csim", "CSIM↑"),
    ("self", "aed", "AED↓"), ("self", "apd", "APD↓"), ("self", "akd", "AKD↓"),
    ("cross", "csim", "CSIM↑"), ("cross", "aed", "AED↓"), ("cross", "apd", "APD↓"),
)
DIGITS = {"psnr": 2, "akd": 3}
MISSING = "n/a"


def format_value(value, metric: str) -> str:
    if value is None:
        return MISSING
    if isinstance(value, str) or not np.isfinite(value):
        return str(value)
    return f"{value:.{DIGITS.get(metric, 3)}f}"


def table(rows: list[dict]) -> str:
    """The paper's Table 1 as markdown: one row per method, self columns then cross columns."""
    header = ["Method"] + [f"{mode.capitalize()} {title}" for mode, _, title in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for row in rows:
        cells = [row["name"]] + [format_value(row.get(mode, {}).get(metric), metric) for mode, metric, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts_table(rows: list[dict]) -> str:
    """Pairs behind each row: how many, and where MediaPipe found no face."""
    header = ["Method", "self pairs", "self no face (generated)", "self no face (driving)", "self AED/APD pairs",
              "cross pairs", "cross no face (generated)", "cross no face (driving)", "cross AED/APD pairs", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        cells = [row["name"]]
        for mode in ("self", "cross"):
            s = row.get(mode)
            cells += [str(s[k]) if s else MISSING
                      for k in ("n_pairs", "no_face_generated", "no_face_driving", "n_expression_pose")]
        cells.append(f"{row['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(result: dict, path: str | Path, grid: str | None = "grid.png") -> Path:
    """report.md from the evaluation's result (what metrics.json holds)."""
    cfg = result["config"]
    lines = [
        "# Evaluation",
        "",
        f"Data `{result['data']}`, split `{result['split']}`, images {result['size']}x{result['size']} on "
        f"background {tuple(cfg['background'])}; {result['machine']}.",
        "",
        "Self-reenactment: source = first frame of each held-out video, target = each other frame "
        f"({'all' if cfg['max_pairs'] is None else 'at most ' + str(cfg['max_pairs'])} pairs). "
        f"Cross-reenactment: {cfg['cross_pairs']} pairs drawn with seed {cfg['seed']}, the driver from "
        "another identity.",
        "",
        table(result["rows"]),
        "",
        f"{MISSING}: not available (reasons below). CSIM is generated vs target (self) and generated vs source "
        "(cross).",
        "",
        "## Pairs",
        "",
        counts_table(result["rows"]),
        "",
        "Frames where MediaPipe found no face have no AED, APD or AKD and are left out of those means.",
        "",
        "## Notes",
        "",
        f"- LPIPS: {result['lpips']}",
        f"- AED/APD: the tracker fits head model `{result.get('fit_head_model')}` to generated and driving frames.",
    ]
    for key, reason in result["unavailable"].items():
        if key != "lpips":
            lines.append(f"- {key}: {reason}")
    lines += ["", "## Definitions", ""]
    lines += [f"- **{k.upper()}**: {v}" for k, v in result["definitions"].items()]
    if grid:
        lines += ["", "## Examples", "", "Rows: example pairs (self first, then cross). Columns: source | "
                  "driver (= target for self) | each method.", "", f"![examples]({grid})"]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_grid(example_inputs: dict, examples: dict, names: list[str], path: str | Path,
               cell: int | None = None) -> Path:
    """A PNG: one row per example pair (labelled self or cross), columns source | driver | each method.

    example_inputs: mode -> {position: (source [3,S,S], driver [3,S,S])};
    examples: method name -> {(mode, position): generated [3,S,S]}.
    """
    keys = [(mode, pos) for mode in ("self", "cross") for pos in sorted(example_inputs.get(mode, {}))]
    if not keys:
        raise ValueError("no example pairs to draw")
    size = next(iter(example_inputs[keys[0][0]].values()))[0].shape[-1]
    cell = cell or min(size, 256)

    def tile(image: torch.Tensor | None) -> np.ndarray | None:
        if image is None:
            return None
        return tensor_to_image(resize_image(image.float(), cell))

    rows = [[tile(image) for image in [*example_inputs[mode][pos]] + [examples[name].get((mode, pos)) for name in names]]
            for mode, pos in keys]
    return write_image_grid(rows, path, row_labels=[mode for mode, _ in keys],
                            column_labels=["source", "driver / target"] + names)
