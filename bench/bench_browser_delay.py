"""Mouth-to-ear delay through the gateway with a real browser, both ways.

A headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven
by Selenium) opens the room page of a gateway (``engine.Gateway`` in a
process of its own, sharing its listeners) bridged to an ``engine.Server``
on 127.0.0.1:

- **Python host -> browser**: a Python host speaks speech with a marker (a
  30 ms chirp, 1 to 6 kHz) in place of the speech once a second, and notes
  when it pushed each marker; the page presses Listen.  Ear: when the page's
  Web Audio graph renders the marker from the stream the page plays.
- **browser -> Python listener**: Chromium's fake microphone plays a file of
  speech with the same marker once a second; the page presses Talk (the
  page's voice cleanup as the page sets it: on).  Mouth: when the page's
  Web Audio graph renders the marker from its own microphone stream.  Ear:
  when a Python listener on the server pulls it (10 ms every 10 ms).

Both ends on the page are read by an ``AudioWorklet`` tapping the stream
(``MediaStreamAudioSourceNode``), which keeps each block with the audio
context time of its first sample; the context's clock is mapped to the
page's wall clock (``performance.timeOrigin + performance.now()``) from
readings of ``currentTime`` every 50 ms, the earliest reading giving the
render time (within a render callback, about 10 ms).  Python keeps
``time.monotonic`` and maps the page's wall clock with ``time.time``: one
machine, one clock.  What neither end counts: the capture device's buffer
before the page (a real microphone's) and the sound card's output buffer
after it (the page's ``outputLatency`` is printed), as the Python ends
count neither.  The browser's own jitter buffer (NetEq) adapts to the
loopback path, unlike the aiortc stand-ins of ``bench_gateway.py``.

Printed: the median delay each way over the markers found, with the
Python-to-Python delay beside it (the same markers to a Python listener on
the server, no gateway); target under 150 ms median each way.

Usage::

    python bench/bench_browser_delay.py                 # 15 s each way
    python bench/bench_browser_delay.py --seconds 30 --no-cleanup
"""

import argparse
import base64
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import chromium_driver  # noqa: E402
from bench_engine import wait_reply  # noqa: E402
from bench_gateway import (CHANNEL, MARKER_EVERY_S, RATE, SECRET, TARGET_DELAY_MS,  # noqa: E402
                           Host, Reference, chirp, delays_ms, gateway_main, marker_times)
from stagevox import dsp, engine  # noqa: E402

#: Two Opus encodings in tandem (the host's and the gateway's for the page;
#: the browser's and the gateway's where a preset is on) bring the marker's
#: normalised correlation down to about 0.55-0.75; speech alone reaches
#: about 0.25.
TANDEM_THRESHOLD = 0.45
LISTENER_UID = 20
TALKER_UID = 21

#: Installed before the page's own script: keeps the page's microphone
#: stream (``window.micStream``) and defines ``window.tapStream(stream,
#: name)``, which records a stream's audio into ``window.taps[name]``.
TAP_JS = r"""
(() => {
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => (window.micStream = await gum(c));
  window.taps = {};
  const worklet = `class Tap extends AudioWorkletProcessor {
    constructor() { super(); this.buf = new Float32Array(4800); this.n = 0; this.t = 0; }
    flush() {
      if (this.n) this.port.postMessage({t: this.t, data: this.buf.slice(0, this.n)});
      this.n = 0;
    }
    process(inputs) {
      const x = inputs[0] && inputs[0][0];
      const next = this.t + this.n / sampleRate;
      if (!x || (this.n && Math.abs(currentTime - next) > 0.5 / sampleRate)) this.flush();
      if (!x) return true;
      if (this.n === 0) this.t = currentTime;
      this.buf.set(x, this.n);
      this.n += x.length;
      if (this.n + 128 > this.buf.length) this.flush();
      return true;
    }
  }
  registerProcessor("tap", Tap);`;
  window.tapStream = async (stream, name) => {
    const ctx = new AudioContext({sampleRate: 48000});
    await ctx.resume();
    const url = URL.createObjectURL(new Blob([worklet], {type: "application/javascript"}));
    await ctx.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(ctx, "tap");
    const tap = {ctx, chunks: [], clock: []};
    window.taps[name] = tap;
    node.port.onmessage = (e) => tap.chunks.push(e.data);
    ctx.createMediaStreamSource(stream).connect(node);
    const silent = ctx.createGain();
    silent.gain.value = 0;
    node.connect(silent).connect(ctx.destination);
    tap.timer = setInterval(() => tap.clock.push(
      [ctx.currentTime, performance.timeOrigin + performance.now()]), 50);
  };
})();
"""

#: Takes what a tap recorded since the last call (base64 float32 blocks).
TAKE_JS = """
const tap = window.taps[arguments[0]];
const b64 = (a) => {
  const u = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let s = "";
  for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
  return btoa(s);
};
return {chunks: tap.chunks.splice(0).map((c) => [c.t, b64(c.data)]),
        clock: tap.clock.splice(0), rate: tap.ctx.sampleRate,
        output_latency: tap.ctx.outputLatency || 0};
"""


def microphone_file(path, seconds):
    """The fake microphone's file (Chromium loops it): speech with the marker
    in place of the speech at the start of every second; 16-bit 48 kHz mono."""
    speech = dsp.samples.speech(RATE)
    speech = (0.3 * speech / np.max(np.abs(speech))).astype(np.float32)
    signal = np.resize(speech, int(seconds * RATE))
    marker = chirp()
    period = int(MARKER_EVERY_S * RATE)
    for start in range(0, signal.size - period + 1, period):
        signal[start:start + int(0.05 * RATE)] = 0.0
        signal[start:start + marker.size] = marker
    sf.write(path, signal, RATE, subtype="PCM_16")


