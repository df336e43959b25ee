"""Sound cards: ``engine.devices`` and the ``devices``/``talk``/``--input mic``/
``--output speaker`` commands, against a real PortAudio stream on a virtual card.

The virtual card: a JACK server with its ``dummy`` driver (``jackd2``) keeps
time like a card, 10 ms periods at 48 kHz, with no hardware; an ALSA
configuration the test writes (``ALSA_CONFIG_PATH``) gives PortAudio's ALSA
host API a microphone ``svmic`` (ALSA's ``file`` plugin reading a raw float32
file over a JACK capture port, so PortAudio records that file in real time)
and a speaker ``svspk`` (the same plugin writing what is played to a file).
Both run at 48 kHz only; a client at 44.1 kHz makes the link resample (a
device behind ALSA's ``plug`` at another rate opens in ALSA, but PortAudio
19.6 leaves it out of its device list).  ALSA's ``null`` plugin alone opens
too, but runs the callbacks as fast as the CPU allows (about 500 times real
time here), so it cannot stand for a card.  jackd runs with real-time
scheduling where it may (it goes on without, with a warning).  Needs
``jackd``/``jack_wait`` (``jackd2``) and ALSA's JACK plugin
(``libasound2-plugins``); under CI=true their absence fails.

Limits: the card's callbacks share this process's GIL with a server, the
clients and the judge.  On a machine loaded far beyond its cores the JACK
server itself falls behind (its log says XRun; the dummy driver then loses
time, as no card does) and speech can be cut: a failing STOI names the
number of JACK xruns so far.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require
import threading

from engine_helpers import Session, stream, token
from live_session import align, score

RATE = 48000
SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"
ALSA_JACK_PLUGIN = "libasound_module_pcm_jack.so"
#: Seconds of speech judged, and of other speech before it (the adaptive parts settle).
#: PortAudio's buffering in the real-time tests, seconds: this process runs a
#: server, several clients and the judge beside the card's callbacks, on a
#: shared machine, so a callback may wait for the GIL longer than 10 ms.
LATENCY_S = 0.05
#: The listeners' jitter buffers start at this delay (ms): what is judged is
#: the device path, not how the jitter buffer stretches speech while it
#: adapts to a busy machine's scheduling (default 10 ms).
LISTENER = {"min_delay_ms": 60.0}
SPEECH_S = 3.0
LEAD_S = 1.5


def _have_alsa_jack_plugin():
    return any(glob.glob(f"/usr/lib{suffix}/alsa-lib/{ALSA_JACK_PLUGIN}")
               for suffix in ("", "/*", "64"))


ASOUND_CONF = """
pcm.svjack_in {{ type jack; capture_ports {{ 0 system:capture_1 }} }}
pcm.svjack_out {{ type jack; playback_ports {{ 0 system:playback_1 }} }}
pcm.svmic {{
    type file
    slave.pcm "svjack_in"
    file "/dev/null"
    infile "{mic}"
    format "raw"
    hint.description "stagevox test microphone"
}}
pcm.svspk {{
    type file
    slave.pcm "svjack_out"
    file "{speaker}"
    format "raw"
    hint.description "stagevox test speaker"
}}
"""


class VirtualCard:
    """The virtual card's files: ``play(x)`` sets what the microphone records
    next (1-D float32 at 48 kHz; it starts when a stream opens the device),
    ``heard()`` reads what the speaker got."""

    def __init__(self, folder):
        self.folder = folder
        self.mic = folder / "mic.f32"
        self.speaker = folder / "speaker.f32"

    def play(self, x):
        np.asarray(x, "<f4").tofile(self.mic)

    def heard(self):
        return np.fromfile(self.speaker, "<f4")

    def xruns(self):
        """The JACK server's complaints so far: a late client, a late cycle
        (the dummy driver then loses time, as a card never does)."""
        return (self.folder / "jackd.log").read_text().count("XRun")


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    require(shutil.which("jackd") and shutil.which("jack_wait"),
            "jackd and jack_wait (Debian jackd2) for the virtual card")
    require(_have_alsa_jack_plugin(), "ALSA's JACK plugin (Debian libasound2-plugins)")
    require(Path(SYSTEM_ALSA_CONF).exists(), f"ALSA's configuration {SYSTEM_ALSA_CONF}")
    from stagevox.engine import devices
    try:
        devices.rescan()
    except devices.DeviceError as exc:
        require(False, str(exc))
    folder = tmp_path_factory.mktemp("card")
    card = VirtualCard(folder)
    card.play(np.zeros(RATE // 10, np.float32))
    conf = folder / "asound.conf"
    conf.write_text(ASOUND_CONF.format(mic=card.mic, speaker=card.speaker))
    name = f"stagevox-test-{os.getpid()}"
    log = open(folder / "jackd.log", "w")
    jackd = subprocess.Popen(["jackd", "-n", name, "--realtime", "-d", "dummy", "-r",
                              str(RATE), "-p", "480", "-C", "2", "-P", "2"],
                             stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"})
    saved = {k: os.environ.get(k) for k in ("ALSA_CONFIG_PATH", "JACK_DEFAULT_SERVER")}
    # The card's callbacks need the GIL, which this process's server, clients
    # and judge pass around: a thread gives it up after 1 ms instead of 5.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        ready = subprocess.run(["jack_wait", "-w", "-s", name, "-t", "10"],
                               capture_output=True, text=True, timeout=20)
        assert ready.returncode == 0, (folder / "jackd.log").read_text()
        os.environ["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{conf}"
        os.environ["JACK_DEFAULT_SERVER"] = name
        devices.rescan()
        yield card
    finally:
        sys.setswitchinterval(switch)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        devices.rescan()
        jackd.terminate()
        jackd.wait(10)
        log.close()


@pytest.fixture(scope="module")
def speech_parts(speech):
    """(lead, judged, other): other speech first, then the judged piece, and
    another judged piece; 48 kHz float32."""
    judged = speech[2 * RATE:2 * RATE + int(SPEECH_S * RATE)]
    other = speech[8 * RATE:8 * RATE + int(SPEECH_S * RATE)]
    lead = speech[::-1][:int(LEAD_S * RATE)].copy()
    return lead, judged, other


def _stoi(reference, received, save_as=None):
    """(STOI, median delay in ms) of ``received``, which recorded the lead and
    then ``reference``; the delay counts from the end of the lead, and the
    search for it starts half a second before.  ``save_as``: a WAV file for
    what was received."""
    if save_as is not None:
        sf.write(save_as, received, RATE)
    start = int((LEAD_S - 0.5) * RATE)
    aligned, lags = align(reference, received, start)
    return score(reference, aligned)[0], float(np.median(lags)) * 1e3 / RATE - 500


# ---------------------------------------------------------------- PortAudio, no stream

def test_list_devices_sees_the_virtual_card(card):
    from stagevox import engine
    found = {d.name: d for d in engine.list_devices()}
    assert found["svmic"].max_input_channels == 1
    assert found["svmic"].max_output_channels == 0
    assert found["svspk"].max_output_channels == 1
    assert found["svmic"].host_api == "ALSA"
    assert found["svmic"].default_sample_rate == RATE


def test_unknown_device_is_a_clear_error_listing_the_devices(card):
    from stagevox import engine
    with Session() as s:
        c = s.client()
        with pytest.raises(engine.DeviceError) as err:
            c.start_audio_device(input="no such microphone")
        msg = str(err.value)
        assert "no input device named 'no such microphone'" in msg
        assert "svmic" in msg                                   # the inputs, not the outputs
        assert not any(line.endswith("svspk") for line in msg.splitlines())
        with pytest.raises(engine.DeviceError, match="no output device number 9999"):
            c.start_audio_device(output=9999)
        with pytest.raises(engine.DeviceError, match="no input device named 'svspk'"):
            c.start_audio_device(input="svspk")              # a speaker is no microphone
        with pytest.raises(ValueError, match="block_ms"):
            c.start_audio_device(input="svmic", block_ms=0)
        assert c.stats()["device"] is None                     # nothing was left running


def test_cli_devices_and_device_errors(card, capsys):
    from stagevox import cli
    assert cli.main(["devices"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[-1] == "svmic" for line in out.splitlines())
    args = ["--server", "127.0.0.1:9", "--channel", "room", "--uid", "1", "--token", "t",
            "--server-key", "svk1" + "A" * 43]
    assert cli.main(["host", *args, "--input", "mic", "--device", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "--device: no input device named 'nosuch'" in err and "svmic" in err
    assert cli.main(["talk", *args, "--output-device", "svmic"]) == 1
    assert "--output-device: no output device named 'svmic'" in capsys.readouterr().err
    assert cli.main(["listen", *args, "--output", "x.wav", "--device", "svspk"]) == 1
    assert "--device goes with --output speaker" in capsys.readouterr().err


# ---------------------------------------------------------------- real time

def test_microphone_is_heard_by_a_listener(card, speech_parts):
    lead, judged, _ = speech_parts
    card.play(np.concatenate([lead, judged]))
    with Session() as s:
        host, listener = s.join(1, "host"), s.join(2, **LISTENER)
        host.start_audio_device(input="svmic", latency=LATENCY_S)
        try:
            heard = stream({}, [listener], LEAD_S + SPEECH_S + 0.7)[listener][0]
            dev = host.stats()["device"]
        finally:
            host.stop_audio_device()
    stoi, delay_ms = _stoi(judged, heard, card.folder / "microphone-heard.wav")
    print(f"microphone -> listener: STOI {stoi:.3f}, delay {delay_ms:.0f} ms, device {dev}")
    assert stoi >= 0.95, f"virtual card: {card.xruns()} JACK xruns so far"
    assert dev["input_device"] == "svmic" and dev["input_rate"] == RATE
    assert dev["input_resampler_ms"] == 0.0
    # PortAudio's reported latency is part of what the link reports.
    assert dev["input_latency_ms"] >= dev["portaudio_input_latency_ms"] > 0


def test_listener_speaker_plays_the_host_resampled(card, speech_parts):
    lead, judged, _ = speech_parts
    with Session() as s:
        host, listener = s.join(1, "host"), s.join(2, sample_rate=44100, **LISTENER)
        listener.start_audio_device(output="svspk", latency=LATENCY_S)   # 48 kHz only
        try:
            stream({host: np.concatenate([lead, judged])}, [], LEAD_S + SPEECH_S + 0.7)
            dev = listener.stats()["device"]
        finally:
            listener.stop_audio_device()
    played = card.heard()
    stoi, delay_ms = _stoi(judged, played, card.folder / "speaker-played.wav")
    print(f"host -> 44.1 kHz listener's 48 kHz speaker: STOI {stoi:.3f}, delay {delay_ms:.0f} ms, "
          f"device {dev}")
    assert stoi >= 0.95, f"virtual card: {card.xruns()} JACK xruns so far"
    assert dev["output_rate"] == RATE and dev["output_resampler_ms"] > 0
    assert dev["output_latency_ms"] == pytest.approx(
        dev["portaudio_output_latency_ms"] + dev["output_buffer_ms"]
        + dev["output_resampler_ms"])


class _Stall:
    """A recording observer that holds the link's worker once, for ``seconds``."""

    def __init__(self, after_s, seconds):
        self.calls, self.after, self.seconds = 0, round(after_s * 100), seconds

    def on_record_audio_frame(self, frame):
        self.calls += 1
        if self.calls == self.after:
            time.sleep(self.seconds)


