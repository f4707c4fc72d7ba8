"""`python -m diffusionlab.cli ...`."""

import sys

from . import main

sys.exit(main())
