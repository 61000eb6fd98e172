"""Configuration dataclasses that are also command lines.

A config field declared with ``setting`` carries its help text; ``command_options`` turns
the dataclass into a typer command's options, so each default and each help line is
written once, in the dataclass (as LivePortrait derives its CLI from its config):

    @dataclass
    class ServeConfig:
        port: int = setting(8765, "port to listen on", min=1, max=65535)

    @app.command()
    @command_options(ServeConfig)
    def serve(config: ServeConfig): ...

Typer reads the wrapper's signature: one ``--option`` per field (``--max-fps``; a
``tuple[str, ...]`` field is a repeatable option; ``flag`` renames one), each with its
default, help, bounds, check and environment variable. Modules that declare such configs
import no torch, so ``gagavatar --help`` stays fast.

Options are validated where they are parsed, one way for every command: a range with
typer's ``min`` / ``max``, anything else (a device the machine has, a size its memory
holds) with ``checked(fn)``, the one callback helper (``setting(..., check=fn)`` uses it).
A refused option is one line and exit status 2 (``cli``).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing


def setting(default, help: str, *, flag: str | None = None, envvar: str | None = None,
            min: float | None = None, max: float | None = None, check=None, cli: bool = True,  # noqa: A002
            required: bool = False):
    """A dataclass field with its command-line help. ``flag``: the option's name when not
    ``--field-name``; ``envvar``: read from this environment variable; ``min`` / ``max``: bounds
    and ``check(value) -> value`` (``checked``) applied where the option is parsed; ``cli=False``:
    not an option; ``required``: the command line must give it (``default`` is the dataclass's)."""
    meta = {"help": help, "flag": flag, "envvar": envvar, "min": min, "max": max, "check": check, "cli": cli,
            "required": required}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (immutable) default for a setting")
    return dataclasses.field(default=default, metadata={"setting": meta})


def checked(check):
    """The typer callback of an option checked by ``check(value) -> value`` (which raises
    ValueError with one line naming the option and the fix): the refusal is a usage error where
    the option is parsed, before the command runs. An option left unset (None) is not checked."""
    import typer

    def callback(value):
        if value is None:
            return value
        try:
            return check(value)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None

    return callback


def whole_numbers(text: str, low: int = 1) -> str:
    """``text`` when it is comma-separated whole numbers of at least ``low`` ("1,8": batch sizes,
    worker counts); else one line saying so. A ``checked`` check."""
    try:
        numbers = [int(x) for x in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < low:
        raise ValueError(f"{text!r}: give comma-separated whole numbers of at least {low}, e.g. {low},8")
    return text


def _option_type(annotation):
    """The type typer parses for a field's annotation: ``X | None`` -> X, ``tuple[X, ...]`` -> list[X]."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _option_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return list[args[0]]
    return annotation


def cli_fields(config_cls) -> list[dataclasses.Field]:
    """The fields of ``config_cls`` that are command-line options (declared with ``setting``)."""
    return [f for f in dataclasses.fields(config_cls) if f.metadata.get("setting", {}).get("cli")]


def command_options(config_cls, **overrides):
    """Decorator: ``fn(config, **rest)`` becomes a typer command whose options are the
    ``setting`` fields of ``config_cls`` (plus ``fn``'s other parameters, as declared).
    ``overrides``: field -> default for this command only."""
    import typer

    hints = typing.get_type_hints(config_cls)

    def decorate(fn):
        own = [p for name, p in inspect.signature(fn).parameters.items() if name != "config"]
        params = []
        for f in cli_fields(config_cls):
            meta = f.metadata["setting"]
            default = overrides.get(f.name, f.default)
            kind = _option_type(hints[f.name])
            names = [meta["flag"]] if meta["flag"] else []
            if meta["required"]:
                default = ...
            option = typer.Option(list(default) if isinstance(default, tuple) else default, *names,
                                  help=meta["help"], envvar=meta["envvar"], show_envvar=bool(meta["envvar"]),
                                  min=meta["min"], max=meta["max"],
                                  callback=checked(meta["check"]) if meta["check"] else None)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=kind))

        @functools.wraps(fn)
        def command(**kwargs):
            fields = {f.name: kwargs.pop(f.name) for f in cli_fields(config_cls)}
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
            return fn(config_cls(**fields), **kwargs)

        command.__signature__ = inspect.Signature(  # the config's options first, then the command's own
            params + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own])
        # typer must read the signature above, not fn's (wraps copied fn's annotations, as strings)
        command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
        del command.__wrapped__
        return command

    return decorate
