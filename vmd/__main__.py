"""``python -m vmd``: the daemon."""

import sys

from vmd.cli import main

sys.exit(main())
