"""One look for both command lines, ``medvill-prep`` and ``medvill``: rich log lines on stderr,
errors as ``error: <what and which file>`` with exit code 2, and the same app-level options
(``--verbose/--quiet``, ``--version``) on each app's callback.

It lives in ``pipeline/`` because ``medvill-prep`` must run without torch; ``medvill`` imports
it from here.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

#: Loggers of both packages (pipeline modules also log under "medvill").
LOGGERS: tuple[str, ...] = ("medvill", "pipeline")
#: Exit code of every handled error: bad input or a missing file, as typer's usage errors.
ERROR_EXIT = 2

console = Console(stderr=True)


def str_enum(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A ``str`` Enum of ``values`` for a typer option, so ``--help`` lists the choices and a
    typo is rejected with them. Built from the tuple the code already checks against, so the
    CLI cannot drift from it."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


def log_level(verbose: bool | None) -> int:
    """``--verbose`` → DEBUG, ``--quiet`` → WARNING, neither → INFO."""
    if verbose is None:
        return logging.INFO
    return logging.DEBUG if verbose else logging.WARNING


def setup_logging(verbose: bool | None = None) -> None:
    """Send both packages' log records to stderr: rich lines in a terminal, plain timestamped
    lines in CI, DVC logs and pipes. Calling it again replaces the handler (tests run many
    commands in one process) instead of stacking another one."""
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=console, show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name("medvill-cli")
    level = log_level(verbose)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == "medvill-cli"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)


def quiet() -> bool:
    """Whether ``--quiet`` is in effect (info lines such as stage summaries are dropped)."""
    return logging.getLogger(LOGGERS[0]).getEffectiveLevel() > logging.INFO


def info(message: str) -> None:
    """A progress/result line for people (stderr, rich markup); silent under ``--quiet``."""
    if not quiet():
        console.print(message)


def fail(message: str) -> NoReturn:
    """Stop the command with ``error: message`` and exit code 2."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=ERROR_EXIT)


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures of a command (a missing file, a bad value, an unknown
    name) into :func:`fail`; anything else is a bug and keeps its traceback."""
    try:
        yield
    except kinds as error:
        logging.getLogger(LOGGERS[0]).debug("traceback of the error below", exc_info=True)
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        fail(str(message))


def add_app_options(app: typer.Typer, prog: str, version: str) -> None:
    """Register the callback every app shares: ``--verbose/--quiet`` and ``--version``."""

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{prog} {version}")
            raise typer.Exit()

    # Options as defaults, not Annotated: the closure's callback must not be looked up by name
    # (annotations are strings under `from __future__ import annotations`).
    def callback(
        verbose: bool | None = typer.Option(
            None,
            "--verbose/--quiet",
            "-v/-q",
            help="--verbose: debug logging; --quiet: warnings and errors only. Default: info.",
            show_default=False,
        ),
        version_flag: bool = typer.Option(
            False,
            "--version",
            callback=show_version,
            is_eager=True,
            help=f"Print the {prog} version and exit.",
        ),
    ) -> None:
        setup_logging(verbose)

    app.callback()(callback)


__all__: list[str] = [
    "ERROR_EXIT",
    "add_app_options",
    "console",
    "fail",
    "info",
    "log_level",
    "quiet",
    "setup_logging",
    "str_enum",
    "user_errors",
]
