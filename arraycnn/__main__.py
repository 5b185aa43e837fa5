"""``python -m arraycnn`` runs the ``arraycnn`` command."""

import sys

from .cli import main

sys.exit(main())
