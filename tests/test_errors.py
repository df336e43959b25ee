"""One error root: every error the package raises on purpose is a StagevoxError."""

import importlib
import inspect
import pickle
import pkgutil

import numpy as np
import pytest
from stagevox import dsp, engine, presets
from stagevox.dsp import spec
from stagevox.dsp.errors import ParameterError, ProtocolError, RefusedError, StagevoxError
from stagevox.dsp.fileio import AudioFileError
from stagevox.dsp.hrtf import HrtfError
from stagevox.dsp.sofa import SofaError
from stagevox.engine import control, rtp, token


def _modules(package):
    yield package.__name__
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield info.name


def public_error_classes():
    """(qualified name, class) for every public exception class defined in a
    module of dsp, presets or engine."""
    found = {}
    for package in (dsp, presets, engine):
        for name in _modules(package):
            module = importlib.import_module(name)
            for attr, value in vars(module).items():
                if (inspect.isclass(value) and issubclass(value, BaseException)
                        and value.__module__ == name and not attr.startswith("_")):
                    found[f"{name}.{attr}"] = value
    return found


ERRORS = public_error_classes()


def test_the_known_errors_are_found():
    expected = {
        "stagevox.dsp.errors.StagevoxError", "stagevox.dsp.errors.ParameterError",
        "stagevox.dsp.errors.ProtocolError", "stagevox.dsp.errors.RefusedError",
        "stagevox.dsp.fileio.AudioFileError", "stagevox.dsp.sofa.SofaError",
        "stagevox.dsp.hrtf.HrtfError", "stagevox.presets.PresetError",
        "stagevox.engine.rtp.PacketError", "stagevox.engine.control.ControlError",
        "stagevox.engine.token.TokenError", "stagevox.engine.codec.CodecError",
        "stagevox.engine.cli.CommandError",
    }
    assert expected <= set(ERRORS)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_public_error_is_a_stagevox_error(name):
    assert issubclass(ERRORS[name], StagevoxError)


def test_the_hierarchy():
    assert issubclass(ParameterError, ValueError)
    assert issubclass(ProtocolError, ValueError)
    assert issubclass(RefusedError, RuntimeError)
    assert issubclass(engine.CodecError, RuntimeError)
    for cls in (AudioFileError, SofaError, HrtfError, presets.PresetError):
        assert issubclass(cls, ParameterError) and issubclass(cls, ValueError)
    for cls in (engine.PacketError, engine.ControlError, engine.TokenError):
        assert issubclass(cls, ProtocolError) and issubclass(cls, ValueError)
    assert not issubclass(RefusedError, ValueError)


def test_exported_from_dsp_and_engine():
    for module in (dsp, engine):
        assert module.StagevoxError is StagevoxError
        assert module.ParameterError is ParameterError
        assert module.ProtocolError is ProtocolError
    assert dsp.RefusedError is RefusedError
    assert engine.RefusedError is RefusedError  # what Client.join_channel raises


def test_a_bad_processor_parameter_raises_parameter_error():
    with pytest.raises(ParameterError, match="gain_db"):
        dsp.Gain(gain_db=1000.0)
    fx = dsp.Gain()
    with pytest.raises(ParameterError, match="gain_db"):
        fx.gain_db = 1000.0
    with pytest.raises(ParameterError, match="no parameter"):
        dsp.Gain(volume=1.0)
    with pytest.raises(ParameterError, match="no parameter"):
        fx.set_params(volume=1.0)
    with pytest.raises(ParameterError, match="sample_rate"):
        fx.process(np.zeros(10, np.float32), 96000)
    with pytest.raises(ParameterError, match="channel 0, sample 3"):
        fx.process(np.array([0, 0, 0, np.nan], np.float32), 48000)
    with pytest.raises(ParameterError, match="unknown effect"):
        spec.build_effect("gian:gain_db=3")
    with pytest.raises(ParameterError, match="gain_db"):
        spec.build_effect("gain:gain_db=1000")


def test_a_malformed_rtp_packet_raises_protocol_error():
    with pytest.raises(ProtocolError, match="too short"):
        rtp.RtpPacket.parse(b"\x80\x60")
    with pytest.raises(ProtocolError):
        rtp.RtpPacket.parse(bytes(12))  # version 0


def test_a_malformed_control_message_raises_protocol_error():
    with pytest.raises(ProtocolError):
        control.decode(b"SV")


def test_a_bad_token_raises_protocol_error_with_its_code():
    secret = b"server secret, 32 bytes of it..!"
    good = token.make_token(secret, "room", 7, "host", now=1_700_000_000.0)
    with pytest.raises(ProtocolError) as caught:
        token.verify_token(secret, "sv1.not-a-token", "room", 7, now=1_700_000_000.0)
    assert caught.value.code == "malformed_token"
    with pytest.raises(ProtocolError) as caught:
        token.verify_token(b"another secret", good, "room", 7, now=1_700_000_000.0)
    assert caught.value.code == "bad_signature"
    with pytest.raises(ProtocolError) as caught:
        token.verify_token(secret, "", "room", 7)
    assert caught.value.code == "no_token"


def test_refused_error_carries_code_and_reason():
    exc = RefusedError("full", "the channel has 17 hosts")
    assert (exc.code, exc.reason) == ("full", "the channel has 17 hosts")
    assert str(exc) == "refused (full): the channel has 17 hosts"
    assert isinstance(exc, StagevoxError) and isinstance(exc, RuntimeError)
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.code, copy.reason, str(copy)) == (
        RefusedError, exc.code, exc.reason, str(exc))
