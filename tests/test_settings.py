"""Config dataclasses as command lines (`gagavatar.settings`): each default and help line is
written once, in the dataclass, and the command parses into the dataclass itself."""
from __future__ import annotations  # string annotations, as the package writes them

from dataclasses import dataclass

import typer
from typer.testing import CliRunner

from gagavatar.settings import cli_fields, command_options, setting


@dataclass
class Example:
    name: str = setting("", "what to run", required=True)
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8765, "port to listen on", min=0, max=65535)
    origins: tuple[str, ...] = setting((), "an allowed origin (repeatable)", flag="--allowed-origin")
    token: str | None = setting(None, "a secret", envvar="EXAMPLE_TOKEN")
    rate: float = setting(30.0, "frames per second")
    internal: int = setting(5, "not an option", cli=False)


def app_of(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @command_options(Example)
    def run(config: Example, verbose: bool = typer.Option(False, help="say more")):
        seen.append((config, verbose))

    @app.command()
    def other():  # a second command, so typer keeps "run" as a sub-command
        pass

    return app


def test_options_come_from_the_dataclass_and_parse_into_it(monkeypatch):
    seen = []
    monkeypatch.setenv("EXAMPLE_TOKEN", "s3cret")
    result = CliRunner().invoke(app_of(seen), ["run", "--name", "a", "--port", "9000",
                                               "--allowed-origin", "https://a.example",
                                               "--allowed-origin", "https://b.example", "--rate", "12.5",
                                               "--verbose"])
    assert result.exit_code == 0, result.output
    config, verbose = seen[0]
    assert config == Example(name="a", port=9000, origins=("https://a.example", "https://b.example"),
                             token="s3cret", rate=12.5)
    assert verbose is True and config.internal == 5


def test_defaults_help_and_bounds(monkeypatch):
    seen = []
    monkeypatch.delenv("EXAMPLE_TOKEN", raising=False)
    runner = CliRunner()
    assert runner.invoke(app_of(seen), ["run", "--name", ""]).exit_code == 0 and seen[0][0] == Example()
    missing = runner.invoke(app_of([]), ["run"])
    assert missing.exit_code == 2 and "Missing option '--name'" in missing.output
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps help text at the terminal width
    help_text = runner.invoke(app_of([]), ["run", "--help"]).output
    for field in cli_fields(Example):
        assert field.metadata["setting"]["help"] in help_text
    assert "--internal" not in help_text and "--allowed-origin" in help_text and "8765" in help_text
    refused = runner.invoke(app_of(seen), ["run", "--name", "a", "--port", "70000"])
    assert refused.exit_code == 2 and "--port" in refused.output and "65535" in refused.output and len(seen) == 1


def test_command_lists_show_each_commands_first_paragraph_as_one_line(monkeypatch):
    """`gagavatar --help` and `gagavatar bench --help` list each command with its docstring's first
    paragraph, not broken where the docstring's lines break."""
    import inspect

    from gagavatar.cli import app, bench_app

    monkeypatch.setenv("COLUMNS", "400")  # no wrapping: each command's row is one line
    for args, commands in ((["--help"], app.registered_commands), (["bench", "--help"], bench_app.registered_commands)):
        rows = CliRunner().invoke(app, args).output.splitlines()
        for command in commands:
            name = command.name or command.callback.__name__.replace("_", "-")
            first = " ".join(inspect.cleandoc(command.callback.__doc__).split("\n\n")[0].split())
            row = next(r for r in rows if r.split("│")[1:2] and r.split("│")[1].split()[:1] == [name])
            assert first in row, (name, row)
