"""`python -m localaug.cli`: the same as the `localaug` command."""

import sys

from . import main

sys.exit(main())