def test_a_starved_callback_counts_over_and_under_runs(card):
    from stagevox import engine
    from stagevox.engine import devices
    stall_s = 0.5
    card.play(np.full(3 * RATE, 0.1, np.float32))
    client = engine.Client()
    stall = _Stall(0.5, stall_s)
    client.register_audio_frame_observer(stall)
    client.start_audio_device(input="svmic", output="svspk")
    try:
        time.sleep(0.45)
        before = client.stats()["device"]
        time.sleep(0.05 + stall_s + 0.5)
        after = client.stats()["device"]
    finally:
        client.stop_audio_device()
    print("before the stall", before, "\nafter", after)
    assert stall.calls > 60                    # the link went on after the stall
    # The card went on playing while the worker slept: it had queued two
    # blocks, PortAudio's buffer holds a little more, the rest is silence.
    queued_ms = 10 * (1 + devices.OUTPUT_MARGIN_BLOCKS) + after["portaudio_output_latency_ms"]
    silence = after["silence_ms"] - before["silence_ms"]
    assert after["underruns"] - before["underruns"] >= (1e3 * stall_s - queued_ms) / 10 - 3
    assert 1e3 * stall_s - queued_ms - 30 <= silence <= 1e3 * stall_s + 100
    # The recording filled the link's buffer (MAX_BUFFER_MS), then was
    # dropped; the backlog beyond MAX_BACKLOG_BLOCKS was dropped too.
    dropped = after["dropped_ms"] - before["dropped_ms"]
    assert after["overruns"] - before["overruns"] >= 2
    assert dropped >= 1e3 * stall_s - 10 * (devices.MAX_BACKLOG_BLOCKS + 1) - 30
    assert dropped <= 1e3 * stall_s + 100


