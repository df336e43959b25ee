"""The audio-file commands of ``stagevox``, for the command that composes them.

    stagevox process IN [IN ...] OUT [--preset NAME] [--effect SPEC]... [--copy]
    stagevox demo [--out DIR]
    stagevox effects [NAME]

``add_commands(sub, preset_loader)`` registers them on an argparse
subparsers object; the ``stagevox`` command itself (``stagevox.cli``) lives
above dsp, presets and engine and passes ``stagevox.presets.load`` as the
preset loader, so that this module imports nothing above ``stagevox.dsp``.
"""

import functools
import inspect
import math
import os
import re
import shlex
import shutil
import sys
import textwrap
from pathlib import Path

from . import batch, fileio, spec
from .audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .errors import ParameterError, StagevoxError
from .graph import Chain
from .processor import registry


class CliError(StagevoxError):
    """A user error: printed as one line, exit status 1."""


# ------------------------------------------------------------------- building fx

def build_fx(preset=None, effects=(), preset_loader=None):
    """The processor for ``--preset`` and ``--effect`` options (None if neither).

    ``preset_loader`` turns a preset name or file into a processor (the
    ``stagevox`` command passes ``stagevox.presets.load``).  Raises
    ``ParameterError`` (a ``ValueError``) for a bad effect, for a preset when
    there is no loader, and whatever the loader raises for a bad preset.
    """
    parts = []
    if preset:
        if preset_loader is None:
            raise ParameterError(f"preset {preset!r}: no preset loader was given")
        parts.append(preset_loader(preset))
    parts.extend(spec.build_effect(s) for s in effects)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Chain(*parts)


def _message(exc):
    """An error's text as the command line says it (``--overwrite``, not
    ``overwrite=True``)."""
    if isinstance(exc, fileio.OutputExistsError):
        return exc.message("--overwrite")
    return str(exc)


def _describe(report):
    text = (f"{report.src} -> {report.dst}: {report.seconds:.2f} s at {report.sample_rate} Hz, "
            f"{report.channels} channel{'s' if report.channels != 1 else ''}")
    if report.latency:
        text += f", latency {report.latency} samples compensated"
    if report.clipped_samples:
        text += (f"; warning: {report.clipped_samples} samples clipped at full scale "
                 "(add --effect limiter or lower the gain)")
    return text


def _rate_note(report, rate_option):
    """A note when the input was resampled without ``--sample-rate`` asking
    for it (stagevox processes 8-48 kHz), else None."""
    if rate_option is not None or report.source_rate in (None, report.sample_rate):
        return None
    return (f"stagevox: note: {report.src} is at {report.source_rate} Hz; it was processed "
            f"and written at {report.sample_rate} Hz (stagevox works from "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz; choose with --sample-rate)")


# ---------------------------------------------------------------------- commands

def cmd_process(args, preset_loader=None):
    """``stagevox process``: run files through ``--preset``/``--effect``; the exit status.

    Raises ``CliError`` for a bad option, preset, effect or file.
    """
    if args.block_size < 1:
        raise CliError(f"--block-size must be at least 1, got {args.block_size}")
    if args.sample_rate is not None:
        from .audio import check_sample_rate
        try:
            check_sample_rate(args.sample_rate)
        except ValueError as exc:
            raise CliError(f"--sample-rate: {exc}") from None
    if args.copy and (args.preset or args.effect):
        raise CliError("--copy writes the input unchanged; it cannot go with --preset or "
                       "--effect")
    if not (args.copy or args.preset or args.effect):
        raise CliError("say what to do: --preset NAME and/or --effect NAME[:key=value,...] "
                       "(see 'stagevox presets' and 'stagevox effects'), or --copy to "
                       "convert the file without effects")
    # Build once here so a bad preset or effect is reported before any work.
    try:
        build_fx(args.preset, args.effect, preset_loader)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    if args.scheduler and args.jobs is not None:
        raise CliError("--jobs is for local runs; with --scheduler the cluster's workers "
                       "set how many files run at once")

    *inputs, out = args.paths
    if not inputs:
        raise CliError("give an input and an output: stagevox process IN OUT")
    out = Path(out)
    if len(inputs) > 1 or out.is_dir() or args.paths[-1].endswith(os.sep):
        try:
            targets = batch.output_paths(inputs, out)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        out.mkdir(parents=True, exist_ok=True)
    else:
        targets = [out]
    if len(inputs) == 1 and not args.scheduler:
        return _run_single((inputs[0], str(targets[0]), args.preset, args.effect,
                            args.block_size, args.sample_rate, args.overwrite,
                            preset_loader), args.quiet)
    return _run_batch(list(zip(inputs, targets)), args, preset_loader)


