"""The ``stagevox presets`` command, for the command that composes it.

``add_commands(sub)`` registers it on an argparse subparsers object; the
``stagevox`` command itself lives in ``stagevox.cli``.
"""

import sys

from . import USER_DIR_ENV, PresetError, bundled_names, describe, names, user_dir, user_names


def cmd_presets(args):
    """``stagevox presets``: print every preset, one a line: name, description.

    Presets from the user preset folder are marked ``[user]`` (and
    ``[user, replaces bundled]`` when a bundled preset has the same name);
    where that folder is goes to stderr.  A user preset that cannot be read
    is listed with the error instead of its description.
    """
    bundled, user = set(bundled_names()), set(user_names())
    for name in names():
        try:
            text = describe(name)
        except PresetError as e:
            text = f"(cannot be read: {e})"
        if name in user:
            text += "  [user, replaces bundled]" if name in bundled else "  [user]"
        print(f"{name}  {text}")
    print(f"user presets ({len(user)}) are read from {user_dir()} (set {USER_DIR_ENV} to "
          f"use another folder); a user preset replaces a bundled one of the same name",
          file=sys.stderr)
    return 0


def add_commands(sub):
    """Register ``presets`` on the subparsers ``sub``."""
    p = sub.add_parser("presets", help="list presets, one a line: name, description "
                                       "(user presets marked [user])")
    p.set_defaults(run=cmd_presets)
