"""The sound-card commands of the live channel: a microphone and a speaker
instead of files.

    stagevox devices
    stagevox host ... --input mic [--device NAME] [--duration S] [--music FILE] ...
    stagevox listen ... --output speaker [--device NAME] [--duration S]
    stagevox talk --server H:P --channel C --uid N [--token T] [--device NAME]
                  [--input-device NAME] [--output-device NAME] [--preset NAME]
                  [--monitor] [--duration S]

``talk`` is a full member: it joins as host, sends the microphone through the
local effects and plays the room (with ``--monitor``, one's own processed
voice too).  Without ``--duration`` a command runs until Ctrl+C or SIGTERM,
then leaves the channel.  A device is a name (or part of one, case ignored)
or an index from ``stagevox devices``; without one, the default.  The
options common to the channel commands, and their errors and exit status,
are those of ``engine.cli``; ``engine.cli`` calls ``host_mic`` and
``listen_speaker`` for ``--input mic`` and ``--output speaker``.
"""

import argparse
import math
import time

from . import cli, devices
from .client import Client
from .rtp import CLOCK_RATE

#: ``--input`` and ``--output`` values that mean the sound card.
MIC = "mic"
SPEAKER = "speaker"
#: How often the command looks at the link, seconds.
POLL_S = 0.1


def _spec(text):
    """A ``--device`` value for ``devices.find_device``: None -> the default."""
    return True if text is None else text


def _find(text, kind, option):
    """The ``DeviceInfo`` of ``--device``-like option text; ``CommandError`` if none."""
    try:
        return devices.find_device(_spec(text), kind)
    except devices.DeviceError as exc:
        raise cli.CommandError(f"{option}: {exc}") from None


def _check_duration(duration):
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise cli.CommandError(f"--duration must be a positive number of seconds, "
                               f"got {duration}")


def cmd_devices(args):
    """Print the sound devices PortAudio sees (``*``: a default)."""
    try:
        found = devices.list_devices()
    except devices.DeviceError as exc:
        raise cli.CommandError(str(exc)) from None
    if not found:
        print("no sound devices (PortAudio sees none)", flush=True)
        return 0
    print("   #  channels in/out    rate      host API  name", flush=True)
    for line in devices.describe_devices(found):
        print(line, flush=True)
    return 0


