"""The ``gagavatar`` command line. Commands import their implementation lazily,
so ``gagavatar --help`` stays fast."""
from __future__ import annotations

import typer

from gagavatar.bench import app as bench_app

app = typer.Typer(help="GAGAvatar: one photo in, an animatable 3D Gaussian head avatar out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