def test_monitor_plays_ones_own_processed_voice(card):
    from stagevox import engine
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)).astype(np.float32)
    card.play(tone)
    client = engine.Client()                       # in no channel: the room is silent
    client.adjust_recording_signal_volume(200)     # processed: +6 dB
    client.start_audio_device(input="svmic", output="svspk", monitor=True,
                              latency=LATENCY_S)
    try:
        time.sleep(1.5)
    finally:
        client.stop_audio_device()
    assert _tone_amplitude(card.heard()[RATE // 2:RATE]) == pytest.approx(0.4, rel=0.02)


def _tone_amplitude(x, freq=440.0, piece_s=0.05):
    """The amplitude of the ``freq`` sine in ``x``: the median over
    ``piece_s`` pieces of a least-squares fit, so that a jitter buffer's
    stretch (a jump of phase) or a short gap does not count."""
    n = int(piece_s * RATE)
    t = np.arange(n) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    fits = [np.hypot(*np.linalg.lstsq(basis, x[i:i + n], rcond=None)[0])
            for i in range(0, len(x) - n + 1, n)]
    return float(np.median(fits))


def _cli_args(s, uid, role):
    return ["--server", f"127.0.0.1:{s.server.address[1]}", "--server-key",
            s.server.public_key_text, "--channel", s.channel, "--uid", str(uid),
            "--token", token(s.channel, uid, role)]


def test_cli_host_from_the_microphone(card, capsys):
    from stagevox import cli
    card.play((0.2 * np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE)).astype(np.float32))
    heard, done = [], threading.Event()
    with Session() as s:
        listener = s.join(2, **LISTENER)

        def pull():
            t0 = time.monotonic()
            for i in range(300):
                time.sleep(max(0.0, t0 + 0.01 * i - time.monotonic()))
                heard.append(listener.pull_audio(480)[0])
            done.set()

        puller = threading.Thread(target=pull)
        puller.start()
        status = cli.main(["host", *_cli_args(s, 1, "host"), "--input", "mic", "--device",
                           "svmic", "--duration", "2", "--device-latency", str(LATENCY_S)])
        puller.join(10)
    out = capsys.readouterr().out
    assert status == 0 and done.is_set()
    assert re.search(r"host: sent 2\.0 s from 'svmic' in \d+ packets; \d+ over-runs", out)
    y = np.concatenate(heard)
    assert _tone_amplitude(y[RATE:2 * RATE]) == pytest.approx(0.2, rel=0.1)


def test_cli_host_sings_from_the_microphone_over_music(card, tmp_path, capsys):
    """``host --input mic --music FILE``: the voice and the backing track both
    reach a stereo listener (music_standard_stereo by default with --music):
    the microphone's 440 Hz in both channels at its level, the music's 330 Hz
    left and 550 Hz right at half the file's (``--music-volume 50``)."""
    from stagevox import cli
    t = np.arange(4 * RATE) / RATE
    card.play((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    music = tmp_path / "music.flac"
    sf.write(music, np.stack([0.2 * np.sin(2 * np.pi * 330 * t),
                              0.2 * np.sin(2 * np.pi * 550 * t)], 1), RATE)
    heard, done = [], threading.Event()
    with Session() as s:
        listener = s.join(2, channels=2, **LISTENER)

        def pull():
            t0 = time.monotonic()
            for i in range(300):
                time.sleep(max(0.0, t0 + 0.01 * i - time.monotonic()))
                heard.append(listener.pull_audio(480))
            done.set()

        puller = threading.Thread(target=pull)
        puller.start()
        status = cli.main(["host", *_cli_args(s, 1, "host"), "--input", "mic", "--device",
                           "svmic", "--duration", "2", "--device-latency", str(LATENCY_S),
                           "--music", str(music), "--music-volume", "50"])
        puller.join(10)
    out = capsys.readouterr().out
    assert status == 0 and done.is_set(), out
    y = np.concatenate(heard, axis=1)[:, RATE:2 * RATE]
    for channel, music_hz, other_hz in ((0, 330, 550), (1, 550, 330)):
        assert _tone_amplitude(y[channel]) == pytest.approx(0.2, rel=0.1)
        assert _tone_amplitude(y[channel], music_hz) == pytest.approx(0.1, rel=0.1)
        # Stereo kept: the other side's tone at least 12 dB down (Opus codes the
        # pair jointly, and with the loud centred voice it leaks about -20 dB).
        assert _tone_amplitude(y[channel], other_hz) < 0.25 * 0.1


def test_cli_listen_on_the_speaker(card, capsys):
    from stagevox import cli
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(4 * RATE) / RATE)).astype(np.float32)
    with Session() as s:
        host = s.join(1, "host")

        def push():
            stream({host: tone}, [], 3.0)

        pusher = threading.Thread(target=push)
        pusher.start()
        status = cli.main(["listen", *_cli_args(s, 2, "audience"), "--output", "speaker",
                           "--device", "svspk", "--duration", "2",
                           "--device-latency", str(LATENCY_S)])
        pusher.join(10)
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"listen: played 2\.0 s on 'svspk'; .* \d+ under-runs", out)
    assert _tone_amplitude(card.heard()[RATE:int(1.8 * RATE)]) == pytest.approx(0.2, rel=0.1)


