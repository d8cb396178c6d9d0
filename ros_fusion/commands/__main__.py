"""`python -m ros_fusion.commands simulate|replay|record|info ...` without the full CLI."""

import sys

from . import main

sys.exit(main())
