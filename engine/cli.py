"""The live channel's command line: ``stagevox server | token | host | listen | inject |
gateway`` (and, in ``device_cli``, the sound card: ``devices``, ``talk``, ``--input mic``,
``--output speaker``).

    stagevox server [--host H] --port P [--max-hosts N] [--member-timeout S]
                    [--publish CHANNEL=rtmp://...]...
    stagevox token --channel C --uid N --role host|audience [--expire-s S]
    stagevox host --server H:P --channel C --uid N [--token T] --input FILE
                  [--preset NAME] [--loop] [--volume 0-400]
                  [--music FILE_OR_URL [--music-volume 0-100]] [--audio-profile NAME]
                  [--publish-url rtmp://...]...
    stagevox listen --server H:P --channel C --uid N [--token T] --output FILE
                    --duration S
    stagevox inject --server H:P --channel C [--uid N] [--token T] --url URL
    stagevox gateway --server H:P --server-key KEY [--http-host H] [--http-port 8080]
                     [--share-listeners]

The server's secret comes from the environment variable ``STAGEVOX_SECRET``;
a client's token from ``--token`` or ``STAGEVOX_TOKEN``.  ``add_commands``
registers the six subcommands on the parser of the ``stagevox`` command
(``stagevox.cli``).

Exit status: 0 done, 1 a refused join or another error (one line on stderr
says why), 2 a usage error (bad arguments, no secret).
"""

import contextlib
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from stagevox.dsp import fileio
from stagevox.dsp.errors import StagevoxError

from . import publish_cli, session
from .client import Client, RefusedError
from .media_relay import MAX_DESTINATIONS, RelayDestination
from .inject import MAX_RETRIES, StreamInjector
from .pacing import FRAME_S, Pacer
from .profiles import PROFILES
from .rtp import CLOCK_RATE
from .server import Server
from .token import make_token
from .transport import format_address

SECRET_ENV = "STAGEVOX_SECRET"
TOKEN_ENV = "STAGEVOX_TOKEN"
SERVER_KEY_ENV = "STAGEVOX_SERVER_KEY"
KEY_FILE_ENV = "STAGEVOX_KEY_FILE"
#: Frames read from the input file at a time.
READ_BLOCK = 4800
#: Silence a host sends after its file, seconds: more than a listener's
#: jitter buffer holds, so the end of the file is heard before the host leaves.
TAIL_S = 0.2


class CommandError(StagevoxError):
    """A user error: printed as one line on stderr; ``status`` is the exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class _Stop(Exception):
    """Raised in the main thread by SIGINT/SIGTERM while the server runs."""


# ------------------------------------------------------------------ helpers

def parse_address(text):
    """``"HOST:PORT"`` (or ``"[IPv6]:PORT"``) as ``(host, port)``.

    Raises ``CommandError`` when there is no port or the port is not a whole
    number in 1..65535.
    """
    host, sep, port = str(text).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise CommandError(f"--server must be HOST:PORT with a port in 1..65535 "
                           f"(e.g. 127.0.0.1:5000), got {text!r}")
    return host, int(port)


def _secret():
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise CommandError(f"set the environment variable {SECRET_ENV} to the channel secret "
                           f"(any non-empty string; the server and 'stagevox token' must share "
                           f"it), e.g. export {SECRET_ENV}=$(openssl rand -hex 16)", status=2)
    return secret


def _token(args):
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise CommandError(f"give a token with --token or the environment variable {TOKEN_ENV} "
                           f"(make one with: stagevox token --channel {args.channel} "
                           f"--uid {args.uid} --role {args.command_role})")
    return token


def default_key_file():
    """Where ``stagevox server`` keeps its key pair unless told: ``$STAGEVOX_KEY_FILE``,
    else ``server.key`` in the user's config folder (``$XDG_CONFIG_HOME/stagevox``,
    by default ``~/.config/stagevox``)."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "stagevox" / "server.key"


def _server_key(args):
    key = args.server_key or os.environ.get(SERVER_KEY_ENV, "")
    if not key:
        raise CommandError(f"give the server's public key with --server-key or the environment "
                           f"variable {SERVER_KEY_ENV} ('stagevox server' prints it at start, "
                           f"on the line 'server key ...')")
    try:
        return session.parse_public_key(key)
    except session.SessionError as exc:
        raise CommandError(f"--server-key: {exc}") from None


