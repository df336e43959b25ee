"""The browser gateway with a real headless Chromium (Selenium, chromedriver).

Chromium's fake capture device plays a speech WAV as the microphone: the
page talks and a Python listener on the channel hears it (STOI against the
file).  A Python host streams speech and the page records what it plays
(``MediaRecorder`` on the stream the page plays, handed back as base64
webm and decoded with PyAV).  Screenshots of the page's states go to the
test's tmp folder.  Bad input (tokens, SDP, requests) gets a clear error,
and the gateway goes on serving; the page says in words what went wrong (a
bad or expired token, a full stage, a refused microphone, no gateway).
WHIP and WHEP are tested with aiortc peers (``whip_peers.py``).

Printed for the record (``pytest -s``): STOI and PESQ-WB both ways.
"""

import base64
import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf

import chromium_driver
from conftest import require
from engine_helpers import wait_until
from live_session import FRAME, RATE, _pace, align, score
from stagevox import engine
from stagevox.engine.transport import format_address
from test_engine_cli import START_S, Proc, cli_env

SECRET = "gateway-test-secret"
CHANNEL = "lobby"
#: The judged speech: 8 s of the bundled sample.
JUDGED = slice(2 * RATE, 10 * RATE)
#: Other speech before it, so connection set-up and the adaptive parts
#: (jitter buffers, the browser's gain control) have settled.
LEAD_S = 3.0


def _imports():
    try:
        import aiortc  # noqa: F401
        import selenium  # noqa: F401
        from stagevox.engine import gateway  # noqa: F401
        return True
    except ImportError:
        return False


def token(uid, role="host", **kw):
    return engine.make_token(SECRET, CHANNEL, uid, role, **kw)


class GatewayProcess:
    """``stagevox gateway`` in a process of its own: ``url``, ``room_url``."""

    def __init__(self, server):
        self.proc = Proc("gateway", "--server", format_address(server.address), "--server-key",
                         server.public_key, "--http-port", 0, "--share-listeners",
                         env=cli_env(STAGEVOX_SECRET=SECRET))
        first = self.proc.next_line("stdout", START_S) or ""
        assert first.startswith("gateway on http://127.0.0.1:"), \
            f"first line {first!r}; stderr: {''.join(self.proc.text['stderr'])}"
        self.url = first.split()[-1]
        assert "room/CHANNEL?token=" in self.proc.next_line("stdout", 10)

    def room_url(self, channel, token):
        return f"{self.url}room/{urllib.parse.quote(channel)}?token={token}"


class ServerProcess:
    """``stagevox server --port 0`` in a process of its own: ``address``, ``public_key``."""

    def __init__(self):
        # One host at most: the stage is full as soon as one is on it.
        self.proc = Proc("server", "--port", 0, "--quiet", "--max-hosts", 1,
                         env=cli_env(STAGEVOX_SECRET=SECRET))
        first = self.proc.next_line("stdout", START_S) or ""
        assert first.startswith("listening on 127.0.0.1:"), \
            f"first line {first!r}; stderr: {''.join(self.proc.text['stderr'])}"
        self.address = ("127.0.0.1", int(first.rsplit(":", 1)[1]))
        self.public_key = (self.proc.next_line("stdout", START_S) or "").split()[-1]


@pytest.fixture(scope="module")
def room():
    """A server and a gateway (HTTP on a free port), each run as a user runs them
    (``stagevox server``, ``stagevox gateway``) in a process of its own, so the
    real-time work of neither shares this process' interpreter lock."""
    require(_imports(), "aiortc, aiohttp and selenium (pip install 'stagevox[test]')")
    procs = []
    try:
        server = ServerProcess()
        procs.append(server.proc)
        gw = GatewayProcess(server)
        procs.append(gw.proc)
        yield server, gw
        for p in reversed(procs):
            p.popen.send_signal(signal.SIGTERM)
            status, _, err = p.finish(20)
            assert status == 0, err
    finally:
        for p in procs:
            p.kill()


