"""``python -m circuits`` runs the command line (see :mod:`circuits.cli`)."""

import sys

from circuits.cli import main

sys.exit(main())
