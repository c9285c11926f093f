"""``python -m router_backends`` = ``router-backend``."""

import sys

from router_backends.cli import main

sys.exit(main())
