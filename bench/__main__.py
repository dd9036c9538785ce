"""``python -m bench SUITE``: see ``bench.suite``."""

import sys

from .suite import main

sys.exit(main())
