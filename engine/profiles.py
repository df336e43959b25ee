"""Audio profiles of a published stream: channels, bitrate and Opus application.

``Client.set_audio_profile(name)`` picks one before joining or between songs.
The jitter buffer, RED and FEC do not depend on the profile.  The channel
count reaches listeners inside every Opus packet (the stereo flag of the TOC
byte, RFC 6716 section 3.1); a listener's decoder gives its own layout
(libopus mixes stereo down for a mono listener, or copies mono to both
channels of a stereo one), so no control message has to carry it and a
change between songs takes effect from the next packet.
"""

from dataclasses import dataclass

from stagevox.dsp.errors import ParameterError


@dataclass(frozen=True)
class AudioProfile:
    """One profile: ``channels`` (1 or 2), ``bitrate`` (bit/s) and the Opus
    ``application`` (``"voip"`` for speech, ``"audio"`` for music)."""

    name: str
    channels: int
    bitrate: int
    application: str


PROFILES = {p.name: p for p in (
    AudioProfile("speech", 1, 32000, "voip"),
    AudioProfile("music_standard", 1, 64000, "audio"),
    AudioProfile("music_standard_stereo", 2, 80000, "audio"),
    AudioProfile("music_high_quality", 1, 96000, "audio"),
    AudioProfile("music_high_quality_stereo", 2, 128000, "audio"),
)}
#: The profile a client starts with.
DEFAULT_PROFILE = "speech"
#: Scenarios ``set_audio_profile`` accepts.  Only the default exists so far:
#: it changes nothing beyond the profile itself.
SCENARIOS = ("default",)


def audio_profile(name, scenario="default"):
    """The ``AudioProfile`` called ``name`` (see ``PROFILES``).

    Raises ``ParameterError`` naming the valid profiles (or scenarios) for
    an unknown ``name`` (or ``scenario``).
    """
    if name not in PROFILES:
        raise ParameterError(f"audio profile must be one of {', '.join(PROFILES)}; "
                             f"got {name!r}")
    if scenario not in SCENARIOS:
        raise ParameterError(f"audio scenario must be one of {', '.join(SCENARIOS)}; "
                             f"got {scenario!r}")
    return PROFILES[name]
