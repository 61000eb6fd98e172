"""Evaluation (gagavatar.eval.evaluate / report, `gagavatar eval`): the report for a tiny
checkpoint on a tiny synthetic dataset, perfect values for the ground truth as prediction,
baselines against a brute-force recomputation, --compare."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gagavatar.data import Dataset, composite, image_to_tensor
from gagavatar.eval.evaluate import EvalConfig, GroundTruth, evaluate, evaluate_methods
from gagavatar.eval.report import COLUMNS

HEADERS = ["Self PSNR↑", "Self SSIM↑", "Self LPIPS↓", "Self CSIM↑", "Self AED↓", "Self APD↓", "Self AKD↓",
           "Cross CSIM↑", "Cross AED↓", "Cross APD↓"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 identities x 1 video x 4 frames at 128 px: 2 train, 2 test."""
    from gagavatar.synthetic.video import SynthConfig, generate

    root = tmp_path_factory.mktemp("eval_data")
    generate(root, SynthConfig(identities=4, videos_per_identity=1, frames=4, size=128, seed=0,
                               splits=(0.5, 0.0, 0.5), n_gaussians=4000), progress=False)
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two run folders with a random-weight tiny model each (64 px render, for speed)."""
    from gagavatar.model import create_model, save

    root = tmp_path_factory.mktemp("runs")
    paths = []
    for seed, name in ((0, "run_a"), (1, "run_b")):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random backbone
            paths.append(save(create_model("tiny", render_size=64), root / name / "model.safetensors").parent)
    return paths


def table_rows(report: str) -> list[list[str]]:
    """The cells of the first markdown table of report.md (header first)."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def brute_image(video, frame: int, size: int) -> torch.Tensor:
    """A frame composited on black with its matte at the stored size, then resized to ``size``
    [3,S,S] (the order the reference's crops are made in, as the loader does)."""
    matted = composite(image_to_tensor(video.frame(frame)), image_to_tensor(video.matte(frame)))
    return F.interpolate(matted[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0, 1)


def test_report_for_a_tiny_checkpoint(data, runs, tmp_path):
    out = tmp_path / "report"
    evaluate(runs[0] / "model.safetensors", data, out, max_pairs=2, cross_pairs=2, baselines=True, progress=False)

    rows = table_rows((out / "report.md").read_text())
    assert rows[0] == ["Method"] + HEADERS
    assert [r[0] for r in rows[1:]] == ["run_a", "copy source", "mean training image"]
    assert all(len(r) == 11 for r in rows)
    assert [c[2] for c in COLUMNS] == [h.split(" ", 1)[1] for h in HEADERS]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["size"] == 64  # the model's render size
    model, copy, mean = metrics["rows"]
    for row in metrics["rows"]:
        assert row["self"]["n_pairs"] == 2 and row["cross"]["n_pairs"] == 2
        assert len(row["self_pairs"]) == 2 and len(row["cross_pairs"]) == 2
        assert row["self"]["no_face_generated"] + row["self"]["n_expression_pose"] <= 2
        assert row["self"]["lpips"] is None  # no AlexNet weights anywhere: reported, never invented
    assert metrics["lpips"].startswith("unavailable")
    assert "LPIPS: unavailable" in (out / "report.md").read_text()
    assert 0 < model["self"]["psnr"] < copy["self"]["psnr"]  # random weights lose to copying the source
    assert copy["cross"]["csim"] == pytest.approx(1.0, abs=1e-6)  # the source itself keeps its identity

    # baselines against a brute-force recomputation from the dataset files
    ds = Dataset(data)
    train = [brute_image(v, i, 64) for v in ds.split("train") for i in range(v.n_frames)]
    mean_image = torch.stack(train).double().mean(0).float()
    for c, m in zip(copy["self_pairs"], mean["self_pairs"]):
        source = brute_image(ds.video(c["source_video"]), c["source_frame"], 64)
        target = brute_image(ds.video(c["target_video"]), c["target_frame"], 64)
        mse = lambda a: float((a.double() - target.double()).square().mean())  # noqa: E731
        assert c["psnr"] == pytest.approx(-10 * np.log10(mse(source)), abs=1e-3)
        assert m["psnr"] == pytest.approx(-10 * np.log10(mse(mean_image)), abs=1e-3)

    grid = Image.open(out / "grid.png")
    assert grid.width > 5 * 64 and grid.height > 4 * 64  # 5 columns, 2 self + 2 cross examples


def test_ground_truth_as_prediction_gives_perfect_values(data, tmp_path):
    out = tmp_path / "gt"
    config = EvalConfig(cross_pairs=0, max_pairs=4, progress=False)
    result = evaluate_methods([GroundTruth(), GroundTruth(noise=0.1)], data, out, config)
    exact, noisy = (r["self"] for r in result["rows"])
    assert result["size"] == 128
    assert exact["psnr"] == float("inf")
    assert exact["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert exact["csim"] == pytest.approx(1.0, abs=1e-6)
    assert exact["no_face_generated"] == exact["no_face_driving"] == 0  # MediaPipe sees the synthetic faces
    assert exact["akd"] == 0.0 and exact["n_akd"] == 4
    assert exact["aed"] == 0.0 and exact["apd"] == 0.0 and exact["n_expression_pose"] == 4
    # a known perturbation moves every image metric the right way
    assert np.isfinite(noisy["psnr"]) and noisy["psnr"] < 25
    assert noisy["ssim"] < exact["ssim"] and noisy["csim"] < exact["csim"]
    if noisy["n_akd"]:
        assert noisy["akd"] > 0
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: no Infinity literal
    assert metrics["rows"][0]["self"]["psnr"] == "inf"
    assert "cross" in metrics["unavailable"]
    rows = table_rows((out / "report.md").read_text())
    assert rows[1][1] == "inf" and rows[1][-3:] == ["n/a"] * 3  # no cross pairs asked for


def test_compare_two_runs_in_one_table(data, runs, tmp_path):
    from gagavatar.cli import app

    out = tmp_path / "compare"
    result = CliRunner().invoke(app, ["eval", "--compare", str(runs[0]), str(runs[1]), "--data", str(data),
                                      "--out", str(out), "--max-pairs", "1", "--cross-pairs", "0", "--coarse"])
    assert result.exit_code == 0, result.output
    rows = table_rows((out / "report.md").read_text())
    assert [r[0] for r in rows] == ["Method", "run_a", "run_a (coarse)", "run_b", "run_b (coarse)"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["checkpoint"] for r in metrics["rows"]] == [str(p / "model.safetensors") for p in runs for _ in "fc"]
    fine, coarse = metrics["rows"][:2]  # one network, two of its images: the numbers differ
    assert fine["self"]["psnr"] != coarse["self"]["psnr"]
    assert (out / "grid.png").is_file()


def test_cli_errors_say_what_to_do(data, tmp_path):
    from gagavatar.cli import app

    runner = CliRunner()
    empty_run = tmp_path / "unfinished"
    empty_run.mkdir()
    (empty_run / "step_000010.pt").write_bytes(b"")
    result = runner.invoke(app, ["eval", "--checkpoint", str(empty_run), "--data", str(data), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no model.safetensors" in result.output and "--resume" in result.output
    result = runner.invoke(app, ["eval", "--compare", "--data", str(data), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--compare needs" in result.output
