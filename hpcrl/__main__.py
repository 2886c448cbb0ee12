"""``python -m hpcrl``: the hpcrl command."""

from __future__ import annotations

import sys

from hpcrl.cli import main

sys.exit(main())
