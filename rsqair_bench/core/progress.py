"""When to draw progress bars: only for a person at a terminal, never under CI or into a log file."""

from __future__ import annotations

import os
import sys


def progress_enabled(requested: bool = True) -> bool:
    return bool(requested) and sys.stderr.isatty() and not os.environ.get("CI")
