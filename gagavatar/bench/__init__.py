"""``gagavatar bench``: speed and memory benchmarks, printed as tables.

Each sub-command measures one stage and returns its tables (``tables.Table``); ``bench
all`` runs every one of them through the command line and sums them up. Targets live
here, not in unit tests. The modules: ``tables`` (what they share), ``model`` (reenact,
head), ``render``, ``tracking`` (track, synth, data), ``service`` (serve, cli), ``speech``.
"""
from __future__ import annotations

import click
import typer

from gagavatar.bench import model, render, service, speech, tracking
from gagavatar.bench.tables import Table, console, show
from gagavatar.system import machine_description

app = typer.Typer(help="Speed and memory benchmarks.", no_args_is_help=True)
app.command("reenact")(model.reenact)
app.command("head")(model.head)
app.command("render")(render.render)
app.command("cli")(service.cli)
app.command("data")(tracking.data)
app.command("synth")(tracking.synth)
app.command("track")(tracking.track)
app.command("serve")(service.serve)
app.command("speech")(speech.speech)

# ``bench all``'s small settings: command-line options per benchmark ("render" adds the
# paper scale where there is a GPU).
SMALL_SETTINGS = {
    "render": ["--scales", "tiny", "--repeat", "2"],
    "reenact": ["--batches", "1", "--repeat", "2"],
    "head": ["--batches", "1,64", "--repeat", "5"],
    "synth": ["--frames", "64"],
    "track": ["--frames", "48"],
    "serve": ["--frames", "150", "--webcam-frames", "60"],
    "speech": ["--seconds", "4"],
}


def benchmarks() -> list[str]:
    """The benchmarks ``bench all`` runs, in the order ``bench --help`` lists them."""
    return [c.name for c in app.registered_commands if c.name != "all"]


def run_benchmarks(runs: list[tuple[str, list[str]]]) -> list[tuple[str, Table]]:
    """Run each ``(benchmark, command-line options)`` as ``gagavatar bench`` would, and return
    ``(benchmark, table)`` for every table they returned. A benchmark that fails gives a
    table titled "failed" with its error; the others go on. Each one starts on the cores and
    torch threads of the caller (a benchmark may pin the process to a few)."""
    import os

    import torch

    from gagavatar.system import set_torch_threads

    command = typer.main.get_command(app)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    collected = []
    for name, args in runs:
        console.rule(f"gagavatar bench {' '.join([name, *args])}")
        try:
            result = command.main([name, *args], prog_name="gagavatar bench", standalone_mode=False)
            if not isinstance(result, list):  # typer.Exit: its status
                raise RuntimeError(f"exited with status {result}")
            collected += [(name, table) for table in result]
        except click.exceptions.Abort as e:  # Ctrl-C: stop them all
            raise KeyboardInterrupt from e
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others
            console.print(f"[red]bench {name} failed: {type(e).__name__}: {e}[/red]")
            collected.append((name, Table("failed", ["error"], [[f"{type(e).__name__}: {e}"]])))
        finally:
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
            set_torch_threads(threads)
    return collected


def summary_rows(collected: list[tuple[str, Table]]) -> list[list[str]]:
    """One row per measured case: [benchmark, table, case (the text columns), results (the numbers)]."""
    out = []
    for name, table in collected:
        for r in table.rows:
            case = ", ".join(f"{c}={v}" for c, v in zip(table.columns, r) if not isinstance(v, float))
            results = ", ".join(f"{c} {v:.2f}" for c, v in zip(table.columns, r) if isinstance(v, float))
            out.append([name, table.title.split(" (")[0].split(",")[0], case, results])
    return out


@app.command("all")
def run_all(full: bool = typer.Option(False, help="each benchmark's own defaults instead of the small settings"),
            out: str = typer.Option(None, help="also write the summary table to this markdown file")):
    """Run every other benchmark (small settings unless --full), then one summary table of
    all of them with the machine description. A benchmark that fails is listed with its error."""
    import torch

    small = dict(SMALL_SETTINGS)
    if torch.cuda.is_available():
        small["render"] = ["--scales", "paper,tiny", "--repeat", "2"]
    collected = run_benchmarks([(name, [] if full else small.get(name, [])) for name in benchmarks()])
    console.rule("summary")
    summary = Table("gagavatar bench all" + (" (full settings)" if full else " (small settings)"),
                    ["benchmark", "table", "case", "results (ms, frames/s, MiB, ...)"], summary_rows(collected))
    show(summary)
    if out:
        from pathlib import Path

        lines = [f"# gagavatar bench all{' --full' if full else ''}", "", f"Machine: {machine_description()}", "",
                 "| " + " | ".join(summary.columns) + " |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in summary.rows]
        Path(out).write_text("\n".join(lines) + "\n")
        console.print(f"wrote {out}")
    return [summary]
