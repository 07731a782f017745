"""``python -m avaturn_desktop.simulator``: the simulator in the foreground."""

import sys

from avaturn_desktop.simulator.cli import main

sys.exit(main())
