"""``python -m avaturn_desktop``."""

import sys

from avaturn_desktop.cli import main

sys.exit(main())