class PageTap:
    """What a tap in the page recorded, as ``(time.monotonic of the first
    sample, samples)`` blocks."""

    def __init__(self, driver, name):
        self.driver, self.name = driver, name
        self.frames, self.clock = [], []
        self.output_latency = 0.0

    def take(self):
        got = self.driver.execute_script(TAKE_JS, self.name)
        if got["rate"] != RATE:
            raise RuntimeError(f"the page's audio runs at {got['rate']} Hz, not {RATE}")
        self.output_latency = got["output_latency"]
        self.clock += got["clock"]
        for t, data in got["chunks"]:
            self.frames.append((t, np.frombuffer(base64.b64decode(data), np.float32)))

    def blocks(self):
        """The blocks with monotonic times of their render (see the module docstring)."""
        if not self.clock:
            raise RuntimeError("the page's audio clock never ran")
        render_ms = min(wall - 1e3 * ctx_time for ctx_time, wall in self.clock)
        wall_to_mono = time.time() - time.monotonic()
        return [((1e3 * t + render_ms) / 1e3 - wall_to_mono, x) for t, x in self.frames]


def press(driver, button, words, timeout=20.0):
    """Click ``button`` on the page and wait until its state says ``words``."""
    driver.find_element("id", button).click()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = driver.find_element("id", "state").text
        if words in state:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the page never said {words!r} after {button}: state {state!r}, "
                       f"error {driver.find_element('id', 'error').text!r}")


def record(driver, tap, seconds):
    """Let ``seconds`` pass, taking the page's tap every 2 s."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        tap.take()


def median(values):
    return f"{np.median(values):.0f} ms over {len(values)} markers" if values else "no marker found"


def verdict(values):
    if not values:
        return "FAIL (no marker found)"
    return "PASS" if np.median(values) < TARGET_DELAY_MS else "FAIL"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds each way")
    ap.add_argument("--no-cleanup", action="store_true",
                    help="talk with the page's voice cleanup (AEC, NS, AGC) off")
    args = ap.parse_args()
    print(f"bench_browser_delay: {args.seconds:g} s each way; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, engine.Server(secret=SECRET) as server:
        mic = Path(tmp) / "microphone.wav"
        microphone_file(mic, 10.0)
        gw_conn, child = ctx.Pipe()
        gw_proc = ctx.Process(target=gateway_main,
                              args=(child, server.address, server.public_key, True, False, 0))
        gw_proc.start()
        driver = None
        try:
            url, _ = wait_reply(gw_conn, 60, "gateway")
            driver = chromium_driver.launch("--use-fake-ui-for-media-stream",
                                            f"--use-file-for-fake-audio-capture={mic}",
                                            "--autoplay-policy=no-user-gesture-required")
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TAP_JS})
            reference = Reference(server)
            marker = chirp()

            # Python host -> browser.
            host = Host(server)
            driver.get(f"{url.rstrip('/')}/room/{CHANNEL}?token="
                       + engine.make_token(SECRET, CHANNEL, LISTENER_UID, "audience"))
            press(driver, "listen", "audio connected")
            driver.execute_async_script(
                "window.tapStream(document.getElementById('player').srcObject, 'ear')"
                ".then(arguments[0])")
            ear = PageTap(driver, "ear")
            time.sleep(2.0)                      # the browser's jitter buffer settles
            ear.take()
            ear.frames.clear()
            reference.take()
            record(driver, ear, args.seconds)
            to_page = delays_ms(ear.blocks(), marker, list(host.markers), TANDEM_THRESHOLD)
            gw_conn.send("stats")
            feed_buffer_ms = wait_reply(gw_conn, 10, "gateway")["feed_buffer_ms"]
            direct = delays_ms(reference.take(), marker, list(host.markers))
            out_latency = ear.output_latency
            host.stop()
            driver.find_element("id", "leave").click()
            time.sleep(1.0)

            # Browser -> Python listener.
            driver.get(f"{url.rstrip('/')}/room/{CHANNEL}?token="
                       + engine.make_token(SECRET, CHANNEL, TALKER_UID, "host"))
            if args.no_cleanup:
                driver.find_element("id", "cleanup").click()
            press(driver, "talk", "audio connected")
            driver.execute_async_script("window.tapStream(window.micStream, 'mouth')"
                                        ".then(arguments[0])")
            mouth = PageTap(driver, "mouth")
            time.sleep(2.0)
            mouth.take()
            mouth.frames.clear()
            reference.take()
            record(driver, mouth, args.seconds)
            spoken = marker_times(mouth.blocks(), marker)
            from_page = delays_ms(reference.take(), marker, spoken, TANDEM_THRESHOLD)
            driver.find_element("id", "leave").click()
            reference.stop()
        finally:
            if driver is not None:
                driver.quit()
            gw_conn.send("stop")
            gw_proc.join(20)
            if gw_proc.is_alive():
                gw_proc.kill()

    print(f"Python host -> gateway -> Chromium page: {median(to_page)}  "
          f"target < {TARGET_DELAY_MS:.0f} ms: {verdict(to_page)}")
    print(f"  the same markers to a Python listener on the server: {median(direct)}; the "
          f"gateway's member's jitter buffer held {feed_buffer_ms:.0f} ms at the end")
    print(f"  the page's output latency on top (its sound device): {1e3 * out_latency:.0f} ms")
    cleanup = "off" if args.no_cleanup else "on"
    print(f"Chromium page (voice cleanup {cleanup}) -> gateway -> Python listener: "
          f"{median(from_page)}  target < {TARGET_DELAY_MS:.0f} ms: {verdict(from_page)}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if verdict(to_page) == verdict(from_page) == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