def _log_membership(quiet):
    """Send the server's membership lines (joins, leaves, role changes,
    refusals) to stderr, one a line with the time, unless ``quiet``."""
    logger = logging.getLogger("stagevox.engine")
    if not any(getattr(h, "stagevox_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.stagevox_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _note(text):
    """One line of progress or news on stderr."""
    print(text, file=sys.stderr, flush=True)


class _Progress:
    """Progress on stderr: a tqdm bar on a terminal, else a line per second."""

    def __init__(self, label, total_s=None):
        self.label = label
        self.total_s = total_s
        self.bar = None
        self.shown = 0
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_s, unit="s", desc=label, leave=False, file=sys.stderr,
                            bar_format="{desc}: {n:.1f}/{total:.1f} s |{bar}| {postfix}"
                            if total_s else "{desc}: {n:.1f} s {postfix}")

    def update(self, seconds, text):
        if self.bar is not None:
            self.bar.n = seconds
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        elif int(seconds) > self.shown:
            self.shown = int(seconds)
            of = f" of {self.total_s:.1f} s" if self.total_s else ""
            _note(f"{self.label}: {self.shown} s{of}, {text}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _Events:
    """Client events as lines on stderr; remembers a removal from the channel."""

    def __init__(self, label):
        self.label = label
        self.failed = None

    def on_user_joined(self, uid):
        _note(f"{self.label}: host {uid} is in the channel")

    def on_user_offline(self, uid, reason):
        _note(f"{self.label}: host {uid} left ({reason})")

    def on_connection_state_changed(self, state, reason):
        if state == "failed":
            self.failed = reason
        elif state == "reconnecting":
            _note(f"{self.label}: {reason}")

    def on_audio_mixing_state_changed(self, state, reason):
        if state == "failed":
            _note(f"{self.label}: the music cannot be played ({reason})")

    def on_token_privilege_will_expire(self, expires_at):
        _note(f"{self.label}: the token expires at {expires_at} (unix s); the server will "
              "remove this user then")

    def on_channel_media_relay_state_changed(self, state, reason):
        _note(f"{self.label}: relay {state} ({reason})")


def _join(client, args, role, label):
    """Join with the command's arguments; refusals and timeouts become CommandError."""
    address = parse_address(args.server)
    token = _token(args)
    key = _server_key(args)
    if not (args.join_timeout > 0 and math.isfinite(args.join_timeout)):
        raise CommandError(f"--join-timeout must be a positive number of seconds, "
                           f"got {args.join_timeout}", status=2)
    events = _Events(label)
    client.register_event_handler(events)
    try:
        client.join_channel(address, args.channel, args.uid, token, role, server_key=key,
                            timeout=args.join_timeout)
    except RefusedError as exc:
        raise CommandError(str(exc)) from None
    except TimeoutError:
        raise CommandError(f"no answer from a stagevox server at {args.server} within "
                           f"{args.join_timeout:g} s (is 'stagevox server' running there, "
                           f"and is --server-key the key it printed?)") from None
    except (ValueError, OSError) as exc:
        raise CommandError(f"cannot join {args.channel!r} on {args.server}: {exc}") from None
    _note(f"{label}: joined channel {args.channel!r} on {args.server} as {role} {args.uid}")
    return events


def _check_removed(events):
    if events.failed is not None:
        raise CommandError(f"removed from the channel: {events.failed}")


# ------------------------------------------------------------------ server

@contextlib.contextmanager
def _stop_on_signals():
    """While inside, the first SIGINT or SIGTERM raises ``_Stop`` in the main thread."""
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise _Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cmd_server(args):
    """Serve channels until SIGINT/SIGTERM; prints ``listening on H:P`` first."""
    secret = _secret()
    if args.member_timeout <= 0 or not math.isfinite(args.member_timeout):
        raise CommandError(f"--member-timeout must be a positive number of seconds, "
                           f"got {args.member_timeout}", status=2)
    key_file = Path(args.key_file) if args.key_file else default_key_file()
    try:
        if not args.key_file:
            key_file.parent.mkdir(parents=True, exist_ok=True)
        server = Server(args.host, args.port, secret, key_file=key_file,
                        max_hosts=args.max_hosts, max_members=args.max_members,
                        max_channels=args.max_channels, member_timeout_s=args.member_timeout,
                        publish_allow=args.allow_publish)
    except session.SessionError as exc:
        raise CommandError(f"--key-file: {exc}", status=2) from None
    except OSError as exc:
        raise CommandError(f"--key-file {key_file}: {exc.strerror or exc}", status=2) from None
    except ValueError as exc:
        raise CommandError(str(exc), status=2) from None
    try:
        publishes = publish_cli.ServerPublishes(server, publish_cli.parse_publish(args.publish))
    except ValueError as exc:
        raise CommandError(str(exc), status=2) from None
    _log_membership(args.quiet)
    why = None
    started = time.monotonic()
    with _stop_on_signals():
        try:
            try:
                server.start()
            except OSError as exc:
                raise CommandError(f"cannot listen on "
                                   f"{format_address((args.host, args.port))}: "
                                   f"{exc.strerror or exc}") from None
            print(f"listening on {format_address(server.address)}", flush=True)
            print(f"server key {server.public_key_text}", flush=True)
            _note(f"server: key pair in {key_file}; clients need --server-key "
                  f"{server.public_key_text}")
            while True:
                publishes.wait(3600)
        except _Stop as exc:
            why = str(exc)
        finally:
            server.stop()
    counters = dict(server.counters)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counters.items())) or "no traffic"
    print(f"stopped by {why} after {time.monotonic() - started:.1f} s: {summary}", flush=True)
    return 0


