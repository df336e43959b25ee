"""The ``stagevox presets`` command, for the command that composes it.

``add_commands(sub)`` registers it on an argparse subparsers object; the
``stagevox`` command itself lives in ``stagevox.cli``.
"""

from . import describe, names


def cmd_presets(args):
    """``stagevox presets``: print every preset, one a line: name, description."""
    for name in names():
        print(f"{name}  {describe(name)}")
    return 0


def add_commands(sub):
    """Register ``presets`` on the subparsers ``sub``."""
    p = sub.add_parser("presets", help="list presets, one a line: name, description")
    p.set_defaults(run=cmd_presets)
