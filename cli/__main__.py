"""``python -m stagevox.cli``: the ``stagevox`` command."""

import sys

from . import main

sys.exit(main())