@pytest.fixture(scope="module")
def capture_wav(tmp_path_factory, speech):
    """The fake microphone's file (Chromium loops it): lead-in, the judged
    speech, a little silence; 16-bit 48 kHz mono."""
    lead = np.resize(speech[::-1], int(LEAD_S * RATE))
    signal = np.concatenate([lead, speech[JUDGED], np.zeros(RATE // 2, np.float32)])
    path = tmp_path_factory.mktemp("capture") / "speech.wav"
    sf.write(path, signal, RATE, subtype="PCM_16")
    return path


def chromium(*args):
    """A headless Chromium (Selenium) with a fake microphone and ``args`` besides."""
    require(chromium_driver.available(),
            "chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    return chromium_driver.launch(*args)


@pytest.fixture(scope="module")
def browser(room, capture_wav):
    """Headless Chromium that grants the microphone, playing ``capture_wav`` as it."""
    driver = chromium("--use-fake-ui-for-media-stream",
                      f"--use-file-for-fake-audio-capture={capture_wav}",
                      "--autoplay-policy=no-user-gesture-required")
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, element_id):
    return driver.find_element("id", element_id).text


def wait_for_text(driver, element_id, words, timeout=15.0):
    """Wait until the element's text holds ``words``; returns the text."""
    ok = wait_until(lambda: words in text_of(driver, element_id), timeout, 0.1)
    got = text_of(driver, element_id)
    assert ok, f"#{element_id} never said {words!r}; it says {got!r} (error: " \
               f"{text_of(driver, 'error')!r})"
    return got


def leave(driver):
    driver.find_element("id", "leave").click()
    wait_for_text(driver, "state", "not connected")


def locate(reference, received):
    """Align ``received`` to ``reference`` (found anywhere in it, entirely);
    returns ``(aligned, lags)`` as ``live_session.align``."""
    corr = ss.correlate(received, reference, mode="valid", method="fft")
    first = max(0, int(np.argmax(corr)) - int(0.45 * RATE))
    return align(reference, received, first)


class Recorder:
    """A Python listener in the channel pulling 10 ms every 10 ms into a list."""

    def __init__(self, server, uid):
        self.client = engine.Client()
        self.client.join_channel(server.address, CHANNEL, uid, token(uid, "audience"),
                                 "audience", server_key=server.public_key)
        self.frames = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self._stop.is_set():
            _pace(t0, i)
            self.frames.append(self.client.pull_audio(FRAME)[0])
            i += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5.0)
        self.client.leave_channel()

    def audio(self):
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)


def post(gw, path, body, method="POST", headers=None):
    """``(status, json, headers)`` of a request to the gateway."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(gw.url.rstrip("/") + path, data=data, method=method,
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read()), res.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


# ------------------------------------------------------------------ bad input, no browser

def test_bad_requests_get_a_clear_error_and_the_gateway_keeps_serving(room):
    server, gw = room
    cases = [
        (b"not json", 400, "bad_request", "not JSON"),
        ({"channel": CHANNEL, "mode": "listen", "sdp": "v=0"}, 401, "no_token", "no token"),
        ({"channel": CHANNEL, "token": "sv1.xyz", "mode": "listen", "sdp": "v=0"}, 401,
         "malformed_token", "token"),
        ({"channel": CHANNEL, "token": token(3, expire_s=1, now=time.time() - 60),
          "mode": "listen", "sdp": "v=0"}, 401, "expired_token", "expired"),
        ({"channel": "other", "token": token(3), "mode": "listen", "sdp": "v=0"}, 403,
         "wrong_channel", "'lobby'"),
        ({"channel": CHANNEL, "token": token(3), "mode": "sing", "sdp": "v=0"}, 400,
         "bad_request", "listen"),
        ({"channel": CHANNEL, "token": token(3, "audience"), "mode": "talk", "sdp": "v=0"}, 403,
         "no_publish_privilege", "audience"),
        ({"channel": CHANNEL, "token": token(3), "mode": "listen", "sdp": "v=0\r\nnonsense"},
         400, "bad_sdp", "SDP"),
    ]
    for body, status, code, words in cases:
        got_status, got, _ = post(gw, "/api/session", body)
        assert (got_status, got["code"]) == (status, code), (body, got)
        assert words in got["error"], got
    # A forged signature: the gateway (sharing listeners, so holding the
    # secret) refuses a listener itself; a talker is refused by the server.
    forged = token(3)[:-4] + "AAAA"
    for mode, status in (("listen", 401), ("talk", 403)):
        got_status, got, _ = post(gw, "/api/session", {"channel": CHANNEL, "token": forged,
                                                       "mode": mode, "sdp": "v=0"})
        assert (got_status, got["code"]) == (status, "bad_signature"), (mode, got)
    assert post(gw, "/api/session/nope", b"", "DELETE")[0] == 404
    # WHIP and WHEP: the token as a Bearer header, the offer as application/sdp.
    sdp = {"Content-Type": "application/sdp"}
    whip_cases = [
        ("/whip/" + CHANNEL, sdp, 401, "no_token", "Bearer"),
        ("/whip/" + CHANNEL, {**sdp, "Authorization": f"Bearer {token(6, 'audience')}"}, 403,
         "no_publish_privilege", "audience"),
        ("/whip/" + CHANNEL, {"Content-Type": "text/plain",
                              "Authorization": f"Bearer {token(6)}"}, 415, "bad_request", "SDP"),
        ("/whep/other", {**sdp, "Authorization": f"Bearer {token(6)}"}, 403, "wrong_channel",
         "'lobby'"),
        ("/whep/" + CHANNEL, {**sdp, "Authorization": f"Bearer {token(6)}"}, 400, "bad_sdp",
         "SDP"),
    ]
    for path, headers, status, code, words in whip_cases:
        got_status, got, got_headers = post(gw, path, b"v=0\r\nnonsense", headers=headers)
        assert (got_status, got["code"]) == (status, code), (path, headers, got)
        assert words in got["error"], got
        if status == 401:
            assert got_headers["WWW-Authenticate"] == "Bearer"
    with urllib.request.urlopen(gw.url + f"api/info?token={token(4, 'audience')}") as res:
        info = json.loads(res.read())
    assert (info["channel"], info["uid"], info["can_publish"]) == (CHANNEL, 4, False)
    assert "ktv" in info["presets"]

def test_sharing_listeners_needs_the_secret(monkeypatch, capsys):
    """Without the secret, --share-listeners says where it comes from; an empty one is refused."""
    from stagevox import cli
    require(_imports(), "aiortc, aiohttp and selenium (pip install 'stagevox[test]')")
    monkeypatch.delenv("STAGEVOX_SECRET", raising=False)
    key = engine.Server(secret=SECRET).public_key_text
    status = cli.main(["gateway", "--server", "127.0.0.1:9", "--server-key", key,
                       "--http-port", "0", "--share-listeners"])
    assert status == 2 and "STAGEVOX_SECRET" in capsys.readouterr().err
    with pytest.raises(ValueError, match="secret"):
        engine.Gateway(("127.0.0.1", 9), key, http_port=0, secret="")


# ------------------------------------------------------------------ the page in Chromium

def test_page_says_what_is_wrong_with_a_bad_token(room, browser, tmp_path):
    _, gw = room
    browser.get(gw.room_url(CHANNEL, token(5, expire_s=1, now=time.time() - 60)))
    text = wait_for_text(browser, "error", "has expired")
    assert "new link" in text
    assert not browser.find_element("id", "listen").is_enabled()
    browser.save_screenshot(str(tmp_path / "expired_token.png"))

    press_and_read_error(browser, gw.room_url(CHANNEL, token(5)[:-4] + "AAAA"), "listen",
                         "not issued by this room's server", tmp_path / "forged_token.png")

    browser.get(gw.url + "room/" + CHANNEL)
    wait_for_text(browser, "error", "This link has no token")


def test_page_says_when_the_gateway_does_not_answer(room, browser, tmp_path):
    _, gw = room
    browser.get(gw.room_url(CHANNEL, token(7, "audience")))
    wait_for_text(browser, "who", "lets you listen.")
    browser.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        browser.find_element("id", "listen").click()
        wait_for_text(browser, "error", "The gateway does not answer")
        browser.save_screenshot(str(tmp_path / "unreachable.png"))
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
    assert text_of(browser, "state") == "not connected"


def press_and_read_error(driver, url, button, words, screenshot):
    """Open ``url`` (a host token's page), press ``button``, wait for an error
    holding ``words`` and save a screenshot; the page is left not connected."""
    driver.get(url)
    wait_for_text(driver, "who", "listen and talk")
    driver.find_element("id", button).click()
    wait_for_text(driver, "error", words)
    driver.save_screenshot(str(screenshot))
    assert text_of(driver, "state") == "not connected"


def test_page_says_when_the_microphone_is_refused(room, tmp_path):
    _, gw = room
    driver = chromium("--deny-permission-prompts")    # a person who says no
    try:
        press_and_read_error(driver, gw.room_url(CHANNEL, token(14)), "talk",
                             "No microphone permission", tmp_path / "no_microphone.png")
    finally:
        driver.quit()


def test_page_says_when_the_stage_is_full(room, browser, tmp_path):
    server, gw = room
    host = engine.Client()
    host.join_channel(server.address, CHANNEL, 32, token(32), "host",
                      server_key=server.public_key)
    try:
        press_and_read_error(browser, gw.room_url(CHANNEL, token(13)), "talk",
                             "The stage is full", tmp_path / "stage_full.png")
    finally:
        host.leave_channel()


def test_page_talks_and_a_python_listener_hears_it(room, browser, speech, tmp_path):
    server, gw = room
    browser.get(gw.room_url(CHANNEL, token(11)))
    wait_for_text(browser, "who", "listen and talk")
    browser.save_screenshot(str(tmp_path / "loaded.png"))
    # Chromium's noise suppressor alone takes 0.03-0.07 off the STOI of this
    # clean speech: judged here is the gateway's path, the browser's cleanup off.
    browser.find_element("id", "cleanup").click()
    with Recorder(server, 21) as rec:
        browser.find_element("id", "talk").click()
        wait_for_text(browser, "state", "audio connected")
        time.sleep(LEAD_S + len(speech[JUDGED]) / RATE + 1.0)
        browser.save_screenshot(str(tmp_path / "talking.png"))
        assert "on stage" in text_of(browser, "role")
        heard = rec.client.stats()
        # The stage switch: the gateway moves the person's member to the
        # audience and back, and the page shows the role the server gave.
        browser.find_element("id", "stage").click()
        wait_for_text(browser, "role", "audience")
        assert wait_until(lambda: rec.client.remote_users() == [], 5.0)
        browser.find_element("id", "stage").click()
        wait_for_text(browser, "role", "on stage")
        assert wait_until(lambda: rec.client.remote_users() == [11], 5.0)
        # Mute: the gateway stops sending the person's voice; unmute: it sends again.
        browser.find_element("id", "mute").click()
        time.sleep(0.5)
        muted_at = rec.client.stats()["received"]
        time.sleep(0.5)
        assert rec.client.stats()["received"] == muted_at
        browser.find_element("id", "mute").click()
        assert wait_until(lambda: rec.client.stats()["received"] > muted_at + 10, 5.0)
        # With no preset the browser's Opus frames went on as they were
        # (20 ms each); with one, the gateway decodes, applies it and encodes.
        talked_s = LEAD_S + len(speech[JUDGED]) / RATE + 1.0
        passed = person_status(browser)["voice_frames_passed"]
        assert passed >= 0.9 * talked_s / 0.02, passed
        from selenium.webdriver.support.select import Select
        Select(browser.find_element("id", "preset")).select_by_value("ktv")
        time.sleep(0.3)
        before = (person_status(browser)["voice_frames_passed"], rec.client.stats()["received"])
        time.sleep(1.0)
        after = (person_status(browser)["voice_frames_passed"], rec.client.stats()["received"])
        assert after[0] == before[0] and after[1] >= before[1] + 40, (before, after)
    leave(browser)
    received = rec.audio()
    sf.write(tmp_path / "heard.wav", received, RATE)
    aligned, lags = locate(speech[JUDGED], received)
    stoi, pesq = score(speech[JUDGED], aligned)
    print(f"\nbrowser -> Python listener: STOI {stoi:.3f}  PESQ-WB {pesq:.2f}  "
          f"received {heard['received']}  lost {heard['lost']}  concealed {heard['concealed']}  "
          f"lag {np.min(lags) * 1e3 / RATE:.0f}-{np.max(lags) * 1e3 / RATE:.0f} ms after the click")
    assert stoi >= 0.95, f"STOI {stoi:.3f} < 0.95"


def person_status(driver):
    """The gateway's status of the page's person, read from a status socket of one's own."""
    return driver.execute_async_script("""
        const done = arguments[0];
        const ws = new WebSocket(`ws://${location.host}/api/session/${page.session}/ws`);
        ws.onmessage = (ev) => { ws.close(); done(JSON.parse(ev.data)); };""")


def test_page_listens_to_a_python_host(room, browser, speech, tmp_path):
    server, gw = room
    browser.get(gw.room_url(CHANNEL, token(12, "audience")))
    wait_for_text(browser, "who", "lets you listen.")
    assert not browser.find_element("id", "talk").is_enabled()
    host = engine.Client()
    host.join_channel(server.address, CHANNEL, 31, token(31), "host",
                      server_key=server.public_key)
    try:
        browser.find_element("id", "listen").click()
        wait_for_text(browser, "state", "audio connected")
        wait_for_text(browser, "speakers", "speaker 31")
        # The host and this browser, which the gateway's shared member stands for.
        wait_for_text(browser, "people", "2 in the room, 1 on stage")
        browser.execute_script(START_RECORDING_JS)
        stream_speech(host, speech, lambda: browser.save_screenshot(str(tmp_path /
                                                                        "listening.png")))
        data = browser.execute_script("return " + RECORDING_JS)
    finally:
        host.leave_channel()
    leave(browser)
    judge_recording(data, speech, tmp_path / "played.wav", "Python host -> browser")


#: Starts recording what the page plays (``#player``) with ``MediaRecorder``.
START_RECORDING_JS = """
    const rec = new MediaRecorder(document.getElementById('player').srcObject);
    window.recorded = [];
    rec.ondataavailable = (e) => window.recorded.push(e.data);
    rec.start();
    window.recorder = rec;"""

#: Stops the recording: a promise of it as base64 (webm or ogg).
RECORDING_JS = """new Promise((done) => {
    window.recorder.onstop = async () => {
      const blob = new Blob(window.recorded, {type: window.recorder.mimeType});
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let s = '';
      for (let i = 0; i < bytes.length; i += 8192)
        s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
      done(btoa(s));
    };
    window.recorder.stop();
  })"""


def stream_speech(host, speech, midway):
    """Push, in real time, LEAD_S of other speech, the judged speech and 1 s
    of silence from ``host``; ``midway()`` is called 3 s into the judged part."""
    lead = np.resize(speech[::-1], int(LEAD_S * RATE))
    signal = np.concatenate([lead, speech[JUDGED], np.zeros(RATE, np.float32)])
    t0 = time.monotonic()
    for i in range(len(signal) // FRAME):
        _pace(t0, i)
        host.push_audio(signal[i * FRAME:(i + 1) * FRAME])
        if i == int(LEAD_S * 100) + 300:
            midway()


def judge_recording(data, speech, path, label):
    """Decode the page's base64 recording ``data``, keep it at ``path``, and
    check its STOI against the judged speech is at least 0.90 (printed)."""
    received = decode(base64.b64decode(data))
    sf.write(path, received, RATE)
    aligned, _ = locate(speech[JUDGED], received)
    stoi, pesq = score(speech[JUDGED], aligned)
    print(f"\n{label}: STOI {stoi:.3f}  PESQ-WB {pesq:.2f}")
    assert stoi >= 0.90, f"STOI {stoi:.3f} < 0.90"


def decode(data):
    """What PyAV decodes of ``data`` (a webm/ogg file), 48 kHz mono float32."""
    import av
    out = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


# ------------------------------------------------------------------ WHIP and WHEP

def test_whip_publishes_into_the_channel_and_whep_listens(room, speech, tmp_path):
    """aiortc peers (in a process of their own, ``whip_peers.py``) as the
    standard tools: one publishes with WHIP, one listens with WHEP; a Python
    listener hears the publisher too."""
    server, gw = room
    judged = speech[2 * RATE:7 * RATE]
    lead = np.resize(speech[::-1], int(LEAD_S * RATE))
    sf.write(tmp_path / "published.wav",
             np.concatenate([lead, judged, np.zeros(RATE // 2, np.float32)]), RATE,
             subtype="FLOAT")
    with Recorder(server, 41) as rec:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("whip_peers.py")), gw.url, CHANNEL,
             token(42), token(43, "audience"), tmp_path / "published.wav", tmp_path / "WHEP.wav"],
            capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    whep, _ = sf.read(tmp_path / "WHEP.wav", dtype="float32")
    for name, received, threshold in (("WHIP -> Python listener", rec.audio(), 0.95),
                                      ("WHIP -> WHEP", whep, 0.90)):
        sf.write(tmp_path / f"{name.split()[-1]}.wav", received, RATE)
        aligned, _ = locate(judged, received)
        stoi, pesq = score(judged, aligned)
        print(f"\n{name}: STOI {stoi:.3f}  PESQ-WB {pesq:.2f}")
        assert stoi >= threshold, f"{name}: STOI {stoi:.3f} < {threshold}"


def test_a_peer_that_goes_away_is_forgotten_and_leaves_the_channel():
    """An aiortc peer listens, then closes its connection without a DELETE:
    the gateway closes the person (the member leaves the channel) and forgets them."""
    import asyncio

    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    require(_imports(), "aiortc, aiohttp and selenium (pip install 'stagevox[test]')")

    async def listen_and_vanish(server, gw):
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gw.url}whep/{CHANNEL}", data=pc.localDescription.sdp,
                                    headers={"Content-Type": "application/sdp",
                                             "Authorization": f"Bearer {token(44)}"}) as res:
                assert res.status == 201, await res.text()
                answer = await res.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert server.members(CHANNEL)
        for _ in range(100):
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        assert pc.connectionState == "connected"
        await pc.close()

    with engine.Server(secret=SECRET) as server, \
            engine.Gateway(server.address, server.public_key, http_port=0) as gw:
        asyncio.run(listen_and_vanish(server, gw))
        assert wait_until(lambda: not gw.people, 10.0), gw.people
        assert wait_until(lambda: not server.members(CHANNEL), 5.0), server.members(CHANNEL)


# ------------------------------------------------------------------ shared listeners

def test_listeners_share_one_member_and_one_encoder_and_hear_the_host(speech, monkeypatch):
    """With the secret, WHEP listeners of a channel are one member of it, whose
    mix is encoded once and sent as it is: every listener hears the host (STOI),
    the channel holds the host and one gateway member, a forged token is refused
    by the gateway, a listener whose token expires is ended, and the member
    leaves with the last listener.  A listener whose offer has only G.711
    (PCMU) gets the same mix encoded for it alone, and hears it band-limited.
    The member's token lives 1 s here: the gateway renews it and it stays."""
    import asyncio

    import aiohttp
    from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
    require(_imports(), "aiortc, aiohttp and selenium (pip install 'stagevox[test]')")
    from stagevox.engine.gateway import shared
    monkeypatch.setattr(shared, "FEED_TOKEN_S", 1)
    judged = speech[2 * RATE:2 * RATE + 3 * RATE // 2]
    signal = np.concatenate([np.resize(speech[::-1], RATE // 4), judged,
                             np.zeros(RATE // 4, np.float32)])

    async def whep(session, url, tok, codec="audio/opus"):
        """A listening aiortc peer offering ``codec`` only: ``(pc, location, frames)``
        (frames at their own rate), or the error's status and JSON."""
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="recvonly").setCodecPreferences(
            [c for c in RTCRtpReceiver.getCapabilities("audio").codecs if c.mimeType == codec])
        frames = []

        @pc.on("track")
        def on_track(track):
            async def collect():
                while True:
                    try:
                        frame = await track.recv()
                    except Exception:       # the track ended
                        return
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    frames.append((frame.sample_rate, pcm.mean(axis=1) / 32768.0))
            asyncio.ensure_future(collect())

        await pc.setLocalDescription(await pc.createOffer())
        async with session.post(f"{url}whep/{CHANNEL}", data=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp",
                                         "Authorization": f"Bearer {tok}"}) as res:
            if res.status != 201:
                await pc.close()
                return res.status, await res.json()
            answer, location = await res.text(), res.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return pc, location, frames

    def speak(host):
        t0 = time.monotonic()
        for i in range(len(signal) // FRAME):
            _pace(t0, i)
            host.push_audio(signal[i * FRAME:(i + 1) * FRAME])

    async def listen(server, gw, host):
        async with aiohttp.ClientSession() as session:
            forged = engine.make_token("not-the-secret", CHANNEL, 60, "audience")
            status, error = await whep(session, gw.url, forged)
            assert (status, error["code"]) == (401, "bad_signature"), error
            peers = [await whep(session, gw.url, token(uid, "audience")) for uid in (61, 62)]
            peers.append(await whep(session, gw.url, token(63, "audience"), "audio/PCMU"))
            expiring = await whep(session, gw.url, token(64, "audience", expire_s=1.5))
            feed = gw.feeds[CHANNEL]
            assert feed.users == 4 and len(feed.tracks) == 4
            assert set(server.members(CHANNEL)) == {51, feed.uid}
            for _ in range(100):
                if all(pc.connectionState == "connected" for pc, _, _ in peers):
                    break
                await asyncio.sleep(0.05)
            frames_before, t0 = feed.frames, time.monotonic()
            await asyncio.to_thread(speak, host)
            encoded = feed.frames - frames_before
            assert feed.renewals >= 1 and set(server.members(CHANNEL)) == {51, feed.uid}
            # One encode per 20 ms for the channel, not one per listener.
            assert encoded <= (time.monotonic() - t0) / 0.02 + 3, encoded
            tracks = {pid: gw.people[pid].track for pid in gw.people}
            for _ in range(30):            # the token expires 1.5 to 2.5 s after it was made
                if len(gw.people) == 3:
                    break
                await asyncio.sleep(0.1)
            ids = [location.rsplit("/", 1)[1] for _, location, _ in peers]
            assert set(gw.people) == set(ids)
            # Opus goes to the Opus listeners as it was encoded; PCMU is encoded for its own.
            assert [tracks[i].encoded for i in ids] == [True, True, False]
            for pc, location, frames in peers:
                async with session.delete(gw.url.rstrip("/") + location) as res:
                    assert res.status == 200
                await pc.close()
            await expiring[0].close()
            return [ss.resample_poly(np.concatenate([x for _, x in frames]), RATE // frames[0][0],
                                     1) for _, _, frames in peers]

    with engine.Server(secret=SECRET) as server, \
            engine.Gateway(server.address, server.public_key, http_port=0, secret=SECRET) as gw:
        host = engine.Client()
        host.join_channel(server.address, CHANNEL, 51, token(51), "host",
                          server_key=server.public_key)
        try:
            heard = asyncio.run(listen(server, gw, host))
            assert wait_until(lambda: not gw.feeds and set(server.members(CHANNEL)) == {51},
                              5.0), (gw.feeds, server.members(CHANNEL))
        finally:
            host.leave_channel()
    # G.711 carries 8 kHz audio: its listener is judged against the speech so band-limited.
    narrow = ss.resample_poly(ss.resample_poly(judged, 1, 6), 6, 1).astype(np.float32)
    for (name, reference), received in zip([("Opus", judged), ("Opus", judged),
                                            ("PCMU", narrow)], heard):
        aligned, _ = locate(reference, received)
        stoi, _ = score(reference, aligned)
        print(f"{name} listener: STOI {stoi:.3f}")
        assert stoi >= 0.90, f"shared {name} listener: STOI {stoi:.3f} < 0.90"

