"""stagevox.dsp: effects, the processing graph and file processing.

Every processor follows one protocol (see ``processor.Processor``)::

    fx = dsp.Equalizer(gains_db=[3, 0, 0, 0, 0, 0, 0, 2, 0, 0])
    y = fx.process(x, sample_rate=48000)   # or fx(x, 48000); state carries over

``registry`` maps registry names (``equalizer``, ``limiter``, ...) to classes.

Spatial audio: ``Spatializer`` (HRTF, mono in, binaural out), ``Panner``
(level only), ``SpatialScene`` (many remote voices around a listener),
``Hrtf`` (the bundled MIT KEMAR set or any SOFA file).
"""

from .audio import as_block, check_sample_rate, db_to_gain
from .dynamics import Compressor, Limiter, NoiseGate
from .equalizer import BAND_CENTERS_HZ, Equalizer
from .filters import BandPass, HighPass, HighShelf, LowPass, LowShelf, Notch, PeakFilter
from .gain import Gain, Pan
from .graph import Chain, Graph, Mix
from .mixer import Mixer
from .convolution import ConvolutionReverb, RoomReverb
from .deesser import DeEsser
from .delay import Delay
from .distortion import Bitcrush, Distortion, Exciter
from .modulation import Chorus, Flanger, RingModulator, Tremolo, Vibrato
from .pitch import FormantShift, PitchCorrection, PitchShift
from .pitch_tracker import PitchTracker
from .reverb import Reverb
from .hrtf import Hrtf, HrtfError
from .panner import Panner
from .processor import Processor, registry
from .sofa import SofaError
from .spatial_scene import SpatialScene, Zone
from .spatializer import Spatializer
from .fileio import AudioFileError, process_file
from . import samples

__all__ = [
    "BAND_CENTERS_HZ", "BandPass", "Chain", "Compressor", "Equalizer", "Gain", "Graph",
    "HighPass", "HighShelf", "Limiter", "LowPass", "LowShelf", "Mix", "Mixer", "NoiseGate",
    "Notch", "Pan", "PeakFilter", "Processor", "as_block", "check_sample_rate", "db_to_gain",
    "AudioFileError", "process_file", "registry", "samples",
    "Hrtf", "HrtfError", "Panner", "SofaError", "SpatialScene", "Spatializer", "Zone",
    "ConvolutionReverb", "Reverb", "RoomReverb",
    "FormantShift", "PitchCorrection", "PitchShift", "PitchTracker",
    "Bitcrush", "Chorus", "DeEsser", "Delay", "Distortion", "Exciter", "Flanger",
    "RingModulator", "Tremolo", "Vibrato",
]
