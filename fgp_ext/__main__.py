"""``python -m fgp_ext ...`` runs the ``fgp`` command line (see :mod:`fgp_ext.cli`)."""
import sys

from fgp_ext.cli import main

sys.exit(main())
