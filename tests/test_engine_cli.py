"""``stagevox server | token | host | listen``: the live channel from the command line.

The commands run as subprocesses of the installed console script, as a user
would run them, on 127.0.0.1 only; every wait has a timeout and every
process is killed at the end of its test.  What the listener wrote is read
back with soundfile and, independently, with PyAV, and judged with STOI
against the speech the host sent.
"""

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf
import soxr
from conftest import require
from engine_helpers import Recorder
from hypothesis import given
from hypothesis import strategies as st
from stagevox import engine
from stagevox.engine import cli as ecli
from udp_relay import Impairment, UdpRelay

SECRET = "cli-test-secret"
#: Seconds a command may take to start (imports compile or load Numba kernels).
START_S = 90.0
LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")


def stagevox_bin():
    """The console script next to this Python, else the one on PATH."""
    path = Path(sys.executable).parent / "stagevox"
    if not path.exists():
        found = shutil.which("stagevox")
        path = Path(found) if found else None
    require(path is not None, "the stagevox console script is not installed")
    return str(path)


#: The user config folder of the commands run here (the server keeps its key there).
CONFIG_HOME = tempfile.mkdtemp(prefix="stagevox-cli-test-")


def cli_env(**extra):
    """The environment without any STAGEVOX_* variable, with its own config folder,
    plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEVOX_")}
    env["XDG_CONFIG_HOME"] = CONFIG_HOME
    env.update(extra)
    return env


class Proc:
    """A ``stagevox`` subprocess whose stdout and stderr lines are read by threads."""

    def __init__(self, *argv, env):
        self.popen = subprocess.Popen([stagevox_bin(), *map(str, argv)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self.lines = {"stdout": queue.Queue(), "stderr": queue.Queue()}
        self.text = {"stdout": [], "stderr": []}
        self.readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                        for name in self.lines]
        for t in self.readers:
            t.start()

    def _read(self, name):
        for line in getattr(self.popen, name):
            self.text[name].append(line)
            self.lines[name].put(line.rstrip("\n"))
        self.lines[name].put(None)

    def next_line(self, name, timeout):
        """The next line of ``name`` (None at its end); fails after ``timeout`` s."""
        try:
            return self.lines[name].get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {name} line within {timeout} s; stderr so far: "
                        f"{''.join(self.text['stderr'])}")

    def wait_for(self, name, pattern, timeout):
        """Read ``name`` until a line contains ``pattern``; fails at its end or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(name, max(0.01, deadline - time.monotonic()))
            if line is None:
                pytest.fail(f"{name} ended without {pattern!r}: {''.join(self.text[name])}")
            if pattern in line:
                return line

    def finish(self, timeout):
        """Wait for the exit; returns (status, stdout, stderr)."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s; stderr: "
                        f"{''.join(self.text['stderr'])}")
        for t in self.readers:
            t.join(10)
        return status, "".join(self.text["stdout"]), "".join(self.text["stderr"])

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


@pytest.fixture
def procs():
    """Start ``Proc``s through this; all are killed at the end of the test."""
    started = []

    def start(*argv, env):
        p = Proc(*argv, env=env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def run(*argv, env, timeout=START_S):
    """Run a command to its end; returns (status, stdout, stderr)."""
    r = subprocess.run([stagevox_bin(), *map(str, argv)], env=env, capture_output=True,
                       text=True, timeout=timeout, check=False)
    return r.returncode, r.stdout, r.stderr


def start_server(procs, *extra):
    """A ``stagevox server --port 0``; returns (Proc, port) once it printed its
    address; ``Proc.key`` is the public key it printed next."""
    server = procs("server", "--port", 0, *extra, env=cli_env(STAGEVOX_SECRET=SECRET))
    first = server.next_line("stdout", START_S)
    match = LISTENING.match(first or "")
    assert match, f"first line {first!r}; stderr: {''.join(server.text['stderr'])}"
    second = server.next_line("stdout", START_S) or ""
    assert second.startswith("server key "), second
    server.key = second.split()[-1]
    return server, int(match.group(1))


@pytest.fixture
def speech_wav(tmp_path, speech):
    """2.5 s of the bundled speech, 48 kHz mono 16-bit WAV; returns (path, samples)."""
    path = tmp_path / "speech.wav"
    x = speech[:int(2.5 * 48000)]
    sf.write(str(path), x, 48000, subtype="PCM_16")
    return path, sf.read(str(path), dtype="float32")[0]


# -------------------------------------------------------------------- server

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_prints_its_address_first_and_stops_cleanly(procs, sig):
    server, port = start_server(procs)
    assert 0 < port < 65536
    # The printed port is the real one: a client joins through it.
    client = engine.Client()
    client.join_channel(("127.0.0.1", port), "room", 5,
                        engine.make_token(SECRET, "room", 5, "audience"), "audience",
                        server_key=server.key)
    client.leave_channel()
    server.popen.send_signal(sig)
    status, out, err = server.finish(30)
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[2].startswith(f"stopped by {sig.name}") and "joined 1" in lines[2], out
    assert "Traceback" not in err


@pytest.mark.parametrize("quiet", [False, True], ids=["logs", "quiet"])
def test_server_logs_joins_role_changes_refusals_and_leaves(procs, quiet):
    server, port = start_server(procs, *(["--quiet"] if quiet else []))
    address = ("127.0.0.1", port)
    client = engine.Client()
    client.join_channel(address, "room", 7, engine.make_token(SECRET, "room", 7, "host"),
                        "audience", server_key=server.key)
    client.set_client_role("host")
    deadline = time.monotonic() + 10
    while client.role != "host" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.role == "host"
    with pytest.raises(engine.RefusedError):
        engine.Client().join_channel(address, "room", 8,
                                     engine.make_token(SECRET, "room", 9, "audience"),
                                     "audience", server_key=server.key, timeout=5)
    client.leave_channel()
    if not quiet:
        lines = [server.wait_for("stderr", what, START_S) for what in
                 ("joined: channel 'room' uid 7 as audience from 127.0.0.1:",
                  "role changed: channel 'room' uid 7 is now host",
                  "refused join: channel 'room' uid 8 as audience from 127.0.0.1:",
                  "left: channel 'room' uid 7")]
        assert "wrong_uid" in lines[2], lines[2]
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", lines[0]), lines[0]
    server.popen.send_signal(signal.SIGINT)
    status, out, err = server.finish(30)
    assert status == 0, err
    logged = [line for line in err.splitlines()
              if re.search(r"(joined|left|role changed|refused join): channel", line)]
    assert len(logged) == (0 if quiet else 4), err


@pytest.mark.parametrize("secret", [None, ""], ids=["unset", "empty"])
def test_server_without_secret_says_to_set_it(secret):
    env = cli_env() if secret is None else cli_env(STAGEVOX_SECRET=secret)
    status, out, err = run("server", "--port", 0, env=env)
    assert status == 2
    assert out == ""
    assert "STAGEVOX_SECRET" in err and "set" in err


def test_server_with_bad_max_hosts_exits_with_the_range():
    status, out, err = run("server", "--port", 0, "--max-hosts", 0,
                           env=cli_env(STAGEVOX_SECRET=SECRET))
    assert status != 0 and out == ""
    assert "1..128" in err


def test_server_keeps_its_key_pair_in_the_key_file(procs, tmp_path):
    """The first start creates the key file (mode 0600), the next one uses it:
    the same public key is printed, so clients keep their --server-key."""
    key_file = tmp_path / "keys" / "server.key"
    key_file.parent.mkdir()
    keys = []
    for _ in range(2):
        server, _ = start_server(procs, "--key-file", key_file)
        keys.append(server.key)
        server.popen.send_signal(signal.SIGINT)
        assert server.finish(30)[0] == 0
    assert keys[0] == keys[1]
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert engine.session.public_key(engine.session.load_or_create_key(key_file)) == \
        engine.session.parse_public_key(keys[0])


def test_server_with_a_bad_key_file_exits_and_leaves_it_alone(tmp_path):
    key_file = tmp_path / "server.key"
    key_file.write_text("not a key\n")
    status, out, err = run("server", "--port", 0, "--key-file", key_file,
                           env=cli_env(STAGEVOX_SECRET=SECRET))
    assert status == 2 and out == ""
    assert str(key_file) in err and "Traceback" not in err
    assert key_file.read_text() == "not a key\n"


def test_client_without_server_key_says_where_to_get_it(live_server, speech_wav):
    wav, _ = speech_wav
    host, port = live_server.address
    status, _, err = run("host", "--server", f"{host}:{port}", "--channel", "room", "--uid", 1,
                         "--token", engine.make_token(SECRET, "room", 1, "host"),
                         "--input", wav, env=cli_env())
    assert status == 1
    assert "--server-key" in err and "STAGEVOX_SERVER_KEY" in err and "server key" in err
    assert sum(live_server.counters.values()) == 0


def test_client_with_another_servers_key_times_out_with_a_hint(live_server, speech_wav):
    """A wrong key fails mac1 at the server, which answers nothing."""
    wav, _ = speech_wav
    host, port = live_server.address
    other = engine.Server(secret=SECRET).public_key_text
    status, _, err = run("host", "--server", f"{host}:{port}", "--server-key", other,
                         "--channel", "room", "--uid", 1, "--join-timeout", 1,
                         "--token", engine.make_token(SECRET, "room", 1, "host"),
                         "--input", wav, env=cli_env())
    assert status == 1
    assert "within 1 s" in err and "--server-key" in err
    assert live_server.counters["dropped_bad_handshake"] >= 1
    assert live_server.members("room") == {}


# -------------------------------------------------------------------- token

@pytest.mark.parametrize("role", ["host", "audience"])
def test_token_verifies_with_the_secret(role):
    before = time.time()
    status, out, err = run("token", "--channel", "room", "--uid", 7, "--role", role,
                           "--expire-s", 600, env=cli_env(STAGEVOX_SECRET=SECRET))
    after = time.time()
    assert status == 0, err
    claims = engine.verify_token(SECRET, out.strip(), "room", 7)
    assert claims.can_publish == (role == "host")
    # expiry = ceil(now + 600) for a "now" between before and after.
    assert before + 600 <= claims.expires_at <= after + 601
    with pytest.raises(engine.TokenError):
        engine.verify_token("another-secret", out.strip(), "room", 7)


def test_token_with_a_bad_role_exits_with_the_choices():
    status, out, err = run("token", "--channel", "room", "--uid", 7, "--role", "admin",
                           env=cli_env(STAGEVOX_SECRET=SECRET))
    assert status != 0 and out == ""
    assert "admin" in err and "host" in err and "audience" in err


@pytest.mark.parametrize("argv, words", [
    (("--uid", -1), "uid must be an integer in 0..4294967295"),
    (("--uid", 1, "--expire-s", 0), "expire_s must be a positive number"),
])
def test_token_with_bad_values_exits_with_the_reason(capsys, monkeypatch, argv, words):
    from stagevox import cli
    monkeypatch.setenv("STAGEVOX_SECRET", SECRET)
    status = cli.main(["token", "--channel", "room", "--role", "host", *map(str, argv)])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert words in err


def test_token_without_secret(capsys, monkeypatch):
    from stagevox import cli
    monkeypatch.delenv("STAGEVOX_SECRET", raising=False)
    status = cli.main(["token", "--channel", "room", "--uid", "1", "--role", "host"])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and "STAGEVOX_SECRET" in err


# -------------------------------------------------------------------- end to end

def test_server_listen_host_end_to_end(procs, tmp_path, speech_wav):
    """Three terminals: a server, a listener recording 4 s, a host sending 2.5 s of speech.

    A user starts the host once the listener is recording.  Here both start
    together (each takes seconds to import) and the host's packets pass a
    relay that drops them until the listener has joined; the host's join
    retries meanwhile.  So the whole speech falls inside the 4 s recording.
    """
    wav, sent = speech_wav
    server, port = start_server(procs)
    out = tmp_path / "heard.wav"
    with UdpRelay(("127.0.0.1", port), upstream=Impairment(loss=1.0), max_seconds=120) as gate:
        listener = procs("listen", "--server", f"127.0.0.1:{port}", "--server-key", server.key,
                         "--channel", "room",
                         "--uid", 2, "--output", out, "--duration", 4,
                         env=cli_env(STAGEVOX_TOKEN=engine.make_token(SECRET, "room", 2,
                                                                     "audience")))
        host = procs("host", "--server", f"127.0.0.1:{gate.address[1]}", "--server-key",
                     server.key, "--channel", "room",
                     "--uid", 1, "--token", engine.make_token(SECRET, "room", 1, "host"),
                     "--input", wav, env=cli_env())
        listener.wait_for("stderr", "joined channel", START_S)
        gate.set_impairment(upstream=Impairment())
        host_status, host_out, host_err = host.finish(START_S + 10)
        status, listen_out, listen_err = listener.finish(START_S + 10)
    assert host_status == 0, host_err
    assert status == 0, listen_err
    assert host_out.startswith("host: sent 2.50 s"), host_out
    assert "from 1 host: received" in listen_out, listen_out
    server.popen.send_signal(signal.SIGINT)
    assert server.finish(30)[0] == 0
    # The temporary file was renamed: only the input and the output are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heard.wav", "speech.wav"]

    y, rate = sf.read(str(out), dtype="float32")
    assert rate == 48000 and y.ndim == 1
    assert abs(len(y) / rate - 4.0) <= 0.1

    # PyAV (ffmpeg) reads the same file, to the same samples (16-bit PCM: exact).
    import av
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert stream.rate == 48000 and stream.channels == 1
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    assert decoded.dtype == np.int16
    assert abs(len(decoded) / 48000 - 4.0) <= 0.1
    np.testing.assert_array_equal(decoded.astype(np.float32) / 32768, y)

    # The speech is in it: aligned piece by piece as the jitter buffer's delay
    # moves (the judge of test_engine_quality, live_session.align), then STOI.
    from live_session import align
    aligned, lags = align(sent, y, 0)
    lag = int(np.median(lags))
    assert len(aligned) == len(sent)
    from pystoi import stoi
    score = stoi(ss.resample_poly(sent, 1, 3), ss.resample_poly(aligned, 1, 3), 16000)
    print(f"end to end: speech at {lag / 48000:.3f} s of the recording, STOI {score:.3f}; "
          f"{listen_out.strip()}")
    assert score >= 0.9


# -------------------------------------------------------------------- refusals

@pytest.fixture
def live_server():
    with engine.Server(secret=SECRET) as server:
        yield server


def client_args(server, uid, token):
    host, port = server.address
    return ["--server", f"{host}:{port}", "--server-key", server.public_key_text,
            "--channel", "room", "--uid", uid, "--token", token]


@pytest.mark.parametrize("token, reason", [
    (engine.make_token("forged-secret", "room", 1, "host"), "refused (bad_signature)"),
    (engine.make_token(SECRET, "room", 1, "audience"), "refused (no_publish_privilege)"),
    (engine.make_token(SECRET, "another-room", 1, "host"), "refused (wrong_channel)"),
], ids=["forged", "audience_token", "other_channel"])
def test_host_refused_exits_1_with_the_reason(live_server, speech_wav, token, reason):
    wav, _ = speech_wav
    status, _, err = run("host", *client_args(live_server, 1, token), "--input", wav,
                           env=cli_env())
    assert status == 1
    assert reason in err and "Traceback" not in err
    assert live_server.counters["joined"] == 0
    assert live_server.members("room") == {}


@pytest.mark.parametrize("content, words", [
    (None, "no such file"), (b"not audio at all", "not a readable audio file"),
], ids=["missing", "not_audio"])
def test_host_unreadable_input_exits_1_before_joining(live_server, tmp_path, content, words):
    path = tmp_path / "input.wav"
    if content is not None:
        path.write_bytes(content)
    token = engine.make_token(SECRET, "room", 1, "host")
    status, _, err = run("host", *client_args(live_server, 1, token), "--input", path,
                           env=cli_env())
    assert status == 1
    assert str(path) in err and words in err
    # It never spoke to the server: no join, no refusal, no packet.
    assert sum(live_server.counters.values()) == 0, live_server.counters


@contextlib.contextmanager
def listening(server, channel, uid):
    """An audience member of ``channel`` on ``server`` (in this process) while
    the block runs; yields the ``Recorder`` of its events."""
    listener = engine.Client()
    rec = Recorder()
    listener.register_event_handler(rec)
    listener.join_channel(server.address, channel, uid,
                          engine.make_token(SECRET, channel, uid, "audience"), "audience",
                          server_key=server.public_key)
    try:
        yield rec
    finally:
        listener.leave_channel()


def test_host_relays_into_a_channel_on_another_server(live_server, speech_wav):
    """``stagevox host --relay show 9 TOKEN --relay-server ... --relay-server-key
    ...`` publishes on its own server and, as uid 9, in "show" on a second
    server, whose listener is told uid 9 joined and is sent the whole file
    (2.5 s: at least 120 packets of 20 ms); the host reports the relay running."""
    wav, _ = speech_wav
    with engine.Server(secret=SECRET) as edge, listening(edge, "show", 50) as rec:
        host, port = edge.address
        status, _, err = run(
            "host", *client_args(live_server, 1, engine.make_token(SECRET, "room", 1, "host")),
            "--input", wav, "--relay", "show", 9, engine.make_token(SECRET, "show", 9, "host"),
            "--relay-server", f"{host}:{port}", "--relay-server-key", edge.public_key_text,
            env=cli_env())
        forwarded = edge.counters["forwarded"]
    assert status == 0, err
    assert "relay running (show)" in err
    assert rec.of("on_user_joined") == [(9,)]
    assert forwarded >= 120, forwarded


def test_host_relay_server_without_its_key_exits_2(live_server, speech_wav):
    wav, _ = speech_wav
    token = engine.make_token(SECRET, "room", 1, "host")
    status, _, err = run("host", *client_args(live_server, 1, token), "--input", wav,
                         "--relay", "show", 9, token, "--relay-server", "127.0.0.1:9",
                         env=cli_env())
    assert status == 2
    assert "--relay-server-key" in err and "Traceback" not in err
    assert sum(live_server.counters.values()) == 0


def test_inject_publishes_a_file_and_exits_0_at_its_end(live_server, speech_wav):
    """``stagevox inject --url FILE`` (uid 666 by default) joins, publishes the
    2.5 s file in real time and exits 0; a listener is told 666 joined and the
    server forwards it the whole file (at least 120 packets of 20 ms)."""
    wav, _ = speech_wav
    with listening(live_server, "room", 2) as rec:
        host, port = live_server.address
        status, out, err = run("inject", "--server", f"{host}:{port}", "--server-key",
                               live_server.public_key_text, "--channel", "room",
                               "--token", engine.make_token(SECRET, "room", 666, "host"),
                               "--url", wav, env=cli_env())
    assert status == 0, err
    assert out.startswith("inject: published 2.5"), out
    assert "inject: playing (started)" in err and "inject: stopped (finished)" in err
    assert rec.of("on_user_joined") == [(666,)]
    assert live_server.counters["forwarded"] >= 120


def test_inject_of_a_missing_file_exits_1_with_the_reason(live_server, tmp_path):
    host, port = live_server.address
    status, _, err = run("inject", "--server", f"{host}:{port}", "--server-key",
                         live_server.public_key_text, "--channel", "room",
                         "--token", engine.make_token(SECRET, "room", 666, "host"),
                         "--url", tmp_path / "gone.mp3", "--max-retries", 1, env=cli_env())
    assert status == 1
    assert "gone.mp3: gave_up after 1 failed tries (not_found)" in err, err
    assert "Traceback" not in err


def test_host_without_token_says_where_to_get_one(live_server, speech_wav):
    wav, _ = speech_wav
    host, port = live_server.address
    status, _, err = run("host", "--server", f"{host}:{port}", "--channel", "room",
                           "--uid", 1, "--input", wav, env=cli_env())
    assert status == 1
    assert "--token" in err and "STAGEVOX_TOKEN" in err and "stagevox token" in err
    assert sum(live_server.counters.values()) == 0


def test_listen_refused_leaves_no_file(live_server, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    token = engine.make_token("forged-secret", "room", 2, "audience")
    status, _, err = run("listen", *client_args(live_server, 2, token),
                           "--output", folder / "heard.wav", "--duration", 2, env=cli_env())
    assert status == 1
    assert "refused (bad_signature)" in err
    assert list(folder.iterdir()) == []          # no file, no temporary file


def test_listen_does_not_replace_a_file_without_overwrite(live_server, tmp_path):
    out = tmp_path / "heard.wav"
    out.write_bytes(b"keep me")
    token = engine.make_token(SECRET, "room", 2, "audience")
    status, _, err = run("listen", *client_args(live_server, 2, token), "--output", out,
                         "--duration", 1, env=cli_env())
    assert status == 1 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"
    assert sum(live_server.counters.values()) == 0


# -------------------------------------------------------------------- pieces, in process

class FakeClock:
    """A clock whose sleep oversleeps by ``late_s`` each time (a busy machine)."""

    def __init__(self, late_s):
        self.now = 100.0
        self.late_s = late_s
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds + self.late_s


def test_pacer_deadlines_do_not_drift():
    """Sleeping 3 ms too long every time shifts no later deadline: after 1000
    ticks the time is tick 1000's deadline plus one oversleep, not 1000 of them."""
    fake = FakeClock(late_s=0.003)
    pacer = ecli.Pacer(0.01, clock=fake.clock, sleep=fake.sleep)
    t0 = pacer.start()
    for _ in range(1000):
        pacer.wait()
    assert fake.now == pytest.approx(t0 + 1000 * 0.01 + 0.003, abs=1e-9)
    assert pacer.slips == 0
    # Each sleep is what is left of the period after the previous oversleep.
    assert fake.sleeps[1:] == pytest.approx([0.007] * 999, abs=1e-9)


