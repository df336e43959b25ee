"""``engine.devices`` without a sound card: the ring between the card's
callback and the worker (against a plain list as the reference), and how a
device is found by default, index or name.  The real-time tests on a
virtual card are in ``test_engine_devices.py``."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagevox.engine import devices
from stagevox.engine.devices import DeviceError, DeviceInfo, _Ring


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 64),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 80)), max_size=60))
def test_ring_keeps_order_and_drops_what_does_not_fit(capacity, ops):
    ring = _Ring(2, capacity)
    queue = []                                    # the reference: samples waiting, in order
    counter = 0
    for is_write, n in ops:
        if is_write:
            block = np.arange(counter, counter + n, dtype=np.float32) * np.array([[1], [-1]],
                                                                                 np.float32)
            counter += n
            taken = ring.write(block)
            fits = min(n, capacity - len(queue))
            assert taken == fits                  # the newest that does not fit is dropped
            queue += list(block[0, :fits])
        else:
            out = np.full((2, n), np.nan, np.float32)
            got = ring.read_into(out)
            assert got == min(n, len(queue))
            np.testing.assert_array_equal(out[0, :got], queue[:got])
            np.testing.assert_array_equal(out[1, :got], -np.array(queue[:got], np.float32))
            assert np.isnan(out[:, got:]).all()   # nothing written past what was read
            queue = queue[got:]
        assert ring.fill == len(queue)


def test_ring_skip_drops_the_oldest():
    ring = _Ring(1, 8)
    ring.write(np.arange(6, dtype=np.float32)[None])
    assert ring.skip(4) == 4 and ring.skip(10) == 2 and ring.fill == 0
    ring.write(np.arange(10, 15, dtype=np.float32)[None])
    out = np.zeros((1, 5), np.float32)
    assert ring.read_into(out) == 5
    np.testing.assert_array_equal(out[0], np.arange(10, 15))


DEVICES = [
    DeviceInfo(0, "Built-in Microphone", "ALSA", 2, 0, 48000.0, True, False),
    DeviceInfo(1, "Built-in Speakers", "ALSA", 0, 2, 48000.0, False, True),
    DeviceInfo(2, "USB Headset", "ALSA", 1, 2, 44100.0, False, False),
    DeviceInfo(3, "USB Headset (monitor)", "ALSA", 2, 0, 44100.0, False, False),
]


@pytest.fixture
def fake_devices(monkeypatch):
    monkeypatch.setattr(devices, "list_devices", lambda: list(DEVICES))


@pytest.mark.parametrize("spec,kind,index", [
    (True, "input", 0), (None, "output", 1), (2, "input", 2), ("2", "output", 2),
    ("usb headset", "output", 2),           # the only output whose name contains it
    ("USB Headset", "input", 2),            # an exact name wins over names containing it
    ("monitor", "input", 3), ("speakers", "output", 1),
])
def test_find_device_by_default_index_or_name(fake_devices, spec, kind, index):
    assert devices.find_device(spec, kind).index == index


@pytest.mark.parametrize("spec,kind,words", [
    ("usb", "input", "several input devices named 'usb'"),
    ("nothing", "output", "no output device named 'nothing'"),
    (1, "input", "no input device number 1"),         # a speaker is no microphone
    (7, "output", "no output device number 7"),
    ("", "input", "True (the default), an index or a name"),
    (2.5, "input", "True (the default), an index or a name"),
])
def test_find_device_errors_list_the_devices_of_that_kind(fake_devices, spec, kind, words):
    with pytest.raises(DeviceError) as err:
        devices.find_device(spec, kind)
    msg = str(err.value)
    assert words in msg
    if "devices are" in msg:
        listed = {line.split()[-1] for line in msg.splitlines()[1:]}
        wanted = {d.name.split()[-1] for d in DEVICES
                  if (d.max_input_channels if kind == "input" else d.max_output_channels)}
        assert listed == wanted


def test_no_default_device_says_so(monkeypatch):
    monkeypatch.setattr(devices, "list_devices",
                        lambda: [DeviceInfo(5, "Line In", "ALSA", 2, 0, 48000.0, False, False)])
    with pytest.raises(DeviceError, match="(?s)no default input device.*Line In"):
        devices.find_device(True, "input")
    with pytest.raises(ValueError, match="kind must be 'input' or 'output'"):
        devices.find_device(True, "both")
