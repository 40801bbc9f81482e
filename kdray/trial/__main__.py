"""``python -m kdray.trial``: see ``kdray/trial/cli.py``."""

import sys

from kdray.trial.cli import main

sys.exit(main())