def test_cli_talk_both_ways(card, speech_parts, capsys):
    from stagevox import cli
    lead, judged, other = speech_parts
    card.play(np.concatenate([lead, judged]))
    seconds = LEAD_S + SPEECH_S + 0.8
    got = {}
    with Session() as s:
        host, listener = s.join(1, "host"), s.join(2, **LISTENER)
        listener.mute_remote_audio_stream(1, True)     # the listener judges the talker

        def run():
            got.update(stream({host: np.concatenate([lead, other])}, [listener], seconds + 0.3))

        streamer = threading.Thread(target=run)
        streamer.start()
        status = cli.main(["talk", *_cli_args(s, 3, "host"), "--input-device", "svmic",
                           "--output-device", "svspk", "--duration", str(seconds),
                           "--device-latency", str(LATENCY_S)])
        streamer.join(15)
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"talk: .* \d+ over-runs .* \d+ under-runs", out)
    stoi_up, _ = _stoi(judged, got[listener][0], card.folder / "talk-heard.wav")
    stoi_down, _ = _stoi(other, card.heard(), card.folder / "talk-played.wav")
    print(f"talk: microphone -> listener STOI {stoi_up:.3f}; host -> speaker STOI "
          f"{stoi_down:.3f}\n{out}")
    assert stoi_up >= 0.95, f"virtual card: {card.xruns()} JACK xruns so far"
    assert stoi_down >= 0.95, f"virtual card: {card.xruns()} JACK xruns so far"