def test_pacer_restarts_after_a_stall_without_a_burst():
    fake = FakeClock(late_s=0.0)
    pacer = ecli.Pacer(0.01, max_lag_s=0.2, clock=fake.clock, sleep=fake.sleep)
    pacer.start()
    pacer.wait()
    fake.now += 1.0                       # the process stalled for a second
    pacer.wait()                          # late: returns at once and restarts the schedule
    assert pacer.slips == 1
    n = len(fake.sleeps)
    for _ in range(5):
        pacer.wait()
    assert fake.sleeps[n:] == pytest.approx([0.01] * 5, abs=1e-9)


@given(host=st.sampled_from(["127.0.0.1", "localhost", "example.org", "::1"]),
       port=st.integers(1, 65535))
def test_parse_address_round_trip(host, port):
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert ecli.parse_address(text) == (host, port)


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:", ":5000", "127.0.0.1:0",
                                  "127.0.0.1:65536", "127.0.0.1:http"])
def test_parse_address_errors_name_the_form(text):
    with pytest.raises(ecli.CommandError, match="HOST:PORT"):
        ecli.parse_address(text)


def test_wire_frames_resample_a_stereo_file(tmp_path, speech):
    """A 44.1 kHz stereo file comes out as 10 ms stereo frames at 48 kHz, equal to
    soxr's one-shot resampling of the whole file (1e-4), the last frame padded."""
    x = soxr.resample(speech[:48000], 48000, 44100)
    stereo = np.stack([x, 0.5 * x[::-1]], axis=1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, 44100, subtype="FLOAT")
    with sf.SoundFile(str(path)) as reader:
        frames = list(ecli._wire_frames(reader, 2, False, path))
    assert all(f.shape == (2, 480) and f.dtype == np.float32 for f in frames)
    y = np.concatenate(frames, axis=1)
    ref = soxr.resample(stereo, 44100, 48000, quality="HQ").T
    assert y.shape[1] == -(-ref.shape[1] // 480) * 480
    np.testing.assert_allclose(y[:, :ref.shape[1]], ref, atol=1e-4)
    assert not y[:, ref.shape[1]:].any()


def test_wire_frames_loop_repeats_the_file(tmp_path):
    """--loop: a 48 kHz file of 1000 samples repeats sample for sample."""
    x = np.random.default_rng(5).uniform(-0.5, 0.5, 1000).astype(np.float32)
    path = tmp_path / "short.wav"
    sf.write(str(path), x, 48000, subtype="FLOAT")
    with sf.SoundFile(str(path)) as reader:
        gen = ecli._wire_frames(reader, 1, True, path)
        y = np.concatenate([next(gen) for _ in range(25)], axis=1)[0]
    np.testing.assert_array_equal(y, np.tile(x, 12)[:len(y)])


def test_progress_line_is_rounded_with_units(capsys, monkeypatch):
    """Off a terminal, progress is one line per whole second, the total
    rounded to 0.1 s with its unit ("1 s of 11.4 s", not "1 s of 11.3893")."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    progress = ecli._Progress("host", 11.3893)
    for seconds in (0.5, 1.2, 1.7, 2.01):
        progress.update(seconds, "loss 0.0 %")
    progress.close()
    assert capsys.readouterr().err == ("host: 1 s of 11.4 s, loss 0.0 %\n"
                                       "host: 2 s of 11.4 s, loss 0.0 %\n")
