"""Where each public name of ``stagevox.dsp`` is defined.

``stagevox.dsp`` imports a module only when one of its names is first
used, and its Numba kernels are imported only when a processor is built
(``lazykernels``): a command that runs an equalizer compiles the
equalizer, not the pitch shifter and the HRTF renderer as well, and listing
the effects compiles nothing.  ``registry`` looks processors up here too.  ``tests/test_processor_protocol.py`` checks these tables against the
classes the modules define.
"""

#: Registered processor class -> module of ``stagevox.dsp`` that defines it.
PROCESSORS = {
    "Compressor": "dynamics", "Limiter": "dynamics", "NoiseGate": "dynamics",
    "Equalizer": "equalizer",
    "BandPass": "filters", "HighPass": "filters", "HighShelf": "filters",
    "LowPass": "filters", "LowShelf": "filters", "Notch": "filters", "PeakFilter": "filters",
    "Gain": "gain", "Pan": "gain",
    "Mixer": "mixer",
    "ConvolutionReverb": "convolution", "RoomReverb": "convolution",
    "DeEsser": "deesser",
    "Delay": "delay",
    "Bitcrush": "distortion", "Distortion": "distortion", "Exciter": "distortion",
    "Chorus": "modulation", "Flanger": "modulation", "RingModulator": "modulation",
    "Tremolo": "modulation", "Vibrato": "modulation",
    "FormantShift": "pitch", "PitchCorrection": "pitch", "PitchShift": "pitch",
    "PitchTracker": "pitch_tracker",
    "Reverb": "reverb",
    "Panner": "panner",
    "Spatializer": "spatializer",
}

#: Other public names -> module.
OTHERS = {
    "BAND_CENTERS_HZ": "equalizer",
    "Hrtf": "hrtf", "HrtfError": "hrtf",
    "SofaError": "sofa",
    "SpatialScene": "spatial_scene", "Zone": "spatial_scene",
}

NAMES = {**PROCESSORS, **OTHERS}