def _latency(text):
    """``--device-latency``: "low", "high" or seconds."""
    if text in ("low", "high"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be low, high or seconds, got {text!r}") from None


def _run(client, events, label, duration, **link_options):
    """Run the sound card on ``client`` for ``duration`` seconds (None: until
    Ctrl+C/SIGTERM); returns ``(seconds, device stats)``."""
    try:
        link = client.start_audio_device(**link_options)
    except ValueError as exc:           # DeviceError is one too
        raise cli.CommandError(str(exc)) from None
    names = " and ".join(f"{kind} {getattr(link, kind).name!r}" for kind in ("input", "output")
                         if getattr(link, kind) is not None)
    cli._note(f"{label}: {names} running; Ctrl+C to stop")
    progress = cli._Progress(label, duration)
    started = time.monotonic()
    try:
        with cli._stop_on_signals():
            try:
                while duration is None or time.monotonic() - started < duration:
                    left = POLL_S if duration is None else duration - (time.monotonic() - started)
                    time.sleep(min(POLL_S, max(0.0, left)))
                    cli._check_removed(events)
                    s = link.stats()
                    progress.update(time.monotonic() - started,
                                    f"{s['overruns']} over-runs, {s['underruns']} under-runs")
            except cli._Stop as exc:
                cli._note(f"{label}: stopped by {exc}")
    finally:
        progress.close()
        client.stop_audio_device()
    return time.monotonic() - started, link.stats()


def _describe(s):
    """The device statistics in one phrase."""
    parts = [f"{s['overruns']} over-runs ({s['dropped_ms']:.0f} ms dropped)"
             if s["input_device"] else None,
             f"{s['underruns']} under-runs ({s['silence_ms']:.0f} ms silent)"
             if s["output_device"] else None,
             f"input delay {s['input_latency_ms']:.1f} ms" if s["input_device"] else None,
             f"output delay {s['output_latency_ms']:.1f} ms" if s["output_device"] else None]
    return ", ".join(p for p in parts if p)


def _voice(client, args):
    """Apply ``--volume``/``--preset`` (those the command has) to ``client``."""
    try:
        if getattr(args, "volume", None) is not None:
            client.adjust_recording_signal_volume(args.volume)
        if getattr(args, "preset", None):
            client.set_audio_effect_preset(args.preset)
    except ValueError as exc:
        raise cli.CommandError(str(exc)) from None


def _member(client, args, role, label, **link_options):
    """Join in ``role``, run the sound card (``_run``), leave; returns
    ``(seconds, device stats, client stats)``."""
    events = cli._join(client, args, role, label)
    try:
        seconds, device = _run(client, events, label, args.duration, **link_options)
        stats = client.stats()
    finally:
        client.leave_channel()
    return seconds, device, stats


def host_mic(args):
    """``stagevox host --input mic``: join as host and speak from the microphone,
    with the other ``host`` options (``--music``, ``--relay``, ``--publish-url``,
    ``--audio-profile``) as with a file."""
    _check_duration(args.duration)
    device = _find(args.device, "input", "--device")
    client = Client(sample_rate=CLOCK_RATE, channels=1)
    cli._apply_host_options(client, args)
    destinations = cli._relay_destinations(args)
    with cli._hosting(client, args, destinations) as events:
        seconds, s = _run(client, events, "host", args.duration, input=device.index,
                          latency=args.device_latency)
        stats = client.stats()
    print(f"host: sent {seconds:.1f} s from {device.name!r} in {stats['packets_sent']} "
          f"packets; {_describe(s)}", flush=True)
    return 0


def listen_speaker(args):
    """``stagevox listen --output speaker``: join as audience and play the room."""
    _check_duration(args.duration)
    device = _find(args.device, "output", "--device")
    try:
        client = Client(sample_rate=args.sample_rate, channels=args.channels)
    except ValueError as exc:
        raise cli.CommandError(f"--sample-rate: {exc}") from None
    seconds, s, stats = _member(client, args, "audience", "listen", output=device.index,
                                latency=args.device_latency)
    heard = cli._Heard()
    heard.update(stats)
    print(f"listen: played {seconds:.1f} s on {device.name!r}; {heard.describe()}; "
          f"{_describe(s)}", flush=True)
    return 0


def cmd_talk(args):
    """Join as host: the microphone up, the room down, until Ctrl+C or ``--duration``."""
    _check_duration(args.duration)
    mic = _find(args.input_device or args.device, "input",
                "--input-device" if args.input_device else "--device")
    speaker = _find(args.output_device or args.device, "output",
                    "--output-device" if args.output_device else "--device")
    client = Client(sample_rate=CLOCK_RATE, channels=1)
    _voice(client, args)
    seconds, s, stats = _member(client, args, "host", "talk", input=mic.index,
                                output=speaker.index, monitor=args.monitor,
                                latency=args.device_latency)
    heard = cli._Heard()
    heard.update(stats)
    print(f"talk: {seconds:.1f} s, sent {stats['packets_sent']} packets; {heard.describe()}; "
          f"{_describe(s)}", flush=True)
    return 0


def _latency_option(p):
    p.add_argument("--device-latency", type=_latency, default="low", metavar="low|high|S",
                   help="the sound card's buffering: low (default), high or seconds; more "
                        "avoids over- and under-runs on a busy machine, at that much delay")


def add_device_options(p, kind):
    """Add ``--device`` to the parser ``p`` of ``host`` (``kind`` "input", for
    ``--input mic``; with ``--duration`` too) or ``listen`` ("output", for
    ``--output speaker``)."""
    p.add_argument("--device", metavar="NAME",
                   help=f"with --{'input mic' if kind == 'input' else 'output speaker'}: "
                        f"the {kind} device, a name or index from 'stagevox devices' "
                        "(default: the system's default)")
    _latency_option(p)
    if kind == "input":
        p.add_argument("--duration", type=float, metavar="S",
                       help="with --input mic: seconds to speak (default: until Ctrl+C)")


def add_commands(sub):
    """Register ``devices`` and ``talk`` on the subparsers ``sub``."""
    p = sub.add_parser("devices", help="list the sound devices (microphones, speakers)",
                       description="List the sound devices PortAudio sees: index, input and "
                                   "output channels, default rate, host API and name; * marks "
                                   "a default.")
    p.set_defaults(run=cli._guard(cmd_devices))

    p = sub.add_parser(
        "talk", help="join a channel as host with the microphone and the speaker",
        description="Join a channel as host: send the microphone (through --preset) and "
                    "play the room, until Ctrl+C, SIGTERM or --duration.",
        epilog="example: stagevox talk --server 127.0.0.1:5000 --server-key KEY --channel room "
               "--uid 3 --token $(stagevox token --channel room --uid 3 --role host) "
               "--preset ktv --monitor")
    cli._client_options(p, "host")
    p.add_argument("--device", metavar="NAME",
                   help="the sound card for both ways, a name or index from 'stagevox "
                        "devices' (default: the system's defaults)")
    p.add_argument("--input-device", metavar="NAME", help="the microphone, if another")
    p.add_argument("--output-device", metavar="NAME", help="the speaker, if another")
    p.add_argument("--preset", metavar="NAME", help="a voice preset (see 'stagevox presets')")
    _latency_option(p)
    p.add_argument("--monitor", action="store_true",
                   help="hear one's own processed voice with the room")
    p.add_argument("--duration", type=float, metavar="S",
                   help="seconds to stay (default: until Ctrl+C)")
    p.set_defaults(run=cli._guard(cmd_talk))
