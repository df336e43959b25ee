"""The browser gateway's web page in a real headless Firefox (WebDriver BiDi).

The same page and gateway as ``test_engine_gateway.py`` (Chromium), in the
other browser engine the issue names.  Firefox's fake microphone is a tone
it makes itself (it cannot play a file), so the talk path is judged on that
tone: the page records its own microphone, and a
Python listener on the channel must hear the same tone, steadily.  The
listen path is judged on speech, as with Chromium: a Python host streams
it, the page records what it plays (``MediaRecorder``), STOI at least 0.90.
"""

import base64
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import require
from firefox_bidi import Firefox, find_firefox
from live_session import RATE
from stagevox import engine
from test_engine_gateway import (CHANNEL, RECORDING_JS, START_RECORDING_JS,  # noqa: F401
                                 Recorder, decode, judge_recording, room, stream_speech,
                                 token)


@pytest.fixture(scope="module")
def firefox(room):
    executable = find_firefox()
    require(executable is not None, "Firefox (Debian: apt-get install firefox-esr)")
    browser = Firefox(executable)
    try:
        yield browser
    finally:
        browser.quit()


def wait_for_text(browser, element_id, words, timeout=15.0):
    """Wait until the element's text holds ``words``; returns the text."""
    deadline = time.monotonic() + timeout
    while True:
        got = browser.text(element_id) or ""
        if words in got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"#{element_id} never said {words!r}; it says {got!r} "
                                 f"(error: {browser.text('error')!r})")
        time.sleep(0.1)


def leave(browser):
    browser.click("leave")
    wait_for_text(browser, "state", "not connected")


#: What the page's microphone gives, recorded in the page for a second
#: (``MediaRecorder``; an AudioContext does not run in a headless Firefox
#: without a sound card), as base64 Ogg/Opus.
RECORD_MIC_JS = """
new Promise(async (done) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const rec = new MediaRecorder(stream);
  const parts = [];
  rec.ondataavailable = (e) => parts.push(e.data);
  rec.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    const bytes = new Uint8Array(await new Blob(parts, {type: rec.mimeType}).arrayBuffer());
    let s = '';
    for (let i = 0; i < bytes.length; i += 8192)
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    done(btoa(s));
  };
  rec.start();
  setTimeout(() => rec.stop(), 1500);
})
"""


def tone(x):
    """``(frequency Hz, share of the energy within 4 Hz of it)`` of ``x`` at RATE."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    peak = int(np.argmax(spectrum))
    width = int(np.ceil(4.0 / freqs[1]))
    return freqs[peak], spectrum[max(0, peak - width):peak + width + 1].sum() / spectrum.sum()


def test_firefox_talks_and_a_python_listener_hears_its_microphone(room, firefox, tmp_path):
    server, gw = room
    firefox.get(gw.room_url(CHANNEL, token(41)))
    wait_for_text(firefox, "who", "listen and talk")
    mic = decode(base64.b64decode(firefox.run(RECORD_MIC_JS)))
    mic_hz, mic_purity = tone(mic[RATE // 4:])
    assert mic_purity >= 0.9, f"the page's microphone is not one tone: {mic_hz} Hz, {mic_purity}"
    firefox.save_screenshot(tmp_path / "firefox_loaded.png")
    with Recorder(server, 51) as rec:
        firefox.click("talk")
        wait_for_text(firefox, "state", "audio connected")
        assert "on stage" in firefox.text("role")
        time.sleep(4.0)
        firefox.save_screenshot(tmp_path / "firefox_talking.png")
        heard = rec.client.stats()
    leave(firefox)
    received = rec.audio()
    sf.write(tmp_path / "firefox_heard.wav", received, RATE)
    # The last 2 s the listener heard: one tone, at the page's frequency.
    tail = received[-2 * RATE - RATE // 2:-RATE // 2]
    heard_hz, near = tone(tail)
    pieces = np.sqrt(np.mean(tail.reshape(-1, 960) ** 2, axis=1))
    print(f"\nFirefox -> Python listener: page's microphone tone {mic_hz:.0f} Hz, heard "
          f"{heard_hz:.1f} Hz, {near:.3f} of the energy within 4 Hz of it, 20 ms levels "
          f"{pieces.min():.3f}-{pieces.max():.3f} (median {np.median(pieces):.3f}); "
          f"received {heard['received']} lost {heard['lost']}")
    # Both spectra have bins of 0.8 Hz or finer: the two measures agree within 2 Hz.
    assert abs(heard_hz - mic_hz) <= 2.0, (heard_hz, mic_hz)
    assert near >= 0.9, near
    # Steadily: at least 95 % of the 20 ms pieces at half the median level or
    # more (a concealed packet lost on a busy machine may dip one piece).
    steady = np.mean(pieces >= 0.5 * np.median(pieces))
    assert steady >= 0.95, (steady, pieces.min())


def test_firefox_listens_to_a_python_host(room, firefox, speech, tmp_path):
    server, gw = room
    firefox.get(gw.room_url(CHANNEL, token(42, "audience")))
    wait_for_text(firefox, "who", "lets you listen.")
    host = engine.Client()
    host.join_channel(server.address, CHANNEL, 52, token(52), "host",
                      server_key=server.public_key)
    try:
        firefox.click("listen")
        wait_for_text(firefox, "state", "audio connected")
        wait_for_text(firefox, "speakers", "speaker 52")
        firefox.run(START_RECORDING_JS)
        stream_speech(host, speech,
                      lambda: firefox.save_screenshot(tmp_path / "firefox_listening.png"))
        data = firefox.run(RECORDING_JS)
    finally:
        host.leave_channel()
    leave(firefox)
    judge_recording(data, speech, tmp_path / "firefox_played.wav", "Python host -> Firefox")
