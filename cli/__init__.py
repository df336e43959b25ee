"""The ``stagevox`` command: the commands of dsp, presets and engine in one.

    stagevox process IN [IN ...] OUT [--preset NAME] [--effect SPEC]...
    stagevox demo [--out DIR]
    stagevox effects [NAME]
    stagevox --version
    stagevox presets
    stagevox server | token | host | listen | talk | devices    (the live channel)

This package sits above ``stagevox.dsp``, ``stagevox.presets`` and
``stagevox.engine``: each of them registers its own subcommands
(``add_commands(sub)``) and this module composes them, gives the audio-file
commands the preset loader, and turns user errors into one line on stderr.
Run it as the ``stagevox`` console script or ``python -m stagevox.cli``.
"""

import argparse
import importlib.metadata
import os
import sys

from stagevox import presets
from stagevox.dsp import cli as dsp_cli
from stagevox.engine import cli as engine_cli
from stagevox.presets import cli as presets_cli

__all__ = ["DEMO_JOBS", "CliError", "build_fx", "build_parser", "main"]

CliError = dsp_cli.CliError
DEMO_JOBS = dsp_cli.DEMO_JOBS


def build_fx(preset=None, effects=()):
    """The processor for ``--preset`` and ``--effect`` options (None if neither).

    ``preset``: a preset name or TOML path; ``effects``: ``--effect`` specs
    (``name:key=value,...``), run in order after the preset.

    Raises ``ValueError`` (``PresetError`` or ``ParameterError``) for an
    unknown or invalid preset or effect.
    """
    return dsp_cli.build_fx(preset, effects, preset_loader=presets.load)


def _version():
    """The installed distribution's version."""
    try:
        return importlib.metadata.version("stagevox")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def build_parser():
    """The argparse parser of ``stagevox`` with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="stagevox", description="stagevox: live interactive audio toolkit.")
    parser.add_argument("--version", action="version", version=f"stagevox {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    dsp_cli.add_commands(sub, preset_loader=presets.load)
    presets_cli.add_commands(sub)
    engine_cli.add_commands(sub)
    return parser


def main(argv=None):
    """Entry point of the ``stagevox`` console script; returns the exit status.

    ``argv`` defaults to ``sys.argv[1:]``.  No command prints the help and
    returns 0; a user error prints ``stagevox: error: ...`` and returns 1;
    bad usage exits with status 2 (argparse's ``SystemExit``); Ctrl+C
    returns 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except CliError as exc:
        print(f"stagevox: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("stagevox: interrupted; no partial output was kept", file=sys.stderr)
        return 130
