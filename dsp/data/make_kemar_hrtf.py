"""Rebuild ``kemar_hrtf.npz`` from the MIT KEMAR SOFA file.

    python dsp/data/make_kemar_hrtf.py [SOFA] [OUT]

SOFA defaults to the copy Debian's ``libmysofa1`` package installs
(``/usr/share/libmysofa/MIT_KEMAR_normal_pinna.sofa``); OUT defaults to
``kemar_hrtf.npz`` next to this script.  The conversion is
``stagevox.dsp.Hrtf.from_sofa`` at 48 kHz with 128-tap filters and
diffuse-field equalization (see ``dsp/hrtf_design.py``), plus the
attribution below; the result is deterministic, and the tests check that it
reproduces the bundled file.
"""

import sys
from pathlib import Path

from stagevox.dsp.hrtf import DEFAULT_TAPS_48K, Hrtf

DEFAULT_SOFA = "/usr/share/libmysofa/MIT_KEMAR_normal_pinna.sofa"
DEFAULT_OUT = Path(__file__).resolve().parent / "kemar_hrtf.npz"
SAMPLE_RATE = 48000

ATTRIBUTION = {
    "title": "MIT KEMAR HRTF measurements, normal pinna",
    "authors": "Bill Gardner and Keith Martin, MIT Media Lab",
    "citation": ("Gardner, W. G., and Martin, K. D. (1995). HRTF measurements of a KEMAR. "
                 "Journal of the Acoustical Society of America 97(6), 3907-3908. "
                 "Also: Gardner and Martin (1994), HRTF Measurements of a KEMAR Dummy-Head "
                 "Microphone, MIT Media Lab Perceptual Computing Technical Report #280."),
    "license": ("Copyright 1994 MIT Media Laboratory; provided free with no restrictions "
                "on use, provided the authors (Gardner and Martin) are cited when the data "
                "are used in research or commercial applications."),
    "converted_by": "stagevox dsp/data/make_kemar_hrtf.py",
}


def convert(sofa=DEFAULT_SOFA, out=DEFAULT_OUT):
    """Convert the SOFA file ``sofa`` and write the ``.npz`` ``out``; returns the Hrtf."""
    hrtf = Hrtf.from_sofa(sofa, SAMPLE_RATE, taps=DEFAULT_TAPS_48K, equalize=True)
    # the SOFA file's own attribute, kept beside the MIT Media Lab terms
    hrtf.metadata["sofa_license_attribute"] = hrtf.metadata.pop("license", "")
    hrtf.metadata.update(ATTRIBUTION)
    hrtf.save(out)
    return hrtf


def main(argv=None):
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) > 2 or any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    sofa = args[0] if args else DEFAULT_SOFA
    out = Path(args[1]) if len(args) > 1 else DEFAULT_OUT
    hrtf = convert(sofa, out)
    print(f"wrote {out}: {hrtf.azimuth_deg.size} directions, {hrtf.taps} taps at "
          f"{hrtf.sample_rate} Hz, {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
