"""`python -m micml`: the `micml` command, for environments without the console script on PATH."""

import sys

from micml.cli import main

sys.exit(main())
