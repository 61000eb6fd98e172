"""``gagavatar bench``: what the benchmarks return, ``bench all``'s small settings and its
summary, and a failing benchmark listed without stopping the others. The timings themselves
are benchmarks (docs/results.md), not tests."""
from __future__ import annotations

import typer

from gagavatar.bench import SMALL_SETTINGS, app, benchmarks, run_benchmarks, summary_rows
from gagavatar.bench.tables import Table


def test_summary_rows():
    collected = [("head", Table("head model forward (5,023 vertices)", ["model", "device", "batch", "ms"],
                                [["synthetic", "cpu", 1, 0.5], ["synthetic", "cpu", 64, 2.25]])),
                 ("track", Table("failed", ["error"], [["ImportError: no mediapipe"]]))]
    assert summary_rows(collected) == [
        ["head", "head model forward", "model=synthetic, device=cpu, batch=1", "ms 0.50"],
        ["head", "head model forward", "model=synthetic, device=cpu, batch=64", "ms 2.25"],
        ["track", "failed", "error=ImportError: no mediapipe", ""]]


def test_small_settings_name_real_benchmarks_and_options():
    commands = typer.main.get_command(app).commands
    assert benchmarks() == ["reenact", "head", "render", "cli", "data", "synth", "track", "serve", "speech"]
    for name, args in SMALL_SETTINGS.items():
        options = {o for p in commands[name].params for o in p.opts}
        assert {a for a in args if a.startswith("--")} <= options, name


def test_run_benchmarks_through_the_command_line():
    collected = run_benchmarks([("head", ["--no-such-option"]), ("cli", ["--repeat", "1"])])
    assert [(name, table.title) for name, table in collected] == [("head", "failed"),
                                                                  ("cli", "command line start-up")]
    assert "no-such-option" in collected[0][1].rows[0][0]
    assert collected[1][1].columns == ["command", "median s", "max s"]
    assert collected[1][1].rows[0][0] == "gagavatar --help" and collected[1][1].rows[0][1] > 0