def _progress_off(quiet):
    """True when no progress bar is drawn: ``--quiet``, or stderr is not a
    terminal (a log file would fill with carriage returns)."""
    return quiet or not sys.stderr.isatty()


def _run_single(job, quiet):
    src, dst, preset, effects, block_size, rate, overwrite, preset_loader = job
    bar = None
    progress = None
    if not _progress_off(quiet):
        from tqdm import tqdm
        bar = tqdm(unit="frame", unit_scale=True, desc=Path(src).name, leave=False,
                   file=sys.stderr)

        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
    try:
        fx = build_fx(preset, effects, preset_loader)
        report = fileio.process_file(src, dst, fx, block_size=block_size, sample_rate=rate,
                                     overwrite=overwrite, progress=progress)
    except (ValueError, OSError) as exc:
        raise CliError(_message(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        note = _rate_note(report, rate)
        if note:
            print(note, file=sys.stderr)
        print(_describe(report))
    return 0


def _run_batch(pairs, args, preset_loader):
    """Several files on the local cores, or on the Dask cluster of ``--scheduler``."""
    from tqdm import tqdm

    def show(result):
        if not result.ok:
            tqdm.write(f"stagevox: error: {result.error}", file=sys.stderr)
        elif not args.quiet:
            note = _rate_note(result.report, args.sample_rate)
            if note:
                tqdm.write(note, file=sys.stderr)
            tqdm.write(_describe(result.report), file=sys.stdout)

    client = None
    try:
        if args.scheduler:
            client = batch.connect(args.scheduler)
        results = batch.process_pairs(
            pairs, preset=args.preset, effects=args.effect, preset_loader=preset_loader,
            block_size=args.block_size, sample_rate=args.sample_rate,
            overwrite=args.overwrite, client=client, jobs=args.jobs,
            progress=not _progress_off(args.quiet), on_result=show,
            overwrite_hint="--overwrite")
    except (batch.ClusterError, ValueError) as exc:
        raise CliError(str(exc)) from None
    finally:
        if client is not None:
            client.close()
    failures = sum(not r.ok for r in results)
    if failures:
        print(f"stagevox: {failures} of {len(results)} files failed; the others were written",
              file=sys.stderr)
        return 1
    return 0


#: What ``stagevox demo`` runs: (output name, preset or None, effects).
DEMO_JOBS = (
    ("speech_voice_clarity", "voice_clarity", ()),
    ("speech_radio", "radio", ()),
    ("speech_telephone", "telephone", ()),
    ("speech_bass_boost_eq", None, ("equalizer:gains_db=[6,6,4,2,0,0,0,0,0,0]",
                                    "limiter:ceiling_db=-1")),
)


def cmd_demo(args, preset_loader=None):
    """Process the bundled speech sample through a few presets into ``--out``."""
    from importlib import resources

    from . import samples
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with resources.as_file(samples.speech_path()) as src:
        original = out / "speech.wav"
        report = fileio.process_file(src, original, None, overwrite=True)
        print(f"wrote {original}: the bundled speech sample ({report.seconds:.1f} s, "
              f"{report.sample_rate} Hz)")
        for name, preset, effects in DEMO_JOBS:
            dst = out / f"{name}.wav"
            fx = build_fx(preset, effects, preset_loader)
            report = fileio.process_file(src, dst, fx, overwrite=True)
            what = f"preset {preset}" if preset else "effects " + " ".join(effects)
            print(f"wrote {dst}: {what} (latency {report.latency} samples compensated)")
    print(f"done: listen to the files in {out}/ and compare with speech.wav")
    return 0


def plain_text(doc):
    """A docstring as plain text: indentation removed, ````code```` marks dropped."""
    return re.sub(r"``(.+?)``", r"\1", inspect.cleandoc(doc or ""))


def _paragraphs(text):
    """The paragraphs of ``text``, each joined into one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def command_value(value):
    """A parameter value as it is typed after ``--effect name:key=``: floats
    rounded to 3 decimals (3 significant digits below 1), ``true``/``false``,
    lists in brackets, strings bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value) or value == 0.0:
            return repr(value)
        return repr(float(f"{value:.3g}") if abs(value) < 1.0 else round(value, 3))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(command_value(v) for v in value) + "]"
    return str(value)


def _usage(cls):
    """One ``--effect`` option for ``cls``: its first two parameters at their defaults."""
    items = [f"{name}={command_value(p.default).replace(' ', '')}"
             for name, p in list(cls.parameters.items())[:2]]
    spec = cls.registry_name + (":" + ",".join(items) if items else "")
    return f"--effect {shlex.quote(spec)}"


def describe_effect(cls, full=False):
    """The text ``stagevox effects`` prints for the processor class ``cls``:
    its description (the first paragraph, or all of it with ``full``), each
    parameter with its default, type, range and unit, the other constructor
    arguments, and a usage line."""
    paragraphs = _paragraphs(plain_text(cls.__doc__)) or [cls.__name__]
    width = shutil.get_terminal_size((100, 24)).columns - 1
    lines = textwrap.wrap(f"{cls.registry_name}: {paragraphs[0]}", width,
                          subsequent_indent="    ")
    for para in paragraphs[1:] if full else ():
        lines += [""] + textwrap.wrap(para, width, initial_indent="    ",
                                      subsequent_indent="    ")
    if full:
        lines.append("")
    for name, p in cls.parameters.items():
        line = f"    {name} = {command_value(p.default)}  ({p.kind}, {p.range_text()})"
        lines.append(line + (f"  {p.doc}" if p.doc else ""))
    signature = inspect.signature(cls.__init__).parameters
    for name, doc in cls.arguments.items():
        default = signature[name].default if name in signature else None
        lines.append(f"    {name} = {'(none)' if default is None else command_value(default)}"
                     f"  {doc}")
    lines.append(f"    usage: {_usage(cls)}")
    return "\n".join(lines)


def cmd_effects(args):
    """``stagevox effects [NAME]``: describe every effect, or the one named.

    Raises ``CliError`` for an unknown name, listing the valid ones.
    """
    names = [n for n in sorted(registry) if n != "graph"]
    if args.name is not None:
        if args.name not in names:
            raise CliError(spec.unknown_name("effect", args.name, names))
        print(describe_effect(registry[args.name], full=True))
        return 0
    print("\n\n".join(describe_effect(registry[name]) for name in names))
    print("\nmore about one effect: stagevox effects NAME")
    return 0


# ------------------------------------------------------------------------ parser

def add_commands(sub, preset_loader=None):
    """Register ``process``, ``demo`` and ``effects`` on the subparsers ``sub``.

    ``preset_loader`` (a preset name or file -> processor, e.g.
    ``stagevox.presets.load``) serves ``--preset`` and ``demo``; without it
    they report that no preset loader was given.  Each command's ``run``
    returns the exit status and raises ``CliError`` for a user error.
    """
    p = sub.add_parser(
        "process", help="run audio files through effects or a preset",
        description="Run audio files through a preset and/or effects. With several inputs, "
                    "OUT is a folder and the files are processed in parallel.",
        epilog="example: stagevox process in.wav out.wav "
               "--effect 'equalizer:gains_db=[6,0,0,0,0,0,0,0,0,-3]' "
               "--effect limiter:ceiling_db=-1")
    p.add_argument("paths", nargs="+", metavar="IN ... OUT",
                   help="input file(s), then the output file or folder")
    p.add_argument("--preset", metavar="NAME", help="a preset name or .toml file (runs first)")
    p.add_argument("--effect", action="append", default=[], metavar="NAME[:key=value,...]",
                   help="an effect; repeat to chain in order (see 'stagevox effects')")
    p.add_argument("--block-size", type=int, default=fileio.DEFAULT_BLOCK_SIZE, metavar="N",
                   help=f"frames per block (default {fileio.DEFAULT_BLOCK_SIZE})")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                   help="process and write at this rate (default: the input's, 8-48 kHz)")
    p.add_argument("--copy", action="store_true",
                   help="no effects: convert the input to OUT's format (and --sample-rate)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="parallel workers for several files (default: all cores)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="process the files on the Dask cluster of this scheduler instead of "
                        "the local cores (pip install 'stagevox[distributed]'); its workers "
                        "need stagevox and must read the inputs and write the outputs at the "
                        "same paths (a shared filesystem)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(run=functools.partial(cmd_process, preset_loader=preset_loader))

    p = sub.add_parser("demo", help="process the bundled speech sample through presets")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.set_defaults(run=functools.partial(cmd_demo, preset_loader=preset_loader))

    p = sub.add_parser("effects", help="list effects with their parameters",
                       description="Describe every effect (or the one named): its "
                                   "parameters with default, range and unit, and a usage line.")
    p.add_argument("name", nargs="?", metavar="NAME", help="one effect to describe in full")
    p.set_defaults(run=cmd_effects)