# ------------------------------------------------------------------ token

def cmd_token(args):
    """Print a token for ``--channel``/``--uid``/``--role`` signed with the secret."""
    secret = _secret()
    try:
        token = make_token(secret, args.channel, args.uid, args.role, expire_s=args.expire_s)
    except (ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    print(token, flush=True)
    return 0


# ------------------------------------------------------------------ host

def _wire_frames(reader, channels, loop, path):
    """10 ms frames, float32 ``(channels, 480)`` at 48 kHz, from an open soundfile.

    More than two channels in the file are averaged to mono.  At the end of
    the file: with ``loop``, start again (the resampler runs on, so there is
    no seam in its state); otherwise the last frame is padded with zeros.
    """
    step = round(CLOCK_RATE * FRAME_S)
    resampler = None
    if reader.samplerate != CLOCK_RATE:
        resampler = soxr.ResampleStream(reader.samplerate, CLOCK_RATE, channels,
                                        dtype="float32", quality="HQ")
    pending = np.zeros((channels, 0), np.float32)
    read = 0
    while True:
        data = reader.read(READ_BLOCK, dtype="float32", always_2d=True)
        at_end = data.shape[0] < READ_BLOCK
        if data.shape[0] and not np.isfinite(data).all():
            bad = int(np.argmax(~np.isfinite(data).all(axis=1)))
            raise CommandError(f"{path}: sample {read + bad} is NaN or Inf; only finite "
                               "samples can be sent")
        read += data.shape[0]
        if data.shape[1] > 2:
            data = data.mean(axis=1, keepdims=True, dtype=np.float32)
        last = at_end and not loop
        if resampler is not None:
            data = resampler.resample_chunk(np.ascontiguousarray(data), last=last)
        pending = np.concatenate([pending, np.asarray(data, np.float32).T], axis=1)
        while pending.shape[1] >= step:
            yield np.ascontiguousarray(pending[:, :step])
            pending = pending[:, step:]
        if at_end:
            if not loop:
                break
            reader.seek(0)
            read = 0
    if pending.shape[1]:
        frame = np.zeros((channels, step), np.float32)
        frame[:, :pending.shape[1]] = pending
        yield frame


def cmd_host(args):
    """Join as host and stream ``--input`` in real time."""
    _check_host_options(args)
    from . import device_cli
    if args.input == device_cli.MIC:
        return device_cli.host_mic(args)
    if args.duration is not None or args.device is not None:
        raise CommandError("--duration and --device go with --input mic (a file is sent "
                           "whole; --loop repeats it)")
    try:
        reader = fileio.open_input(args.input)
    except fileio.AudioFileError as exc:
        raise CommandError(str(exc)) from None
    with reader:
        channels = 2 if reader.channels == 2 else 1
        if reader.channels > 2:
            _note(f"host: {args.input} has {reader.channels} channels; sending their mono mix")
        file_s = reader.frames / reader.samplerate
        client = Client(sample_rate=CLOCK_RATE, channels=channels)
        _apply_host_options(client, args)
        destinations = _relay_destinations(args)
        with _hosting(client, args, destinations) as events:
            try:
                sent = _stream(client, events, reader, channels, args, file_s)
                stats = client.stats()
            except KeyboardInterrupt:
                _note("host: interrupted; left the channel")
                return 130
    rtt = "n/a" if stats["rtt_ms"] is None else f"{stats['rtt_ms']:.1f} ms"
    print(f"host: sent {sent:.2f} s of {args.input} in {stats['packets_sent']} packets "
          f"({stats['send_bitrate'] / 1000:.1f} kb/s on the wire), uplink loss "
          f"{100 * stats['uplink_loss']:.1f} %, RED depth {stats['red_depth']}, "
          f"round trip {rtt}", flush=True)
    return 0


def _check_host_options(args):
    """The ``host`` options' ranges and URLs, before anything starts."""
    if not 0 <= args.volume <= 400:
        raise CommandError(f"--volume must be in 0..400 (100 = unchanged), got {args.volume:g}")
    if not 0 <= args.music_volume <= 100:
        raise CommandError(f"--music-volume must be in 0..100 (100 = as the file), got "
                           f"{args.music_volume:g}")
    try:
        publish_cli.check_urls(args.publish_url)
    except ValueError as exc:
        raise CommandError(str(exc), status=2) from None


def _apply_host_options(client, args):
    """Apply ``--volume``, ``--preset`` and ``--audio-profile`` (with ``--music``
    and no profile given: music_standard_stereo) to ``client``."""
    try:
        client.adjust_recording_signal_volume(args.volume)
        if args.preset:
            client.set_audio_effect_preset(args.preset)
        if args.audio_profile or args.music:
            client.set_audio_profile(args.audio_profile or "music_standard_stereo")
    except ValueError as exc:
        raise CommandError(str(exc)) from None


@contextlib.contextmanager
def _hosting(client, args, destinations):
    """Join as host and start what the ``host`` options ask for besides the
    voice (``--music``, ``--publish-url``, ``--relay`` to ``destinations``);
    yields the event handler; stops them and leaves the channel at the end."""
    events = _join(client, args, "host", "host")
    if args.music:
        _start_music(client, args)
    try:
        try:
            publish_cli.host_publish(client, args.publish_url)
        except (RefusedError, TimeoutError) as exc:
            raise CommandError(f"--publish-url: {exc}") from None
        if destinations:
            client.start_channel_media_relay(destinations)
        yield events
    finally:
        publish_cli.host_unpublish(client, args.publish_url)
        client.leave_channel()


def _start_music(client, args):
    """Mix ``--music`` under the voice; a file that cannot be played is told
    on stderr by the event handler, and the voice goes on."""
    client.start_audio_mixing(args.music)
    client.adjust_audio_mixing_volume(args.music_volume)


def _relay_destinations(args):
    """The ``--relay CHANNEL UID TOKEN`` options as ``RelayDestination``s (on
    ``--relay-server`` with ``--relay-server-key`` when given)."""
    if not args.relay:
        if args.relay_server or args.relay_server_key:
            raise CommandError("--relay-server and --relay-server-key go with --relay", status=2)
        return []
    server = key = None
    if args.relay_server or args.relay_server_key:
        if not (args.relay_server and args.relay_server_key):
            raise CommandError("--relay-server needs --relay-server-key (the key that "
                               "server printed), and the other way round", status=2)
        server = parse_address(args.relay_server)
        try:
            key = session.parse_public_key(args.relay_server_key)
        except session.SessionError as exc:
            raise CommandError(f"--relay-server-key: {exc}") from None
    out = []
    for channel, uid, token in args.relay:
        try:
            out.append(RelayDestination(channel, int(uid), token, server, key))
        except ValueError as exc:
            raise CommandError(f"--relay {channel} {uid} ...: {exc}", status=2) from None
    if len(out) > MAX_DESTINATIONS:
        raise CommandError(f"at most {MAX_DESTINATIONS} --relay channels, got {len(out)}",
                           status=2)
    return out


def cmd_inject(args):
    """Publish ``--url`` as a host until it ends (status 0), gives up or is
    refused (status 1), or Ctrl+C (130)."""
    if args.max_retries < 1:
        raise CommandError(f"--max-retries must be at least 1, got {args.max_retries}", status=2)
    address = parse_address(args.server)
    token = _token(args)
    key = _server_key(args)
    try:
        injector = StreamInjector(address, key, args.channel, args.uid, token, args.url,
                                  volume=args.volume, max_retries=args.max_retries,
                                  on_state=lambda state, reason: _note(f"inject: {state} "
                                                                       f"({reason})"))
    except ValueError as exc:
        raise CommandError(str(exc), status=2) from None
    injector.start()
    try:
        while not injector.wait(0.5):
            pass
    except KeyboardInterrupt:
        injector.stop()
        _note("inject: interrupted; left the channel")
        return 130
    if injector.reason != "finished":
        raise CommandError(f"inject: {args.url}: {injector.reason}")
    print(f"inject: published {injector.played_s:.2f} s of {args.url}", flush=True)
    return 0


def _stream(client, events, reader, channels, args, file_s):
    """Push the file's frames on the 10 ms schedule; returns the seconds sent."""
    progress = _Progress("host", None if args.loop else file_s)
    pacer = Pacer()
    frames = 0
    try:
        # Silence after the file, so the encoder sends its last packet and
        # listeners play out their jitter buffers before this host leaves.
        tail = [np.zeros((channels, round(CLOCK_RATE * FRAME_S)), np.float32)] * round(
            TAIL_S / FRAME_S)
        source = _wire_frames(reader, channels, args.loop, args.input)
        pacer.start()
        for frame in _chain(source, tail):
            if frames:
                pacer.wait()
            _check_removed(events)
            client.push_audio(frame)
            frames += 1
            if frames % 10 == 0:
                progress.update(min(frames * FRAME_S, file_s) if not args.loop
                                else frames * FRAME_S,
                                f"{client.stats()['packets_sent']} packets")
    finally:
        progress.close()
    return max(0, frames - len(tail)) * FRAME_S


def _chain(*iterables):
    for it in iterables:
        yield from it


# ------------------------------------------------------------------ listen

def _check_output(path, overwrite):
    """The soundfile format for ``path``; refuses a folder, a missing folder or
    an existing file without ``overwrite``."""
    try:
        fmt = fileio.output_format(path)
    except fileio.AudioFileError as exc:
        raise CommandError(str(exc)) from None
    p = Path(path)
    if p.is_dir():
        raise CommandError(f"{path}: is a folder; give a file name")
    if not p.parent.is_dir():
        raise CommandError(f"{path}: folder {p.parent} does not exist")
    if p.exists() and not overwrite:
        raise CommandError(f"{path}: exists already; pass --overwrite to replace it")
    return fmt


class _Heard:
    """What the listener heard from each host (the client forgets a host that leaves)."""

    def __init__(self):
        self.users = {}                  # uid -> the latest stats of that host
        self.delays = []                 # end-to-end delay estimates, ms

    def update(self, stats):
        for uid, u in stats["users"].items():
            self.users[uid] = u
            if u["received"]:
                self.delays.append(u["end_to_end_delay_ms"])

    def total(self, key):
        return sum(u[key] for u in self.users.values())

    def describe(self):
        if not self.users:
            return "heard no host"
        recovered = sum(self.total(k) for k in ("recovered_red", "recovered_fec",
                                                 "recovered_retransmission"))
        delay = f"{float(np.median(self.delays)):.0f} ms" if self.delays else "n/a"
        n = len(self.users)
        return (f"from {n} host{'s' if n != 1 else ''}: received {self.total('received')}, "
                f"lost {self.total('lost')}, recovered {recovered}, concealed "
                f"{self.total('concealed')} packets; end-to-end delay {delay} (median)")


def cmd_listen(args):
    """Join as audience and record ``--duration`` seconds of what is heard."""
    from . import device_cli
    if args.output == device_cli.SPEAKER:
        return device_cli.listen_speaker(args)
    if args.device is not None:
        raise CommandError("--device goes with --output speaker")
    if args.duration is None:
        raise CommandError("--duration is needed to record into a file")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        raise CommandError(f"--duration must be a positive number of seconds, "
                           f"got {args.duration}")
    if args.channels not in (1, 2):
        raise CommandError(f"--channels must be 1 or 2, got {args.channels}")
    try:
        client = Client(sample_rate=args.sample_rate, channels=args.channels)
    except ValueError as exc:
        raise CommandError(f"--sample-rate: {exc}") from None
    fmt = _check_output(args.output, args.overwrite)
    rate = client.sample_rate
    events = _join(client, args, "audience", "listen")
    dst = Path(args.output)
    heard = _Heard()
    try:
        with fileio.atomic_output(dst) as tmp:
            with sf.SoundFile(tmp, "w", samplerate=rate, channels=args.channels,
                              format=fmt) as out:
                frames = _record(client, events, out, rate, args.duration, heard)
    finally:
        client.leave_channel()
    print(f"listen: wrote {dst}: {frames / rate:.2f} s at {rate} Hz, {args.channels} "
          f"channel{'s' if args.channels != 1 else ''}; {heard.describe()}", flush=True)
    return 0


def _record(client, events, out, rate, duration, heard):
    """Pull 10 ms at a time on the schedule into ``out``; returns the frames written."""
    total = round(duration * rate)
    steps = math.ceil(total / (rate * FRAME_S))
    progress = _Progress("listen", duration)
    pacer = Pacer()
    done = 0
    try:
        pacer.start()
        for k in range(1, steps + 1):
            pacer.wait()
            _check_removed(events)
            n = min(total, round(k * rate * FRAME_S)) - done
            out.write(client.pull_audio(n).T)
            done += n
            heard.update(client.stats())
            if k % 10 == 0:
                progress.update(done / rate, f"{heard.total('received')} packets heard")
    finally:
        progress.close()
    return done


# ------------------------------------------------------------------ gateway

def cmd_gateway(args):
    """Serve the browser gateway until SIGINT/SIGTERM; prints the page's link first."""
    address = parse_address(args.server)
    key = _server_key(args)
    if not 0 <= args.http_port <= 65535:
        raise CommandError(f"--http-port must be in 0..65535 (0: a free one), "
                           f"got {args.http_port}", status=2)
    try:
        from .gateway import Gateway
    except ImportError as exc:
        raise CommandError(f"the gateway needs aiortc and aiohttp ({exc}); install them with: "
                           f"pip install 'stagevox[gateway]'") from None
    secret = _secret() if args.share_listeners else None
    _log_membership(args.quiet)
    try:
        gateway = Gateway(address, key, args.http_host, args.http_port, secret=secret).start()
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    with _stop_on_signals():
        try:
            print(f"gateway on {gateway.url}", flush=True)
            print(f"open {gateway.url}room/CHANNEL?token=TOKEN (a token from 'stagevox token "
                  f"--channel CHANNEL --uid N --role host|audience')", flush=True)
            while True:
                time.sleep(3600)
        except _Stop:
            pass
        finally:
            gateway.stop()
    return 0


# ------------------------------------------------------------------ parser

def _guard(command):
    """Run ``command(args)``, turning a ``CommandError`` into its line and status."""
    def run(args):
        try:
            return command(args)
        except CommandError as exc:
            print(f"stagevox: error: {exc}", file=sys.stderr, flush=True)
            return exc.status
    run.__doc__ = command.__doc__
    return run


def _client_options(p, role, uid=None):
    p.add_argument("--server", required=True, metavar="HOST:PORT",
                   help="the stagevox server (as printed by 'stagevox server')")
    p.add_argument("--channel", required=True, metavar="NAME", help="the channel to join")
    p.add_argument("--uid", required=uid is None, default=uid, type=int, metavar="N",
                   help="this user's id, 1..4294967295, unique in the channel"
                        + ("" if uid is None else f" (default {uid})"))
    p.add_argument("--token", metavar="TOKEN",
                   help=f"a {role} token from 'stagevox token' (default: ${TOKEN_ENV})")
    p.add_argument("--server-key", metavar="KEY",
                   help="the server's public key, as 'stagevox server' prints it "
                        f"(default: ${SERVER_KEY_ENV})")
    p.add_argument("--join-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to keep trying to join (default 10)")
    p.set_defaults(command_role=role)


def add_commands(sub):
    """Register ``server``, ``token``, ``host``, ``listen``, ``inject`` and ``gateway``
    on the subparsers ``sub``, and the sound-card commands of ``device_cli``
    (``devices``, ``talk``)."""
    from . import device_cli
    p = sub.add_parser(
        "server", help="run a live channel server (secret from $STAGEVOX_SECRET)",
        description="Run a live channel server on one UDP port until Ctrl+C (SIGINT) or "
                    f"SIGTERM. The token secret comes from ${SECRET_ENV}. The first line "
                    "printed is 'listening on HOST:PORT', the second 'server key KEY' (the "
                    "public key clients pass as --server-key).",
        epilog="example: STAGEVOX_SECRET=s3cret stagevox server --port 5000")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, required=True, metavar="P",
                   help="UDP port (0 picks a free one and prints it)")
    p.add_argument("--max-hosts", type=int, default=17, metavar="N",
                   help="hosts allowed per channel, 1..128 (default 17)")
    p.add_argument("--max-members", type=int, default=10000, metavar="N",
                   help="members allowed per channel (default 10000)")
    p.add_argument("--max-channels", type=int, default=10000, metavar="N",
                   help="channels this server serves at once (default 10000)")
    p.add_argument("--member-timeout", type=float, default=10.0, metavar="S",
                   help="drop a member silent this many seconds (default 10)")
    p.add_argument("--key-file", metavar="FILE",
                   help="the server's key pair, created on first start and kept "
                        f"(default: ${KEY_FILE_ENV}, else ~/.config/stagevox/server.key)")
    p.add_argument("--quiet", action="store_true",
                   help="do not log joins, leaves, role changes and refusals")
    publish_cli.add_server_option(p)
    p.set_defaults(run=_guard(cmd_server))

    p = sub.add_parser(
        "token", help="print an access token (secret from $STAGEVOX_SECRET)",
        description=f"Print a token that admits --uid to --channel, signed with ${SECRET_ENV}.",
        epilog="example: stagevox token --channel room --uid 1 --role host")
    p.add_argument("--channel", required=True, metavar="NAME")
    p.add_argument("--uid", required=True, type=int, metavar="N", help="0..4294967295")
    p.add_argument("--role", required=True, choices=("host", "audience"),
                   help="host may publish; audience listens only")
    p.add_argument("--expire-s", type=float, default=3600.0, metavar="S",
                   help="seconds the token stays valid (default 3600)")
    p.set_defaults(run=_guard(cmd_token))

    p = sub.add_parser(
        "host", help="join a channel as host and stream an audio file in real time",
        description="Join a channel as host and stream FILE in real time (resampled to "
                    "48 kHz; mono or stereo as the file), then leave.",
        epilog="example: stagevox host --server 127.0.0.1:5000 --server-key KEY --channel room "
               "--uid 1 --token $(stagevox token --channel room --uid 1 --role host) "
               "--input speech.wav --preset ktv")
    _client_options(p, "host")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="any audio file libsndfile reads, or 'mic' for the microphone")
    p.add_argument("--preset", metavar="NAME", help="a voice preset (see 'stagevox presets')")
    p.add_argument("--loop", action="store_true", help="start the file again at its end")
    p.add_argument("--volume", type=float, default=100.0, metavar="0-400",
                   help="recording volume, 100 = unchanged, 400 = +12 dB (default 100)")
    p.add_argument("--music", metavar="FILE_OR_URL",
                   help="a music file or URL (anything FFmpeg opens) mixed under the input")
    p.add_argument("--music-volume", type=float, default=100.0, metavar="0-100",
                   help="volume of --music, 100 = as the file (default 100)")
    p.add_argument("--audio-profile", choices=tuple(PROFILES), metavar="NAME",
                   help="the stream's encoding: " + ", ".join(PROFILES) + " (default: "
                        "music_standard_stereo with --music, else mono or stereo as the "
                        "input at 32 kb/s)")
    publish_cli.add_host_option(p)
    p.add_argument("--relay", nargs=3, action="append", metavar=("CHANNEL", "UID", "TOKEN"),
                   help="also publish into CHANNEL as UID with that channel's host TOKEN "
                        "(co-hosting; repeatable, at most 6)")
    p.add_argument("--relay-server", metavar="HOST:PORT",
                   help="the --relay channels are on this other server")
    p.add_argument("--relay-server-key", metavar="KEY", help="that server's public key")
    device_cli.add_device_options(p, "input")
    p.set_defaults(run=_guard(cmd_host))

    p = sub.add_parser(
        "listen", help="join a channel as audience and record what is heard",
        description="Join a channel as audience and record --duration seconds of what is "
                    "heard, in real time, into FILE (format from its suffix; written to a "
                    "temporary file and renamed at the end).",
        epilog="example: stagevox listen --server 127.0.0.1:5000 --server-key KEY --channel room "
               "--uid 2 --token $(stagevox token --channel room --uid 2 --role audience) "
               "--output heard.wav --duration 10")
    _client_options(p, "audience")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="where to write what was heard (.wav, .flac, .ogg, ...), or "
                        "'speaker' to play it on the sound card")
    p.add_argument("--duration", type=float, metavar="S",
                   help="seconds to record (with --output speaker: to play; default "
                        "until Ctrl+C)")
    p.add_argument("--sample-rate", type=int, default=CLOCK_RATE, metavar="HZ",
                   help="rate of the recording, 8000-48000 (default 48000)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 2),
                   help="1 (mono, default) or 2 (stereo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    device_cli.add_device_options(p, "output")
    p.set_defaults(run=_guard(cmd_listen))

    p = sub.add_parser(
        "inject", help="publish an online stream or a file into a channel, as a host",
        description="Join a channel as a host and publish URL in real time (an HTTP file, an "
                    "HLS playlist, an RTMP stream or a local file: anything FFmpeg opens), in "
                    "stereo, until it ends or Ctrl+C. A URL that fails is tried again with "
                    "back-off.",
        epilog="example: stagevox inject --server 127.0.0.1:5000 --server-key KEY --channel room "
               "--token $(stagevox token --channel room --uid 666 --role host) "
               "--url https://example.org/concert.m3u8")
    _client_options(p, "host", uid=666)
    p.add_argument("--url", required=True, metavar="URL", help="the stream or file to publish")
    p.add_argument("--volume", type=float, default=100.0, metavar="0-100",
                   help="the stream's level, 100 = as it is (default 100)")
    p.add_argument("--max-retries", type=int, default=MAX_RETRIES, metavar="N",
                   help=f"failed tries in a row before giving up (default {MAX_RETRIES})")
    p.set_defaults(run=_guard(cmd_inject))

    p = sub.add_parser(
        "gateway", help="serve a web page that bridges browsers (WebRTC) to the channels",
        description="Serve the room page and bridge browsers to the channels of the server "
                    "at --server, until Ctrl+C (SIGINT) or SIGTERM. A person opens "
                    "http://HOST:PORT/room/CHANNEL?token=TOKEN and presses Listen or Talk. "
                    "Needs the gateway extra: pip install 'stagevox[gateway]'.",
        epilog="example: stagevox gateway --server 127.0.0.1:5000 --server-key KEY "
               "--http-port 8080")
    p.add_argument("--server", required=True, metavar="HOST:PORT",
                   help="the stagevox server (as printed by 'stagevox server')")
    p.add_argument("--server-key", metavar="KEY",
                   help="the server's public key, as 'stagevox server' prints it "
                        f"(default: ${SERVER_KEY_ENV})")
    p.add_argument("--http-host", default="127.0.0.1",
                   help="address to serve the page on (default 127.0.0.1; 0.0.0.0 for all; "
                        "browsers allow the microphone on localhost or https only)")
    p.add_argument("--http-port", type=int, default=8080, metavar="P",
                   help="HTTP port (default 8080; 0 picks a free one and prints it)")
    p.add_argument("--share-listeners", action="store_true",
                   help=f"listeners of a channel share one member of it, its mix encoded "
                        f"once for all; the gateway then holds the server's token secret "
                        f"(from ${SECRET_ENV}) to verify their tokens itself")
    p.add_argument("--quiet", action="store_true", help="do not log who joins and leaves")
    p.set_defaults(run=_guard(cmd_gateway))

    device_cli.add_commands(sub)
