"""`gagavatar live` from a video file: running FPS and latency, the written file, no display."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from gagavatar import io as gio
from gagavatar.cli import app
from gagavatar.data import Dataset
from gagavatar.reenact import DEMO_DATA, bundled


def _clip(tmp_path, fps=12.5):
    """16 frames of the bundled driver, with a 440 Hz tone as their sound."""
    driver = Dataset(bundled(DEMO_DATA)).video("driver")
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(16 / fps * 16000)) / 16000)
    return gio.write_video(tmp_path / "driver.mp4", [driver.frame(i) for i in range(16)], fps=fps, audio=tone)


def test_live_reports_as_it_runs_and_keeps_the_frame_rate(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    clip = _clip(tmp_path)
    result = CliRunner().invoke(app, ["live", "--source", str(bundled(DEMO_DATA) / "source"), "--driver", str(clip),
                                      "--max-frames", "12", "--out", str(tmp_path / "x.mp4"),
                                      "--report-every", "0.01"])
    assert result.exit_code == 0, result.output
    running = [line for line in result.output.splitlines() if line.startswith("live:")]
    assert running and all("FPS" in line and "latency" in line for line in running)
    assert "12 frames" in result.output.splitlines()[-1] and f"wrote {tmp_path / 'x.mp4'}" in result.output
    assert gio.video_info(tmp_path / "x.mp4").fps == 12.5
    sound = gio.read_audio(tmp_path / "x.mp4")  # the driver's, as far as it was driven: 12 frames' worth
    assert abs(len(sound) - 12 / 12.5 * 16000) <= 16000 / 12.5 and sound.std() > 0.1
    frames = np.stack(list(gio.iter_video(tmp_path / "x.mp4")))
    assert frames.shape == (12, 128, 128, 3) and frames.std() > 5


def test_live_without_a_display_or_out_says_where_it_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(tmp_path)
    clip = _clip(tmp_path)
    result = CliRunner().invoke(app, ["live", "--source", str(bundled(DEMO_DATA) / "source"), "--driver", str(clip),
                                      "--max-frames", "4"])
    assert result.exit_code == 0, result.output
    assert "no display: writing the result to live.mp4" in result.output
    assert len(list(gio.iter_video(tmp_path / "live.mp4"))) == 4
